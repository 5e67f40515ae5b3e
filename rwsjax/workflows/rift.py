"""The RiFT pipeline (Zhu et al., ICCV 2023) as resumable stages.

    data splits → θ_AT (PGD-AT) → X_adv fixed → MRC of every kernel
      → θ_FT (fine-tune the least critical module) → α sweep on validation → α*
      → test report (clean, PGD-10 worst of 3, OOD)

The stages (``STAGES``) run on :mod:`rwsjax.workflows.stages`: a done stage
is skipped, a changed config for it is refused, ``--config.redo=STAGE``
recomputes one and the later ones; the two training stages checkpoint every
epoch (and on SIGTERM/SIGINT) and resume where they stopped.  The test split is only ever
used for the final report; every choice (best AT epoch, best FT epoch, α*)
is made on the validation split carved from train.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from rwsjax.data.batching import eval_batches, steps_per_epoch
from rwsjax.report import figures, tables
from rwsjax.report.intervals import paired_bootstrap
from rwsjax.report.writers import read_json, write_json, write_local_json, write_text
from rwsjax.rift.finetune import choose_modules, finetune_optimizer
from rwsjax.rift.mrc import MRC
from rwsjax.rift.select import select_alpha
from rwsjax.train import checkpoint, dispatch, sharding, steps
from rwsjax import distributed
from rwsjax.train.loop import Preempted, fit, stop_on_signal
from rwsjax.train.state import TrainState, lr_schedule, sgd
from rwsjax.weights.patch import interpolate
from rwsjax.workflows import ood
from rwsjax.workflows import stages as stage_runner
from rwsjax.workflows.common import Task, describe_autoattack, json_artifact, load_model, subset
from rwsjax.workflows.stages import Stage, redo_problems


def _variables(path: str):
    return lambda s: checkpoint.load_variables(os.path.join(s.workdir, path), like=s.init_variables)


def adversarial_training(s: Task, r) -> dict:
    """Stage 1: θ_AT by ``at.regime`` (PGD-AT, TRADES, MART or SCORE, ± AWP), best epoch by validation
    robust accuracy → ``at/final``; or, with ``init_checkpoint``, that model (PyTorch or rwsjax) as θ_AT."""
    c, path = s.config, os.path.join(s.workdir, "at", "final")
    if c.get("init_checkpoint"):
        print(f"[at] θ_AT = {c.init_checkpoint} (no adversarial training)")
        checkpoint.save_variables(path, load_model(c.init_checkpoint, s.init_variables, s.model), info=s.info)
        return checkpoint.load_variables(path, like=s.init_variables)
    spe = steps_per_epoch(len(s.splits["train"]), c.at.batch_size)
    schedule = dict(steps_per_epoch=spe, decay_epochs=c.at.decay_epochs, decay_factor=c.at.decay_factor,
                    schedule=c.at.lr_schedule, epochs=c.at.epochs)
    tx = sgd(c.at.learning_rate, momentum=c.at.momentum, weight_decay=c.at.weight_decay, **schedule)
    train_step = steps.make_train_step(s.model, tx, s.mesh, regime=c.at.regime,
                                       attack=steps.attack_kwargs(c.attack), attack_bn=c.at.attack_bn,
                                       beta=c.at.beta, awp_gamma=c.at.awp_gamma if c.at.awp else 0.0,
                                       awp_warmup_steps=c.at.awp_warmup * spe, clip_start=c.at.clip_start,
                                       extra_clean_pass=c.at.extra_clean_pass)
    val_step = s.eval_step(restarts=1)
    best, history = fit(name="at", directory=os.path.join(s.workdir, "at", "checkpoints"),
                        state=TrainState.create(s.init_variables, tx), train_step=train_step,
                        train=s.splits["train"], batch_size=c.at.batch_size, epochs=c.at.epochs, seed=c.seed,
                        mesh=s.mesh, validate=lambda v: s.evaluate(val_step, v, s.val_robust, "at val"),
                        select="robust_accuracy", writer=s.writer,
                        learning_rate=lr_schedule(c.at.learning_rate, **schedule))
    write_json(os.path.join(s.workdir, "at", "history.json"), history)
    figures.training_curves(history, os.path.join(s.workdir, "at", "curves.png"), tables.regime_label(c.at.to_dict()))
    checkpoint.save_variables(path, best, info=s.info)
    return checkpoint.load_variables(path, like=s.init_variables)


def module_criticality(s: Task, r) -> list[dict]:
    """Stage 2: PGD-10 examples fixed from θ_AT, MRC of every kernel → ``mrc.json``; finished rows are kept
    in ``mrc_partial`` so a preempted pass resumes."""
    c, at_variables = s.config, r["at"]
    source = subset(s.splits[c.mrc.split], c.mrc.num_examples, c.seed + 2)
    craft = steps.make_adversarial_examples(s.model, s.mesh, attack={**s.eval_attack,
                                                                     "step_size": c.mrc.attack_step_size})
    replicated = sharding.replicate(at_variables, s.mesh)
    rows = sharding.local_rows(s.mesh, c.eval.batch_size)
    batches = eval_batches(source, c.eval.batch_size, rows)
    keys = dispatch.fold_in_keys(jax.random.PRNGKey(c.seed + 3), 0, -(-len(source) // c.eval.batch_size), s.mesh)

    def crafted():
        for (images, labels, _), key in zip(batches, keys):
            batch = sharding.shard_batch((images, labels), s.mesh)
            with dispatch.guard():
                x = craft(replicated, *batch, key)
            yield x
    # the whole batch, on every process; the padding of the last batch dropped
    x_adv = np.concatenate([np.asarray(x) for x in dispatch.fetch_lagged(crafted())])[: len(source)]
    mrc = MRC(s.model, at_variables, x_adv, source.labels, eps=c.mrc.eps, lr=c.mrc.learning_rate,
              epochs=c.mrc.epochs, batch_size=c.mrc.batch_size, project_every=c.mrc.project_every,
              drop_remainder=c.mrc.drop_remainder, floor=c.mrc.floor, seed=c.seed,
              devices=list(s.mesh.devices.flat), cache=c.mrc.cache, cache_gib=c.mrc.cache_gib,
              threads=c.mrc.threads)
    # Each finished row is saved at once (by the process that computed it), so a preempted MRC pass resumes.
    partial = os.path.join(s.workdir, "mrc_partial")
    os.makedirs(partial, exist_ok=True)
    done = {r["module"]: r for r in (read_json(os.path.join(partial, f)) for f in sorted(os.listdir(partial))
                                     if f.endswith(".json"))}
    if done:
        print(f"[mrc] resuming: {len(done)} of {len(s.kernels)} modules done in {partial}")
    with stop_on_signal() as flag:
        rows = mrc.criticality(s.kernels, done=done,
                               on_row=lambda r: write_local_json(os.path.join(partial, f"{r['module']}.json"), r),
                               stop=lambda: flag.requested is not None)
        if distributed.any_process(len(rows) < len(s.kernels)):
            raise Preempted(f"[mrc] {flag.requested or 'a stop signal'} received: {len(rows)} of {len(s.kernels)} "
                            f"modules done and saved in {partial}; run the same command again to continue",
                            flag.requested)
    write_json(os.path.join(s.workdir, "mrc.json"), {"eps": c.mrc.eps, "examples": len(source),
                                                     "split": c.mrc.split, "modules": rows})
    write_text(os.path.join(s.workdir, "mrc.md"), tables.mrc_table(rows))
    figures.mrc_bar_chart(rows, os.path.join(s.workdir, "mrc.png"),
                          f"MRC of {c.model.name} ({c.data.name}), ε={c.mrc.eps}")
    return rows


def finetune(s: Task, r) -> dict:
    """Stage 3: fine-tune the chosen modules (``ft.modules``: the least critical by MRC) of θ_AT on clean data;
    best epoch by validation clean accuracy → ``ft/final``."""
    c, at_variables = s.config, r["at"]
    modules = choose_modules(r["mrc"], c.ft.modules, c.ft.top_k)
    print(f"[ft] fine-tuning {modules} (strategy {c.ft.modules})")
    spe = steps_per_epoch(len(s.splits["train"]), c.ft.batch_size)
    what = "all" if c.ft.modules == "all" else modules
    tx = finetune_optimizer(at_variables["params"], what, learning_rate=c.ft.learning_rate,
                            momentum=c.ft.momentum, weight_decay=c.ft.weight_decay, steps_per_epoch=spe,
                            decay_epochs=c.ft.decay_epochs, decay_factor=c.ft.decay_factor)
    train_step = steps.make_train_step(s.model, tx, s.mesh, regime="standard", bn_mode=c.ft.bn_mode)
    val_step = s.eval_step(restarts=None)
    state = TrainState.create(jax.tree.map(jnp.asarray, at_variables), tx)
    best, history = fit(name="ft", directory=os.path.join(s.workdir, "ft", "checkpoints"), state=state,
                        train_step=train_step, train=s.splits["train"], batch_size=c.ft.batch_size,
                        epochs=c.ft.epochs, seed=c.seed + 4, mesh=s.mesh,
                        validate=lambda v: s.evaluate(val_step, v, s.splits["val"], "ft val"),
                        select="clean_accuracy", writer=s.writer,
                        learning_rate=lr_schedule(c.ft.learning_rate, steps_per_epoch=spe,
                                                  decay_epochs=c.ft.decay_epochs, decay_factor=c.ft.decay_factor))
    write_json(os.path.join(s.workdir, "ft", "history.json"), history)
    checkpoint.save_variables(os.path.join(s.workdir, "ft", "final"), best, info=s.info)
    return _variables("ft/final")(s)


def interpolation(s: Task, r) -> dict:
    """Stage 4: validation accuracy along θ_α for α in the grid; α* by the paper's rule → interpolation.json."""
    c, at_variables, ft_variables = s.config, r["at"], r["ft"]
    clean_step, adv_step = s.eval_step(restarts=None), s.eval_step(restarts=c.interp.restarts)

    def measure(alpha):
        v = interpolate(at_variables, ft_variables, alpha)
        clean = s.evaluate(clean_step, v, s.splits["val"], f"α={alpha:.1f} clean")["clean_accuracy"]
        robust = s.evaluate(adv_step, v, s.val_robust, f"α={alpha:.1f} adv")["robust_accuracy"]
        print(f"[interp] α={alpha:.2f}: val clean {clean:.2f}%  val adv {robust:.2f}%")
        return {"alpha": float(alpha), "clean_accuracy": clean, "robust_accuracy": robust}

    sweep = [measure(a) for a in c.interp.alphas]
    reference = next((m for m in sweep if m["alpha"] == 0.0), None) or measure(0.0)
    i = select_alpha([m["alpha"] for m in sweep], [m["clean_accuracy"] for m in sweep],
                     [m["robust_accuracy"] for m in sweep],
                     reference_adversarial=reference["robust_accuracy"], tolerance=c.interp.tolerance,
                     n=len(s.val_robust))
    out = {"sweep": sweep, "alpha_star": sweep[i]["alpha"], "reference": reference, "tolerance": c.interp.tolerance}
    write_json(os.path.join(s.workdir, "interpolation.json"), out)
    figures.alpha_curve(sweep, out["alpha_star"], os.path.join(s.workdir, "interpolation.png"),
                        acceptance=reference["robust_accuracy"] - c.interp.tolerance)
    return out


def _rift_variables(r) -> dict:
    return interpolate(r["at"], r["ft"], r["interp"]["alpha_star"])


def ood_accuracy(s: Task, r) -> dict:
    """Stage 5: θ_AT and θ_RiFT on the corrupted test sets of ``config.ood`` → ood.json (``{}`` when
    ``ood.enabled`` is False)."""
    if not s.config.ood.enabled:
        write_json(os.path.join(s.workdir, "ood.json"), {})
        return {}
    return ood.evaluate_ood(s, {"at": r["at"], "rift": _rift_variables(r)}, os.path.join(s.workdir, "ood.json"))


def report(s: Task, r) -> dict:
    """Stage 6: test-split clean, PGD-10 (worst of ``eval.restarts``), OOD and (``eval.autoattack``)
    AutoAttack accuracy of θ_AT and θ_RiFT → results.json, report.md."""
    c = s.config
    at_variables, rift_variables, rows, interp = r["at"], _rift_variables(r), r["mrc"], r["interp"]
    modules = choose_modules(rows, c.ft.modules, c.ft.top_k)
    test_step = s.eval_step(restarts=c.eval.restarts)
    at = s.evaluate(test_step, at_variables, s.splits["test"], "test θ_AT", per_example=True)
    rift = s.evaluate(test_step, rift_variables, s.splits["test"], "test θ_RiFT", per_example=True)
    ood_results = r["ood"] or None
    for name, m in (("at", at), ("rift", rift)):
        m["ood_accuracy"] = ood_results["ood_accuracy"][name] if ood_results else None  # None: not computed
    # Every Δ with its paired bootstrap 95% interval over the same test images (rwsjax.report.intervals).
    scores = {k: (at["per_example"][v], rift["per_example"][v])
              for k, v in (("clean_accuracy", "clean"), ("robust_accuracy", "robust"))}
    if ood_results and ood_results.get("per_image"):
        sets = ood_results["per_image_sets"]
        scores["ood_accuracy"] = tuple(np.asarray(ood_results["per_image"][m]) / sets for m in ("at", "rift"))
    interval = {k: paired_bootstrap(a, b, seed=c.seed) for k, (a, b) in scores.items()}
    del at["per_example"], rift["per_example"]
    if c.eval.autoattack != "none":
        at["autoattack"] = s.autoattack(at_variables, "at")
        rift["autoattack"] = s.autoattack(rift_variables, "rift")
    timings = {k: v for k, v in r.seconds.items()}
    results = {
        "dataset": c.data.name, "model": c.model.name, "width_multiplier": c.model.width_multiplier,
        "preset": c.preset, "protocol": c.get("protocol", "rwsjax"), "mrc_split": c.mrc.split,
        "devices": [str(d) for d in jax.devices()],
        "regime": (f"imported ({os.path.basename(c.init_checkpoint)})" if c.get("init_checkpoint")
                   else tables.regime_label(c.at.to_dict())), "at_config": c.at.to_dict(),
        "splits": {k: len(v) for k, v in s.splits.items()},
        "attack": {"eval": s.eval_attack, "restarts": c.eval.restarts},
        "at": at, "rift": rift, "intervals": interval, "alpha_star": interp["alpha_star"],
        "finetuned_modules": modules,
        "mrc": [{k: v for k, v in row.items() if k != "history"} for row in rows],
        "interpolation": interp["sweep"], "timings_s": timings,
        "ood": None if ood_results is None else {
            k: ood_results[k] for k in ("source", "corruptions", "severities", "n", "summary_key", "summary")},
    }
    write_json(os.path.join(s.workdir, "results.json"), results)
    md = ["# RiFT report", "",
          f"{c.model.name} (width ×{c.model.width_multiplier}) on {c.data.name}, preset `{c.preset}`; "
          f"test split of {len(s.splits['test'])} images; adversarial = PGD-{c.eval.steps} ℓ∞ ε=8/255 "
          f"(step 2/255), worst case over {c.eval.restarts} restarts; " + (
              ood.describe(ood_results, c.data.name) if ood_results else "OOD n/c = not computed (ood.enabled=False).")
          + (f" {describe_autoattack(at['autoattack'])}." if c.eval.autoattack != "none" else "")
          + (f" θ_AT = {c.init_checkpoint}." if c.get("init_checkpoint")
             else f" θ_AT trained by {results['regime']}."), "",
          *([f"**Module selection used the test split**: MRC's adversarial examples were crafted from the "
             f"{len(s.splits['test'])} test images reported here (`mrc.split=test`, protocol "
             f"`{results['protocol']}`, as the official code does).", ""] if c.mrc.split == "test" else []),
          tables.rift_table(results), "",
          tables.interval_note(interval, len(s.splits["test"])), "",
          f"Fine-tuned module(s): {', '.join(modules)} (strategy `{c.ft.modules}`); α* = {interp['alpha_star']:.1f}.",
          *([f"Adversarial accuracy as the worst of the {c.eval.restarts} whole PGD runs (RiFT's paper; the table "
             f"gives the per-example worst case, which is ≤ it): θ_AT {at['robust_worst_run_accuracy']:.2f}%, "
             f"θ_RiFT {rift['robust_worst_run_accuracy']:.2f}%."] if "robust_worst_run_accuracy" in at else []),
          "", "## α sweep (validation)", "", tables.alpha_table(interp["sweep"], interp["alpha_star"]),
          "", "## Module robust criticality", "", tables.mrc_table(rows), "",
          *(["## OOD accuracy per corruption (mean over severities, test)", "",
              tables.ood_table(ood_results["summary"]), ""] if ood_results else []),
          "## Stage timings (s)", "", tables.markdown_table(["stage", "seconds"], list(timings.items()))]
    write_text(os.path.join(s.workdir, "report.md"), "\n".join(md))
    print(tables.rift_table(results))
    return results


_ATTACK = ("eval.norm", "eval.eps", "eval.step_size", "eval.steps", "eval.random_start")
STAGES = (
    Stage("at", ("seed", "data", "model", "attack", "at", "init_checkpoint", *_ATTACK), ("at/final",),
          adversarial_training, _variables("at/final"),
          partial=("at/checkpoints", "at/history.json", "at/curves.png")),
    Stage("mrc", ("seed", "mrc", "eval.batch_size", *_ATTACK), ("mrc.json", "mrc.md", "mrc.png"),
          module_criticality, lambda s: json_artifact("mrc.json")(s)["modules"],
          inputs=("at",), partial=("mrc_partial",)),
    Stage("ft", ("ft",), ("ft/final",), finetune, _variables("ft/final"), inputs=("at", "mrc"),
          partial=("ft/checkpoints", "ft/history.json")),
    Stage("interp", ("interp",), ("interpolation.json", "interpolation.png"), interpolation,
          json_artifact("interpolation.json"), inputs=("at", "ft")),
    Stage("ood", ("ood", "eval.batch_size"), ("ood.json",), ood_accuracy,
          json_artifact("ood.json"), inputs=("at", "ft", "interp")),
    Stage("report", ("eval",), ("results.json", "report.md"), report,
          json_artifact("results.json"), inputs=("at", "mrc", "ft", "interp", "ood")),
)


def stages(config) -> tuple[Stage, ...]:
    """The RiFT stages (the same for every config)."""
    return STAGES


def validate(config) -> list[str]:
    """Problems with the RiFT-only fields (``mrc``, ``ft``, ``interp``, ``at``; ``redo``), one line each."""
    from rwsjax.config_validation import at_least, choice, get
    from rwsjax.rift.finetune import STRATEGIES
    from rwsjax.rift.mrc import PROJECT_EVERY
    from rwsjax.train import regimes
    from rwsjax.train.steps import ATTACK_BN_MODES, BN_MODES
    p: list[str] = []
    choice(p, config, "at.regime", regimes.REGIMES)
    for field in ("at.beta", "at.awp_gamma", "at.awp_warmup", "at.epochs", "at.learning_rate"):
        at_least(p, config, field, 0)
    regime = regimes.REGIMES.get(config.at.regime)
    if get(config, "at.awp") and regime is not None and not regime.adversarial:
        adversarial = [n for n, r in regimes.REGIMES.items() if r.adversarial]
        p.append(f"config.at.awp=True needs an adversarial config.at.regime ({', '.join(adversarial)})")
    elif get(config, "at.awp") and regime is not None and not regime.awp_gamma and get(config, "at.awp_gamma") is None:
        p.append(f"config.at.awp=True with config.at.regime={config.at.regime} needs --config.at.awp_gamma "
                 "(AWP has no recipe for this regime)")
    choice(p, config, "at.lr_schedule", regimes.LR_SCHEDULES)
    if regime is not None and regime.objective is not None and get(config, "at.attack_bn") == "train":
        p.append(f"config.at.attack_bn=train (Bag of Tricks' PGD-AT mode) does not apply to "
                 f"config.at.regime={config.at.regime}: use batch or eval (its official code: eval)")
    if regime is not None and regime.objective is None and get(config, "at.extra_clean_pass"):
        p.append(f"config.at.extra_clean_pass=True is TRADES's third pass; config.at.regime={config.at.regime} "
                 "has no pair objective")
    choice(p, config, "at.attack_bn", ATTACK_BN_MODES)
    choice(p, config, "ft.bn_mode", BN_MODES)
    choice(p, config, "ft.modules", STRATEGIES)
    choice(p, config, "mrc.project_every", PROJECT_EVERY)
    choice(p, config, "mrc.split", ("train", "test"))
    for field in ("mrc.eps", "mrc.threads", "mrc.cache_gib", "mrc.epochs", "mrc.learning_rate", "ft.epochs",
                  "ft.learning_rate"):
        at_least(p, config, field, 1 if field == "mrc.threads" else 0)
    at_least(p, config, "mrc.batch_size", 1)  # MRC runs each module whole on one device: any batch size
    alphas = config.interp.alphas
    if any(not 0.0 <= a <= 1.0 for a in alphas):
        p.append(f"config.interp.alphas={tuple(alphas)} must lie in [0, 1]")
    return p + redo_problems(config, STAGES)


def run(config, workdir: str) -> dict:
    """Run (or resume) the whole RiFT pipeline in ``workdir``; returns the results dict (``results.json``)."""
    return stage_runner.run(workdir, config, STAGES, lambda: Task(config, workdir), tag="rift")["report"]
