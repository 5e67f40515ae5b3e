"""The Robust Weight Signatures pipeline (Cai, Zhang & Wang, ICML 2023) as resumable stages.

    θ_pre (pretrained on the source task, or given)
      → θ_clean = FT(θ_pre, clean A)      θ_c = FT(θ_pre, A corrupted by c at severity s)  per c
      → RWS_c = proj⊥(θ_c − θ_pre) w.r.t. θ_clean − θ_pre on the k shallowest conv layers
      → signature files (float32 and b-bit), patched / composed / removed models
      → transfer to θ_pre fine-tuned on B, and to a θ_clean that kept training
      → table (storage MB, TA, RA per corruption and method) and the paper's analyses

Every model and every result file is a stage in the workdir, skipped when it exists.
Selections (best epochs) use held-out validation splits; the test split is only reported.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from rwsjax import corruptions as cc
from rwsjax import distributed
from rwsjax.data.sources import DATASETS
from rwsjax.data.splits import load_splits
from rwsjax.report import rws_figures, tables
from rwsjax.report.writers import read_json, write_json, write_text
from rwsjax.rws import analysis, patching, signatures
from rwsjax.train import sharding
from rwsjax.weights.modules import call_order
from rwsjax.workflows import ood, zoo
from rwsjax.workflows.common import build_model, init_variables, load_model, summary_writer


BN_MODES = ("target", "reestimate_clean", "reestimate_corrupted")


class Task:
    """One dataset's splits, model and corrupted sets (A = where signatures come from, B = transfer target)."""

    def __init__(self, config, workdir, dataset, *, val_size, train_size, test_size, mesh, corruption_names):
        self.dataset, self.config, self.mesh = dataset, config, mesh
        self.splits = load_splits(dataset, data_dir=config.data.data_dir, val_size=val_size, train_size=train_size,
                                  test_size=test_size, seed=config.seed, lazy=jax.process_count() > 1)
        self.model, self.example = build_model(config, dataset)
        self.corrupted_dir = config.corruptions.data_dir or os.path.join(workdir, "corrupted_tfds")
        self.names = corruption_names
        self.severity = int(config.corruptions.severity)
        self._corrupted = {}

    def corrupted(self, name: str, split: str):
        """``split`` ∈ train/val/test of this task corrupted by ``name`` at the configured severity."""
        key = (name, split)
        if key not in self._corrupted:
            source = "test" if split == "test" else "train"
            if source == "train":  # the train and val images both come from the TFDS train split
                idx = np.sort(np.concatenate([self.splits["train"].source_indices,
                                              self.splits["val"].source_indices]))
            else:
                idx = self.splits["test"].source_indices
            with distributed.main_first(f"corrupt {self.dataset} {name} {source}"):
                cc.generate(self.dataset, name, self.severity, out_data_dir=self.corrupted_dir, split=source,
                            indices=idx, seed=self.config.seed, source_data_dir=self.config.data.data_dir,
                            progress=False)
            self._corrupted[key] = cc.load_corrupted(self.dataset, name, self.severity, data_dir=self.corrupted_dir,
                                                     split=source, indices=self.splits[split].source_indices,
                                                     progress=False)
        return self._corrupted[key]

    def accuracy(self, variables, split, desc) -> float:
        return zoo.clean_accuracy(self.model, self.mesh, variables, split, self.config.eval.batch_size, desc)


def run(config, workdir: str) -> dict:
    """Run (or resume) the RWS pipeline in ``workdir``; returns the results dict."""
    t0 = time.time()
    c = config
    names = list(ood.corruption_list(c.corruptions.names, "corruptions.names"))
    mesh = sharding.make_mesh()
    writer = summary_writer(config, workdir)
    a = Task(c, workdir, c.data.name, val_size=c.data.val_size, train_size=c.data.train_size,
             test_size=c.data.test_size, mesh=mesh, corruption_names=names)
    b = Task(c, workdir, c.transfer.dataset, val_size=c.transfer.val_size, train_size=c.transfer.train_size,
             test_size=c.transfer.test_size, mesh=mesh, corruption_names=names)
    print(f"[rws] A={a.dataset} train {len(a.splits['train'])} val {len(a.splits['val'])} test "
          f"{len(a.splits['test'])}; B={b.dataset} train {len(b.splits['train'])}; corruptions {names} "
          f"at severity {a.severity}")

    def train(task, name, init, train_split, val_split, cfg, seed):
        return zoo.train(name, workdir=workdir, model=task.model, mesh=mesh, init=init, train_split=train_split,
                         val_split=val_split, cfg=cfg, seed=seed, eval_batch_size=c.eval.batch_size, writer=writer)

    # θ_pre: pretrained on the source task (its own head), or a given checkpoint.
    pre_model, pre_example = build_model(c, c.pre.dataset)
    pre_init = init_variables(pre_model, pre_example, c.seed)
    if c.init_checkpoint:
        theta_pre = load_model(c.init_checkpoint, pre_init, pre_model, partial=True)
    else:
        pre = Task(c, workdir, c.pre.dataset, val_size=c.pre.val_size, train_size=c.pre.train_size, test_size=100,
                   mesh=mesh, corruption_names=names)
        theta_pre = train(pre, "pre", pre_init, pre.splits["train"], pre.splits["val"], c.pre, c.seed)

    # Start points on A and B: θ_pre with a fresh head where the class count differs (same seed for all models).
    start_a, reinit_a = zoo.transplant(theta_pre, init_variables(a.model, a.example, c.seed + 1))
    start_b, reinit_b = zoo.transplant(theta_pre, init_variables(b.model, b.example, c.seed + 2))
    print(f"[rws] θ_pre → {a.dataset}: re-initialized {reinit_a or 'nothing'}; → {b.dataset}: "
          f"{reinit_b or 'nothing'}")

    ft = c.finetune
    clean_a = train(a, f"{a.dataset}_clean", start_a, a.splits["train"], a.splits["val"], ft, c.seed + 10)
    robust_a = {n: train(a, f"{a.dataset}_{n}", start_a, a.corrupted(n, "train"), a.corrupted(n, "val"), ft,
                         c.seed + 10) for n in names}
    clean_b = train(b, f"{b.dataset}_clean", start_b, b.splits["train"], b.splits["val"], ft, c.seed + 20)
    robust_b = {}
    if c.transfer.robust_models:
        robust_b = {n: train(b, f"{b.dataset}_{n}", start_b, b.corrupted(n, "train"), b.corrupted(n, "val"), ft,
                             c.seed + 20) for n in names}
    # θ_clean that kept training after the signatures were taken.
    cont_cfg = ft.copy_and_resolve_references()
    cont_cfg.epochs, cont_cfg.decay_epochs = c.transfer.continued_epochs, ()
    cont_cfg.learning_rate = ft.learning_rate * (ft.decay_factor ** len(ft.decay_epochs))
    continued_a = train(a, f"{a.dataset}_clean_continued", clean_a, a.splits["train"], a.splits["val"], cont_cfg,
                        c.seed + 30)

    order = call_order(a.model, clean_a, a.example)
    convs = signatures.conv_modules(clean_a["params"], order)
    results = evaluate_signatures(c, workdir, a, b, theta_pre, start_a, start_b, clean_a, robust_a, clean_b,
                                  robust_b, continued_a, convs)
    results["timings_s"] = {"total": round(time.time() - t0, 1)}
    write_json(os.path.join(workdir, "results.json"), results)
    if writer is not None:
        writer.close()
    return results


def _mb(path: str) -> float:
    return os.path.getsize(path) / 1e6


def evaluate_signatures(c, workdir, a, b, theta_pre, start_a, start_b, clean_a, robust_a, clean_b, robust_b,
                        continued_a, convs) -> dict:
    """Extract, store, patch, compose, remove, transfer and analyse; writes the table and figures."""
    path = os.path.join(workdir, "results.json")
    if os.path.exists(path):
        print(f"[rws] done: loading {path}")
        return read_json(path)
    names, sig_cfg = a.names, c.signature
    sig_dir = os.path.join(workdir, "signatures")
    os.makedirs(sig_dir, exist_ok=True)
    modules = signatures.select_shallowest(convs, sig_cfg.k)
    print(f"[rws] signature layers (k={sig_cfg.k} shallowest conv layers): {modules}")

    def make(robust, clean, pre, task, layers, bits, corruption):
        tensors = signatures.extract(robust["params"], pre["params"], clean["params"], modules=layers)
        return signatures.make_signature(
            tensors, architecture=c.model.name, width_multiplier=c.model.width_multiplier,
            num_classes=DATASETS[task.dataset].num_classes, base=pre["params"], clean=clean["params"], bits=bits, corruption=corruption,
            severity=a.severity, dataset=task.dataset)

    def stored(sig, tag):
        """Write a signature file, read it back (validated), return (loaded signature, size in MB)."""
        file = os.path.join(sig_dir, f"{a.dataset}_{sig.corruption}_{tag}.safetensors")
        distributed.on_main(f"signature {file}", signatures.save_signature, file, sig)
        return signatures.load_signature(file), _mb(file)

    if sig_cfg.bn not in BN_MODES:
        raise ValueError(f"unknown signature.bn {sig_cfg.bn!r}; valid: {BN_MODES}")

    def finalize(variables, task, corruptions):
        """BN handling (reported with the results): keep the target's running statistics, or re-estimate
        them on the task's clean training images, or on its training images corrupted by ``corruptions``."""
        if sig_cfg.bn == "target":
            return variables
        if sig_cfg.bn == "reestimate_clean" or not corruptions:
            images = task.splits["train"].images
        else:
            images = np.concatenate([task.corrupted(n, "train").images for n in corruptions])
            images = images[np.random.default_rng(c.seed).permutation(len(images))[: len(task.splits["train"])]]
        bs = c.eval.batch_size
        return patching.reestimate_batch_stats(task.model, variables,
                                               (images[i:i + bs] for i in range(0, len(images), bs)))

    acc_a = lambda v, split, d: a.accuracy(v, split, d)
    test_a = a.splits["test"]
    full_mb = analysis.full_model_bytes(clean_a["params"]) / 1e6
    sigs, qsigs, size, qsize = {}, {}, {}, {}
    for n in names:
        sigs[n], size[n] = stored(make(robust_a[n], clean_a, start_a, a, modules, None, n), f"k{sig_cfg.k}_fp32")
        qsigs[n], qsize[n] = stored(make(robust_a[n], clean_a, start_a, a, modules, sig_cfg.bits, n),
                                    f"k{sig_cfg.k}_{sig_cfg.bits}bit")
    lam = float(sig_cfg.lam)
    def patched(target, entries, task=a, mode="sum"):
        return finalize(patching.patch(target, entries, mode=mode), task, [sig.corruption for sig, _ in entries])

    composed = patched(clean_a, [(sigs[n], float(sig_cfg.compose_lam)) for n in names], mode=sig_cfg.compose)
    ta_clean, ta_composed = acc_a(clean_a, test_a, "θ_clean test"), acc_a(composed, test_a, "composed test")

    rows, removal_exact = [], True
    for n in names:
        test_c = a.corrupted(n, "test")
        one = patched(clean_a, [(sigs[n], lam)])
        q = patched(clean_a, [(qsigs[n], lam)])
        rows += [
            {"corruption": n, "method": "clean model", "storage_mb": full_mb, "ta": ta_clean,
             "ra": acc_a(clean_a, test_c, f"θ_clean {n}")},
            {"corruption": n, "method": "robust model (oracle)", "storage_mb": full_mb,
             "ta": acc_a(robust_a[n], test_a, f"θ_{n} test"), "ra": acc_a(robust_a[n], test_c, f"θ_{n} {n}")},
            {"corruption": n, "method": f"clean + RWS (fp32, k={sig_cfg.k}, λ={lam:g})", "storage_mb": size[n],
             "ta": acc_a(one, test_a, f"+RWS_{n} test"), "ra": acc_a(one, test_c, f"+RWS_{n} {n}")},
            {"corruption": n, "method": f"clean + RWS ({sig_cfg.bits}-bit)", "storage_mb": qsize[n],
             "ta": acc_a(q, test_a, f"+qRWS_{n} test"), "ra": acc_a(q, test_c, f"+qRWS_{n} {n}")},
            {"corruption": n, "method": f"clean + composed RWS ({sig_cfg.compose}, {len(names)} signatures)",
             "storage_mb": sum(size.values()), "ta": ta_composed, "ra": acc_a(composed, test_c, f"composed {n}")},
        ]
        if sig_cfg.bn != "target":  # the BN effect alone, without any weight patch
            bn_only = finalize(clean_a, a, [n])
            rows.append({"corruption": n, "method": f"clean model, BN {sig_cfg.bn} (no weight patch)",
                         "storage_mb": None, "ta": acc_a(bn_only, test_a, "BN-only test"),
                         "ra": acc_a(bn_only, test_c, f"BN-only {n}")})
        back = patching.Patched(clean_a).add(sigs[n], lam).remove(0).variables
        removal_exact &= all(np.asarray(x).tobytes() == np.asarray(y).tobytes()
                             for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(clean_a)))

    # Sweeps: λ, k, bits.
    lam_sweep, k_sweep, bits_sweep = {}, {}, {}
    for n in names:
        test_c = a.corrupted(n, "test")
        lam_sweep[n] = []
        for l in c.sweeps.lambdas:
            v = patched(clean_a, [(sigs[n], float(l))])
            lam_sweep[n].append({"lam": float(l), "ta": acc_a(v, test_a, f"λ={l} test"),
                                 "ra": acc_a(v, test_c, f"λ={l} {n}")})
        k_sweep[n] = []
        for k in [k for k in c.sweeps.ks if k <= len(convs)]:
            s_k, mb = stored(make(robust_a[n], clean_a, start_a, a, signatures.select_shallowest(convs, k), None, n),
                             f"k{k}_fp32")
            v = patched(clean_a, [(s_k, lam)])
            k_sweep[n].append({"k": k, "bytes": mb * 1e6, "ta": acc_a(v, test_a, f"k={k} test"),
                               "ra": acc_a(v, test_c, f"k={k} {n}")})
        bits_sweep[n] = []
        for bits in c.sweeps.bits:
            s_b, mb = stored(make(robust_a[n], clean_a, start_a, a, modules, bits, n), f"k{sig_cfg.k}_{bits}bit")
            v = patched(clean_a, [(s_b, lam)])
            bits_sweep[n].append({"bits": bits, "bytes": mb * 1e6, "ra": acc_a(v, test_c, f"{bits}b {n}")})
        bits_sweep[n].append({"bits": 32, "bytes": size[n] * 1e6,
                              "ra": next(r["ra"] for r in rows if r["corruption"] == n and "fp32" in r["method"])})

    # Transfer: A's signatures on B's clean model, and on θ_clean that kept training.
    transfer = []
    for n in names:
        test_bc, test_ac = b.corrupted(n, "test"), a.corrupted(n, "test")
        patching.check_compatible(sigs[n], clean_b)
        on_b = patched(clean_b, [(sigs[n], lam)], task=b)
        on_cont = patched(continued_a, [(sigs[n], lam)])
        transfer.append({
            "corruption": n,
            f"{b.dataset}_clean_ta": b.accuracy(clean_b, b.splits["test"], "B test"),
            f"{b.dataset}_clean_ra": b.accuracy(clean_b, test_bc, f"B {n}"),
            f"{b.dataset}_patched_ta": b.accuracy(on_b, b.splits["test"], "B+RWS test"),
            f"{b.dataset}_patched_ra": b.accuracy(on_b, test_bc, f"B+RWS {n}"),
            f"{b.dataset}_robust_ra": b.accuracy(robust_b[n], test_bc, f"B θ_{n}") if n in robust_b else None,
            "continued_ta": acc_a(continued_a, test_a, "cont test"), "continued_ra": acc_a(continued_a, test_ac, "cont"),
            "continued_patched_ta": acc_a(on_cont, test_a, "cont+RWS test"),
            "continued_patched_ra": acc_a(on_cont, test_ac, f"cont+RWS {n}"),
        })

    # Analyses (observations 1–3) over all conv layers.
    profile = {n: analysis.relative_difference(robust_a[n]["params"], clean_a["params"], convs) for n in names}
    all_a = {n: signatures.extract(robust_a[n]["params"], start_a["params"], clean_a["params"], modules=convs)
             for n in names}
    labels, cos_a = analysis.cosine_similarity_matrix(all_a)
    cross = None
    if robust_b:
        all_b = {n: signatures.extract(robust_b[n]["params"], start_b["params"], clean_b["params"], modules=convs)
                 for n in names}
        _, joint = analysis.cosine_similarity_matrix({**{f"A:{n}": all_a[n] for n in names},
                                                      **{f"B:{n}": all_b[n] for n in names}})
        cross = joint[: len(names), len(names):]
    rws_figures.layer_profile(profile, convs, os.path.join(workdir, "layer_profile.png"),
                              f"Observation 1: robust − clean per layer ({c.model.name}, {a.dataset})")
    rws_figures.similarity_matrix(labels, labels, cos_a, os.path.join(workdir, "signature_similarity.png"),
                                  f"Observation 2: cosine similarity of RWS ({a.dataset})")
    if cross is not None:
        rws_figures.similarity_matrix([f"{a.dataset}:{n}" for n in names], [f"{b.dataset}:{n}" for n in names],
                                      cross, os.path.join(workdir, "cross_dataset_similarity.png"),
                                      "Observation 3: RWS similarity across datasets")
    rws_figures.lambda_sweep(lam_sweep, os.path.join(workdir, "lambda_sweep.png"))
    rws_figures.k_and_bits(k_sweep, bits_sweep, os.path.join(workdir, "k_and_bits.png"))

    results = {
        "model": c.model.name, "width_multiplier": c.model.width_multiplier, "dataset": a.dataset,
        "transfer_dataset": b.dataset, "corruptions": names, "severity": a.severity, "signature_layers": modules,
        "bn": sig_cfg.bn, "full_model_mb": full_mb, "table": rows, "removal_exact": bool(removal_exact),
        "times_smaller": {n: {"fp32": full_mb / size[n], f"{sig_cfg.bits}bit": full_mb / qsize[n]} for n in names},
        "lambda_sweep": lam_sweep, "k_sweep": k_sweep, "bits_sweep": bits_sweep, "transfer": transfer,
        "layer_profile": profile, "cosine": {"labels": labels, "matrix": cos_a.tolist()},
        "cross_dataset_cosine": None if cross is None else cross.tolist(),
    }
    write_report(workdir, c, results)
    write_json(path, results)
    return results


def write_report(workdir, c, r) -> None:
    ratios = "Storage ratio (full model / signature file): " + "; ".join(
        f"{n}: fp32 {v['fp32']:.1f}×, " + ", ".join(f"{k} {x:.1f}×" for k, x in v.items() if k != "fp32")
        for n, v in r["times_smaller"].items()) + "."
    md = ["# Robust Weight Signatures report", "",
          f"{r['model']} (width ×{r['width_multiplier']}) on {r['dataset']}, preset `{c.preset}`; robust models "
          f"fine-tuned on training images corrupted at severity {r['severity']} (our {r['dataset']}-C generator, "
          f"{DATASETS[r['dataset']].image_shape[0]}×{DATASETS[r['dataset']].image_shape[0]} constants); TA = clean "
          f"test accuracy, RA = test accuracy under the same corruption at severity {r['severity']}; storage = "
          f"bytes on disk (full model = float32 weights, {r['full_model_mb']:.3f} MB). BN: `{r['bn']}`. "
          f"Signature layers: {', '.join(r['signature_layers'])}.", "",
          tables.rws_table(r["table"]), "",
          ratios, "",
          f"Removing a patch returns θ_clean bit for bit: {r['removal_exact']}.", "",
          "## Transfer", "", tables.markdown_table(
              ["corruption"] + [k for k in r["transfer"][0] if k != "corruption"],
              [[t["corruption"]] + [v for k, v in t.items() if k != "corruption"] for t in r["transfer"]]), "",
          "## Figures", "", "![layer profile](layer_profile.png)", "![similarity](signature_similarity.png)"]
    if r["cross_dataset_cosine"] is not None:
        md.append("![cross-dataset](cross_dataset_similarity.png)")
    md += ["![lambda](lambda_sweep.png)", "![k and bits](k_and_bits.png)", ""]
    write_text(os.path.join(workdir, "report.md"), "\n".join(md))
    print(tables.rws_table(r["table"]))
    print(ratios)
