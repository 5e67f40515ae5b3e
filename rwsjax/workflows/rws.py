"""The Robust Weight Signatures pipeline (Cai, Zhang & Wang, ICML 2023) as resumable stages.

    pre          θ_pre (pretrained on the source task, or ``init_checkpoint``)
    A_clean      θ_clean = FT(θ_pre, clean A);   A_<c>: θ_c = FT(θ_pre, A corrupted by c at severity s), per c
    B_clean, B_<c>   the same on the transfer dataset B;   A_clean_continued: θ_clean trained further
    signatures   RWS_c = proj⊥(θ_c − θ_pre) w.r.t. θ_clean − θ_pre on the k shallowest conv layers,
                 stored as float32 and b-bit signature files
    table        clean, oracle, patched, quantized, composed and BN-only rows (storage, TA, RA); removal exactness
    sweeps       λ, k and bits sweeps
    transfer     A's signatures on B's clean model and on the θ_clean that kept training
    analyses     the paper's observations 1–3 (layer profile, cosine similarity, across datasets)
    report       results.json and report.md

(``A``/``B`` are the dataset names, e.g. ``cifar10_fog``.)  The stages run on
:mod:`rwsjax.workflows.stages`: a done stage is skipped, a changed config for it is refused,
``--config.redo=signatures`` recomputes the signatures and every stage after them without retraining the
zoo.  Selections (best epochs) use held-out validation splits; the test split is only reported.
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

from rwsjax import protocols
from rwsjax.data.sources import DATASETS
from rwsjax.report import rws_figures, tables
from rwsjax.report.intervals import RESAMPLES, paired_bootstrap
from rwsjax.report.writers import read_json, write_json, write_text
from rwsjax.rws import analysis, patching, signatures
from rwsjax.train import checkpoint, sharding
from rwsjax.weights.modules import call_order
from rwsjax.workflows import ood, stages as stage_runner, zoo
from rwsjax.workflows.common import Task, describe_autoattack, json_artifact, load_model
from rwsjax.workflows.stages import Stage, redo_problems

BN_MODES = ("target", "reestimate_clean", "reestimate_corrupted")


class Context:
    """The RWS run: tasks A (signatures), B (transfer) and the pretraining task, on one mesh."""

    def __init__(self, config, workdir):
        c = self.config = config
        self.workdir = workdir
        self.mesh = sharding.make_mesh()
        self.names = list(ood.corruption_list(c.corruptions.names, "corruptions.names"))
        self.severity = int(c.corruptions.severity)
        self.a = Task(c, workdir, c.data.name, sizes=(c.data.val_size, c.data.train_size, c.data.test_size),
                      mesh=self.mesh, seed=c.seed + 1)
        self.b = Task(c, workdir, c.transfer.dataset, mesh=self.mesh, seed=c.seed + 2,
                      sizes=(c.transfer.val_size, c.transfer.train_size, c.transfer.test_size))
        self.pre = Task(c, workdir, c.pre.dataset, sizes=(c.pre.val_size, c.pre.train_size, 100), mesh=self.mesh)
        self.b.__dict__["writer"] = self.pre.__dict__["writer"] = self.a.writer  # one TensorBoard log

    def close(self) -> None:
        """Close the run's TensorBoard writer (shared by the three tasks)."""
        self.a.close()

    def corrupted(self, task: Task, name: str, split: str):
        return task.corrupted(name, split, self.severity)

    @functools.cached_property
    def convs(self) -> list[str]:
        """Every conv kernel of A's model, shallowest first (the paper's layer order)."""
        return signatures.conv_modules(self.a.init_variables["params"],
                                       call_order(self.a.model, self.a.init_variables, self.a.example))

    @functools.cached_property
    def units(self) -> int:
        """How many units ``signature.k`` can count: conv layers (``layers=convs``) or blocks (``blocks``)."""
        if self.config.signature.layers == "blocks":
            return signatures.count_blocks(self.convs)
        return len(self.convs)

    def layers(self, k: int) -> list[str]:
        """The signature's conv layers for ``k`` (``signature.layers``; shortcuts left out when transplanted)."""
        sc = self.config.signature
        if sc.layers == "blocks":
            return signatures.select_blocks(self.convs, k, shortcuts=not sc.transplant)
        return signatures.select_shallowest(self.convs, k)

    def finalize(self, variables, task: Task, corruptions, alpha: float = 1.0):
        """BN of a patched model (``signature.bn``): keep the target's running statistics, or re-estimate them
        on the task's clean training images, or on its training images corrupted by ``corruptions`` (batches
        weighted by ``signature.bn_weighting``; with ``signature.bn_blend`` and ``alpha`` < 1 mixed with the
        model's own as (1 − alpha)·own + alpha·re-estimated, the official code's rule)."""
        c = self.config
        if c.signature.bn == "target":
            return variables
        if c.signature.bn == "reestimate_clean" or not corruptions:
            images = task.splits["train"].images
        else:
            images = np.concatenate([self.corrupted(task, n, "train").images for n in corruptions])
            images = images[np.random.default_rng(c.seed).permutation(len(images))[: len(task.splits["train"])]]
        bs = c.eval.batch_size
        out = patching.reestimate_batch_stats(task.model, variables,
                                              (images[i:i + bs] for i in range(0, len(images), bs)),
                                              weighting=c.signature.bn_weighting)
        if c.signature.bn_blend and alpha < 1 and out is not variables:
            out = patching.blend_batch_stats(out, variables, alpha)
        return out

    def patched(self, target, entries, task=None, mode="sum", robust=(), alpha=None):
        """``target`` + Σ λ·RWS (``entries`` = [(signature, λ)]), then :meth:`finalize`.

        With ``signature.lambda_twice`` each λ (λ/C for ``mode="mean"``) is squared, as the official code
        applies it; with ``signature.transplant`` every BN and shortcut tensor is then the mean over
        ``robust`` (the patch's robust models θ_c).  ``alpha``: the patch's strength for ``bn_blend``
        (default: the single entry's λ, else 1).
        """
        task, sc = task or self.a, self.config.signature
        if alpha is None:
            alpha = entries[0][1] if len(entries) == 1 else 1.0
        if sc.transplant and not robust:
            raise ValueError("signature.transplant needs the patch's robust models")
        out = patching.patch(target, entries, mode=mode, lambda_twice=sc.lambda_twice,
                             transplant_from=robust if sc.transplant else ())
        return self.finalize(out, task, [s.corruption for s, _ in entries], alpha=float(alpha))

    def ta_ra(self, variables, n: str, desc: str, task=None) -> tuple[float, float]:
        """(clean test accuracy, test accuracy under corruption ``n``), %."""
        task = task or self.a
        return (task.accuracy(variables, task.splits["test"], f"{desc} test"),
                task.accuracy(variables, self.corrupted(task, n, "test"), f"{desc} {n}"))


def _path(s: Context, *parts) -> str:
    return os.path.join(s.workdir, *parts)


def start_point(task: Task, theta_pre: dict) -> dict:
    """θ_pre on ``task``'s model: every leaf whose path and shape fit; a fresh head where the classes differ."""
    return zoo.transplant(theta_pre, task.init_variables)[0]


def _pre(s: Context, r) -> dict:
    """θ_pre: ``init_checkpoint`` (its head may have any class count), or pretrained on ``pre.dataset``."""
    c, final = s.config, _path(s, "zoo", "pre", "final")
    if c.init_checkpoint:
        checkpoint.save_variables(final, load_model(c.init_checkpoint, s.pre.init_variables, s.pre.model,
                                                    partial=True), info=s.pre.info)
        return _load_zoo("pre", "pre")(s)
    return zoo.train("pre", task=s.pre, init=s.pre.init_variables, train_split=s.pre.splits["train"],
                     val_split=s.pre.splits["val"], cfg=c.pre, seed=c.seed)


def _load_zoo(name: str, task: str):
    return lambda s: jax.device_get(checkpoint.load_variables(_path(s, "zoo", name, "final"),
                                                              like=getattr(s, task).init_variables))


def _finetuned(name: str, task: str, corruption: str | None, seed: int):
    """θ_pre fine-tuned on ``task``'s clean (``corruption=None``) or corrupted training images."""
    def compute(s: Context, r):
        t = getattr(s, task)
        start = start_point(t, r["pre"])
        if corruption is None:
            train, val = t.splits["train"], t.splits["val"]
        else:
            train, val = s.corrupted(t, corruption, "train"), s.corrupted(t, corruption, "val")
        return zoo.train(name, task=t, init=start, train_split=train, val_split=val, cfg=s.config.finetune,
                         seed=s.config.seed + seed)
    return compute


def _continued(name: str, clean: str):
    def compute(s: Context, r):
        """θ_clean trained on for ``transfer.continued_epochs`` at the final learning rate."""
        ft = s.config.finetune
        cfg = ft.copy_and_resolve_references()
        cfg.epochs, cfg.decay_epochs = s.config.transfer.continued_epochs, ()
        cfg.learning_rate = ft.learning_rate * (ft.decay_factor ** len(ft.decay_epochs))
        return zoo.train(name, task=s.a, init=r[clean], train_split=s.a.splits["train"],
                         val_split=s.a.splits["val"], cfg=cfg, seed=s.config.seed + 30)
    return compute


def _make(s: Context, r, n: str, layers, bits):
    """RWS_n of dataset A on ``layers``, float32 (``bits=None``) or quantized."""
    c, a = s.config, s.config.data.name
    robust, clean, pre = r[f"{a}_{n}"], r[f"{a}_clean"], start_point(s.a, r["pre"])
    tensors = signatures.extract(robust["params"], pre["params"], clean["params"], modules=layers)
    return signatures.make_signature(
        tensors, architecture=c.model.name, width_multiplier=c.model.width_multiplier,
        num_classes=DATASETS[a].num_classes, base=pre["params"], clean=clean["params"], bits=bits, corruption=n,
        severity=s.severity, dataset=a)


def _store(file: str, sig):
    """Write a signature file and read it back (validated): ``(signature, size in MB)``."""
    from rwsjax import distributed
    distributed.on_main(f"signature {file}", signatures.save_signature, file, sig)
    return _read(file)


def _read(file: str):
    """A signature file read back (validated): ``(signature, size in MB)``."""
    return signatures.load_signature(file), os.path.getsize(file) / 1e6


def _signature_files(config) -> dict[str, tuple[str, str]]:
    """``{corruption: (float32 file, b-bit file)}`` relative to the workdir."""
    a, k, bits = config.data.name, config.signature.k, config.signature.bits
    return {n: (f"signatures/{a}_{n}_k{k}_fp32.safetensors", f"signatures/{a}_{n}_k{k}_{bits}bit.safetensors")
            for n in ood.corruption_list(config.corruptions.names, "corruptions.names")}


def _k_text(c) -> str:
    """``k=5 shallowest conv layers`` / ``k=7 units: the stem and 6 residual blocks``."""
    if c.signature.layers == "blocks":
        return f"k={c.signature.k} units: the stem and {c.signature.k - 1} residual blocks"
    return f"k={c.signature.k} shallowest conv layers"


def _robust(r, a: str, names) -> list:
    """The robust models θ_c of ``names`` on dataset ``a`` (for ``signature.transplant``)."""
    return [r[f"{a}_{n}"] for n in names]


def _signatures(s: Context, r) -> dict:
    """RWS of every corruption on the k shallowest conv layers, as float32 and b-bit files."""
    c = s.config
    modules = s.layers(c.signature.k)
    print(f"[rws] signature layers ({_k_text(c)}): {modules}")
    os.makedirs(_path(s, "signatures"), exist_ok=True)
    for n, (fp32, quantized) in _signature_files(c).items():
        _store(_path(s, fp32), _make(s, r, n, modules, None))
        _store(_path(s, quantized), _make(s, r, n, modules, c.signature.bits))
    write_json(_path(s, "signatures.json"), {"modules": modules, "files": _signature_files(c)})
    return _load_signatures(s)


def _load_signatures(s: Context) -> dict:
    """``{"modules", "fp32": {n: sig}, "quantized": {n: sig}, "size": {n: MB}, "qsize": {n: MB}}``."""
    out = {"modules": read_json(_path(s, "signatures.json"))["modules"], "fp32": {}, "quantized": {}, "size": {},
           "qsize": {}}
    for n, (fp32, quantized) in _signature_files(s.config).items():
        out["fp32"][n], out["size"][n] = _read(_path(s, fp32))
        out["quantized"][n], out["qsize"][n] = _read(_path(s, quantized))
    return out


def _composed(s: Context, r):
    """θ_clean + every float32 signature composed (``signature.compose``, λ = ``signature.compose_lam``)."""
    c, a, sig = s.config, s.config.data.name, r["signatures"]
    lam = float(c.signature.compose_lam)
    return s.patched(r[f"{a}_clean"], [(sig["fp32"][n], lam) for n in s.names], mode=c.signature.compose,
                     robust=_robust(r, a, s.names), alpha=lam)


def _autoattack(s: Context, r) -> dict:
    """AutoAttack (``eval.autoattack``) of θ_clean and of θ_clean + composed RWS on the clean test split →
    autoattack.json (``{}`` when ``eval.autoattack=none``); adversarial examples in ``autoattack_{clean,
    composed}.npz``."""
    out = {}
    if s.config.eval.autoattack != "none":
        out = {"clean model": s.a.autoattack(r[f"{s.config.data.name}_clean"], "clean"),
               "clean + composed RWS": s.a.autoattack(_composed(s, r), "composed")}
    write_json(_path(s, "autoattack.json"), out)
    return out


def _table(s: Context, r) -> dict:
    """Per corruption: clean, oracle, +RWS (float32, b-bit), composed and (BN re-estimated) BN-only rows."""
    c, a, sig = s.config, s.config.data.name, r["signatures"]
    clean = r[f"{a}_clean"]
    lam, k, bits = float(c.signature.lam), c.signature.k, c.signature.bits
    full_mb = analysis.full_model_bytes(clean["params"]) / 1e6
    composed = _composed(s, r)
    # Per test image correct or not, so every change from the clean model gets its paired bootstrap interval.
    test = s.a.splits["test"]
    ta_clean = s.a.correct(clean, test, "θ_clean test")
    ta_composed = s.a.correct(composed, test, "composed test")
    rows, removal_exact = [], True
    for n in s.names:
        # (method, storage MB, variables, TA when already measured)
        methods = [("clean model", full_mb, clean, ta_clean),
                   ("robust model (oracle)", full_mb, r[f"{a}_{n}"], None),
                   (f"clean + RWS (fp32, k={k}{' blocks' if c.signature.layers == 'blocks' else ''}, λ={lam:g})",
                    sig["size"][n], s.patched(clean, [(sig["fp32"][n], lam)], robust=_robust(r, a, [n])), None),
                   (f"clean + RWS ({bits}-bit)", sig["qsize"][n],
                    s.patched(clean, [(sig["quantized"][n], lam)], robust=_robust(r, a, [n])), None),
                   (f"clean + composed RWS ({c.signature.compose}, {len(s.names)} signatures)",
                    sum(sig["size"].values()), composed, ta_composed)]
        if c.signature.bn != "target":  # the BN effect alone, without any weight patch
            methods.append((f"clean model, BN {c.signature.bn} (no weight patch)", None, s.finalize(clean, s.a, [n]),
                            None))
        corrupted_test = s.corrupted(s.a, n, "test")
        ra_clean = s.a.correct(clean, corrupted_test, f"clean model {n}")  # the reference of every ΔRA
        for method, mb, v, ta in methods:
            if ta is None:
                ta = s.a.correct(v, test, f"{method} test")
            ra = ra_clean if v is clean else s.a.correct(v, corrupted_test, f"{method} {n}")
            pct = lambda c: 100.0 * int(c.sum()) / c.size  # noqa: E731 — as evaluate(): 100·count/n
            row = {"corruption": n, "method": method, "storage_mb": mb, "ta": pct(ta), "ra": pct(ra)}
            if v is not clean:
                row.update(ta_delta=paired_bootstrap(ta_clean, ta, seed=c.seed),
                           ra_delta=paired_bootstrap(ra_clean, ra, seed=c.seed))
            rows.append(row)
        back = patching.Patched(clean).add(sig["fp32"][n], lam).remove(0).variables
        removal_exact &= all(np.asarray(x).tobytes() == np.asarray(y).tobytes()
                             for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(clean)))
    out = {"rows": rows, "removal_exact": bool(removal_exact), "full_model_mb": full_mb}
    write_json(_path(s, "table.json"), out)
    return out


def _sweeps(s: Context, r) -> dict:
    """RA/TA against λ, against k (float32 signatures of the k shallowest layers) and against bits."""
    c, a, sig = s.config, s.config.data.name, r["signatures"]
    clean, lam = r[f"{a}_clean"], float(c.signature.lam)
    os.makedirs(_path(s, "signatures", "sweeps"), exist_ok=True)
    lam_sweep, k_sweep, bits_sweep = {}, {}, {}
    for n in s.names:
        theta_c = _robust(r, a, [n])
        lam_sweep[n] = []
        for l in c.sweeps.lambdas:
            ta, ra = s.ta_ra(s.patched(clean, [(sig["fp32"][n], float(l))], robust=theta_c), n, f"λ={l}")
            lam_sweep[n].append({"lam": float(l), "ta": ta, "ra": ra})
        k_sweep[n] = []
        for k in [k for k in c.sweeps.ks if k <= s.units]:
            s_k, mb = _store(_path(s, "signatures", "sweeps", f"{a}_{n}_k{k}_fp32.safetensors"),
                             _make(s, r, n, s.layers(k), None))
            ta, ra = s.ta_ra(s.patched(clean, [(s_k, lam)], robust=theta_c), n, f"k={k}")
            k_sweep[n].append({"k": k, "bytes": mb * 1e6, "ta": ta, "ra": ra})
        bits_sweep[n] = []
        for bits in c.sweeps.bits:
            s_b, mb = _store(_path(s, "signatures", "sweeps", f"{a}_{n}_k{c.signature.k}_{bits}bit.safetensors"),
                             _make(s, r, n, sig["modules"], bits))
            v = s.patched(clean, [(s_b, lam)], robust=theta_c)
            bits_sweep[n].append({"bits": bits, "bytes": mb * 1e6,
                                  "ra": s.a.accuracy(v, s.corrupted(s.a, n, "test"), f"{bits}b {n}")})
        fp32 = s.patched(clean, [(sig["fp32"][n], lam)], robust=theta_c)
        bits_sweep[n].append({"bits": 32, "bytes": sig["size"][n] * 1e6,
                              "ra": s.a.accuracy(fp32, s.corrupted(s.a, n, "test"), f"fp32 {n}")})
    rws_figures.lambda_sweep(lam_sweep, _path(s, "lambda_sweep.png"))
    rws_figures.k_and_bits(k_sweep, bits_sweep, _path(s, "k_and_bits.png"))
    out = {"lambda_sweep": lam_sweep, "k_sweep": k_sweep, "bits_sweep": bits_sweep}
    write_json(_path(s, "sweeps.json"), out)
    return out


def _transfer(s: Context, r) -> list[dict]:
    """A's signatures on B's clean model (θ_pre fine-tuned on B) and on the θ_clean that kept training."""
    c, a, b, sig = s.config, s.config.data.name, s.config.transfer.dataset, r["signatures"]
    lam, clean_b, continued = float(c.signature.lam), r[f"{b}_clean"], r[f"{a}_clean_continued"]
    rows = []
    for n in s.names:
        patching.check_compatible(sig["fp32"][n], clean_b)
        b_ta, b_ra = s.ta_ra(clean_b, n, "B", task=s.b)
        theta_c = _robust(r, a, [n])
        bp_ta, bp_ra = s.ta_ra(s.patched(clean_b, [(sig["fp32"][n], lam)], task=s.b, robust=theta_c), n, "B+RWS",
                               task=s.b)
        robust_b = r[f"{b}_{n}"] if c.transfer.robust_models else None
        cont_ta, cont_ra = s.ta_ra(continued, n, "cont")
        cp_ta, cp_ra = s.ta_ra(s.patched(continued, [(sig["fp32"][n], lam)], robust=theta_c), n, "cont+RWS")
        rows.append({
            "corruption": n, f"{b}_clean_ta": b_ta, f"{b}_clean_ra": b_ra, f"{b}_patched_ta": bp_ta,
            f"{b}_patched_ra": bp_ra,
            f"{b}_robust_ra": None if robust_b is None else
            s.b.accuracy(robust_b, s.corrupted(s.b, n, "test"), f"B θ_{n}"),
            "continued_ta": cont_ta, "continued_ra": cont_ra, "continued_patched_ta": cp_ta,
            "continued_patched_ra": cp_ra})
    write_json(_path(s, "transfer.json"), rows)
    return rows


def _analyses(s: Context, r) -> dict:
    """Observations 1–3 over all conv layers: robust − clean per layer, RWS cosine similarity, across datasets."""
    c, a, b = s.config, s.config.data.name, s.config.transfer.dataset
    clean_a, start_a = r[f"{a}_clean"], start_point(s.a, r["pre"])
    profile = {n: analysis.relative_difference(r[f"{a}_{n}"]["params"], clean_a["params"], s.convs) for n in s.names}
    all_a = {n: signatures.extract(r[f"{a}_{n}"]["params"], start_a["params"], clean_a["params"], modules=s.convs)
             for n in s.names}
    labels, cos_a = analysis.cosine_similarity_matrix(all_a)
    cross = None
    if c.transfer.robust_models:
        clean_b, start_b = r[f"{b}_clean"], start_point(s.b, r["pre"])
        all_b = {n: signatures.extract(r[f"{b}_{n}"]["params"], start_b["params"], clean_b["params"],
                                       modules=s.convs) for n in s.names}
        _, joint = analysis.cosine_similarity_matrix({**{f"A:{n}": all_a[n] for n in s.names},
                                                      **{f"B:{n}": all_b[n] for n in s.names}})
        cross = joint[: len(s.names), len(s.names):]
        rws_figures.similarity_matrix([f"{a}:{n}" for n in s.names], [f"{b}:{n}" for n in s.names], cross,
                                      _path(s, "cross_dataset_similarity.png"),
                                      "Observation 3: RWS similarity across datasets")
    rws_figures.layer_profile(profile, s.convs, _path(s, "layer_profile.png"),
                              f"Observation 1: robust − clean per layer ({c.model.name}, {a})")
    rws_figures.similarity_matrix(labels, labels, cos_a, _path(s, "signature_similarity.png"),
                                  f"Observation 2: cosine similarity of RWS ({a})")
    out = {"layer_profile": profile, "cosine": {"labels": labels, "matrix": cos_a.tolist()},
           "cross_dataset_cosine": None if cross is None else cross.tolist()}
    write_json(_path(s, "analyses.json"), out)
    return out


def _report(s: Context, r) -> dict:
    """results.json and report.md from the stages before."""
    c, sig, table = s.config, r["signatures"], r["table"]
    full_mb = table["full_model_mb"]
    results = {
        "model": c.model.name, "width_multiplier": c.model.width_multiplier, "dataset": c.data.name,
        "transfer_dataset": c.transfer.dataset, "corruptions": s.names, "severity": s.severity,
        "signature_layers": sig["modules"], "bn": c.signature.bn, "full_model_mb": full_mb, "table": table["rows"],
        "protocol": c.get("protocol", "rwsjax"),
        "switches": {d.field: c.signature[d.field.split(".")[1]] for d in protocols.RWS},
        "test_images": len(s.a.splits["test"]),
        "removal_exact": table["removal_exact"],
        "times_smaller": {n: {"fp32": full_mb / sig["size"][n], f"{c.signature.bits}bit": full_mb / sig["qsize"][n]}
                          for n in s.names},
        **r["sweeps"], "transfer": r["transfer"], **r["analyses"], "autoattack": r["autoattack"],
        "timings_s": dict(r.seconds),
    }
    write_report(s.workdir, c, results)
    write_json(_path(s, "results.json"), results)
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
          f"Protocol `{r['protocol']}` (docs/protocols.md): "
          + ", ".join(f"`{k}={v}`" for k, v in r["switches"].items()) + ".", "",
          tables.rws_table(r["table"]), "",
          f"ΔTA / ΔRA: change from the clean model in points, [95% paired bootstrap interval] over the same "
          f"{r['test_images']:,} test images ({RESAMPLES:,} resamples, seed {c.seed}); \"CI contains 0\": no "
          "change detectable at this test size.", "",
          ratios, "",
          f"Removing a patch returns θ_clean bit for bit: {r['removal_exact']}.", "",
          *_autoattack_lines(r.get("autoattack") or {}),
          "## Transfer", "", tables.markdown_table(
              ["corruption"] + [k for k in r["transfer"][0] if k != "corruption"],
              [[t["corruption"]] + [v for k, v in t.items() if k != "corruption"] for t in r["transfer"]]), "",
          "## Stage timings (s)", "", tables.markdown_table(["stage", "seconds"], list(r["timings_s"].items())), "",
          "## Figures", "", "![layer profile](layer_profile.png)", "![similarity](signature_similarity.png)"]
    if r["cross_dataset_cosine"] is not None:
        md.append("![cross-dataset](cross_dataset_similarity.png)")
    md += ["![lambda](lambda_sweep.png)", "![k and bits](k_and_bits.png)", ""]
    write_text(os.path.join(workdir, "report.md"), "\n".join(md))
    print(tables.rws_table(r["table"]))
    print(ratios)


def _autoattack_lines(aa: dict) -> list[str]:
    """The report's AutoAttack section (none when it was not run)."""
    if not aa:
        return []
    first = next(iter(aa.values()))
    attacks = list(first["accuracy_after"])
    rows = [[name, f"{m['clean_accuracy']:.2f}", *(f"{m['accuracy_after'][k]:.2f}" for k in attacks),
             f"{m['autoattack_accuracy']:.2f}", f"{m['seconds']:.0f}"] for name, m in aa.items()]
    return ["## AutoAttack", "",
            describe_autoattack(first) + " (clean): accuracy (%) after each attack and AA = the final one.", "",
            tables.markdown_table(["model", "clean", *(f"after {k}" for k in attacks), "AA", "seconds"], rows), ""]


def _zoo(name: str, task: str, compute, depends, inputs=("pre",)) -> Stage:
    return Stage(name, depends, (f"zoo/{name}/final",), compute, _load_zoo(name, task), inputs=inputs,
                 partial=(f"zoo/{name}/checkpoints", f"zoo/{name}/history.json"))


def stages(config) -> tuple[Stage, ...]:
    """The RWS stages for ``config`` (one zoo stage per model: they depend on the corruption list)."""
    c = config
    names = list(ood.corruption_list(c.corruptions.names, "corruptions.names"))
    a, b = c.data.name, c.transfer.dataset
    model = ("seed", "model")
    on_a = (*model, "data", "finetune")
    on_b = (*model, "finetune", "transfer.dataset", "transfer.train_size", "transfer.val_size", "transfer.test_size")
    corrupted = ("corruptions.severity",)
    robust_a = [f"{a}_{n}" for n in names]
    robust_b = [f"{b}_{n}" for n in names] if c.transfer.robust_models else []
    zoo_a = (f"{a}_clean", *robust_a)
    out = [_zoo("pre", "pre", _pre, (*model, "pre", "init_checkpoint"), inputs=()),
           _zoo(f"{a}_clean", "a", _finetuned(f"{a}_clean", "a", None, 10), on_a),
           *[_zoo(f"{a}_{n}", "a", _finetuned(f"{a}_{n}", "a", n, 10), (*on_a, *corrupted)) for n in names],
           _zoo(f"{b}_clean", "b", _finetuned(f"{b}_clean", "b", None, 20), on_b),
           *[_zoo(f"{b}_{n}", "b", _finetuned(f"{b}_{n}", "b", n, 20), (*on_b, *corrupted))
             for n in names if c.transfer.robust_models],
           _zoo(f"{a}_clean_continued", "a", _continued(f"{a}_clean_continued", f"{a}_clean"),
                (*on_a, "transfer.continued_epochs"), inputs=(f"{a}_clean",))]
    evaluation = ("eval.batch_size", "signature", "corruptions", "data")
    out += [
        Stage("signatures", ("signature.k", "signature.layers", "signature.transplant", "signature.bits", "corruptions"),
              ("signatures.json", "signatures"),
              _signatures, _load_signatures, inputs=("pre", *zoo_a)),
        Stage("table", evaluation, ("table.json",), _table, json_artifact("table.json"), inputs=("signatures", *zoo_a)),
        Stage("sweeps", (*evaluation, "sweeps"), ("sweeps.json", "lambda_sweep.png", "k_and_bits.png"), _sweeps,
              json_artifact("sweeps.json"), inputs=("pre", "signatures", *zoo_a), partial=("signatures/sweeps",)),
        Stage("transfer", (*evaluation, "transfer"), ("transfer.json",), _transfer, json_artifact("transfer.json"),
              inputs=("signatures", f"{b}_clean", f"{a}_clean_continued", *robust_a, *robust_b)),
        Stage("analyses", ("corruptions", "transfer.robust_models"),
              ("analyses.json", "layer_profile.png", "signature_similarity.png",
               *(["cross_dataset_similarity.png"] if robust_b else [])),
              _analyses, json_artifact("analyses.json"), inputs=("pre", *zoo_a, f"{b}_clean", *robust_b)),
        Stage("autoattack", (*evaluation, "eval"), ("autoattack.json",), _autoattack, json_artifact("autoattack.json"),
              inputs=("signatures", *zoo_a)),
        Stage("report", (*evaluation, "eval"), ("results.json", "report.md"), _report, json_artifact("results.json"),
              inputs=("signatures", "table", "sweeps", "transfer", "analyses", "autoattack")),
    ]
    return tuple(out)


def validate(config) -> list[str]:
    """Problems with the RWS-only fields (``corruptions``, ``signature``, ``pre``, ``finetune``; ``redo``)."""
    from rwsjax.config_validation import at_least, choice, get
    p: list[str] = []
    try:
        ood.corruption_list(config.corruptions.names, "corruptions.names")
        names_ok = True
    except ValueError as e:
        p.append(str(e))
        names_ok = False
    if config.corruptions.severity not in range(1, 6):
        p.append(f"config.corruptions.severity={config.corruptions.severity!r} must be in 1..5")
    bits = get(config, "signature.bits")
    if bits not in range(1, 9):
        p.append(f"config.signature.bits={bits!r} must be in 1..8")
    choice(p, config, "signature.compose", ("sum", "mean"))
    choice(p, config, "signature.bn", BN_MODES)
    choice(p, config, "signature.layers", ("convs", "blocks"))
    choice(p, config, "signature.bn_weighting", ("batch", "sample"))
    at_least(p, config, "signature.k", 1)
    for block in ("pre", "finetune"):
        at_least(p, config, f"{block}.epochs", 0)
        at_least(p, config, f"{block}.learning_rate", 0)
    return p + (redo_problems(config, stages(config)) if names_ok else [])


def run(config, workdir: str) -> dict:
    """Run (or resume) the RWS pipeline in ``workdir``; returns the results dict (``results.json``)."""
    return stage_runner.run(workdir, config, stages(config), lambda: Context(config, workdir), tag="rws")["report"]
