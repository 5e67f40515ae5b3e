"""A small RiFT run for the multi-process and kill/resume tests (test_multiprocess.py, test_reliability.py).

    python tests/pipeline_check.py MODE WORKDIR [EPOCHS]

MODE ``rift``: the RiFT pipeline (smoke preset on 128 training images, so 2
PGD-AT steps of 64, one fine-tuning epoch, no OOD), with ℓ2 PGD (ε=0.5) and
eval-mode BN in the training attack.  Data-parallel runs on different device
counts differ in the last float bits (the order of the cross-device sums);
ℓ∞ PGD's sign(∇x) turns such bits into whole pixel steps wherever ∇x ≈ 0,
and a conv followed by train-mode BatchNorm has a weight gradient that is a
difference of nearly equal terms, so runs drift apart step by step (as in
any data-parallel implementation); ℓ2 PGD and few steps keep the comparison
at float tolerance;
``at``: only its adversarial-training stage; ``zoo``: the RWS workflow's first zoo model (θ_pre,
smoke preset on 128 CIFAR-100 images, batch 64).  Joins the distributed runtime
from the ``RWSJAX_*`` variables set by ``launch/local.sh`` (single process
without them).  Every artifact write (reports, JSON, figures) is recorded in
``WORKDIR/writes/process_<i>.json``.

``RWSJAX_FAULT_AT_STEP=STEP:KILL`` (a crash), ``STEP:TERM`` (a preemption notice) or ``STEP:INT`` (Ctrl-C)
makes the process send itself SIGKILL, SIGTERM or SIGINT right after the train-step call of global step STEP returns (see
:func:`install_fault`).
"""

import json
import os
import signal
import sys

from rwsjax import distributed

distributed.initialize(distributed.resolve())

import jax  # noqa: E402

from rwsjax.report import writers  # noqa: E402

FAULT = "RWSJAX_FAULT_AT_STEP"


def install_fault(spec: str) -> None:
    """Make every train step built by ``rwsjax.train.steps.make_train_step`` signal this process.

    Args:
      spec: ``"STEP:KILL"``, ``"STEP:TERM"`` or ``"STEP:INT"``: right after the call that runs global step ``STEP``
        (1-based; ``state.step`` becomes ``STEP``) returns — the step dispatched, not necessarily
        finished — the process sends itself SIGKILL (it dies there), SIGTERM or SIGINT (``fit``'s handler sets its
        stop flag, so ``fit`` finishes that step, checkpoints it and raises ``Preempted``).

    The global step is read from the first state a built step receives (one explicit device-to-host copy)
    and counted on the host afterwards, so a resumed run counts from its checkpoint.  The workflows call
    ``steps.make_train_step`` through the module, which is what this replaces.

    Raises:
      ValueError: ``spec`` is not ``STEP:KILL``, ``STEP:TERM`` or ``STEP:INT`` with an integer STEP.
    """
    at, _, how = spec.partition(":")
    signals = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}
    if not at.strip().isdigit() or how not in signals:
        raise ValueError(f"{FAULT} must be STEP:KILL, STEP:TERM or STEP:INT, got {spec!r}")
    at, sig = int(at), signals[how]
    from rwsjax.train import steps
    build = steps.make_train_step

    def make_train_step(*args, **kwargs):
        train_step = build(*args, **kwargs)
        count = []  # [global step after the last call], set from the first state

        def faulty_step(state, *batch_and_key):
            if not count:
                count.append(int(jax.device_get(state.step)))
            out = train_step(state, *batch_and_key)
            count[0] += 1
            if count[0] == at:
                os.kill(os.getpid(), sig)
            return out

        return faulty_step

    steps.make_train_step = make_train_step


def _rift_config():
    import rift as rift_config
    config = rift_config.get_config("smoke")
    config.at.attack_bn = "eval"
    for attack in (config.attack, config.eval):
        attack.norm, attack.eps, attack.step_size = "l2", 0.5, 0.25
    config.ood.enabled = False
    config.data.train_size = 128
    config.at.epochs = 1
    config.ft.epochs = 1
    config.interp.alphas = (0.0, 1.0)
    config.eval.batch_size = 64  # 100 test images: the last batch is padded, its rows split over processes
    config.log.tensorboard = True
    return config


def _zoo_config():
    """The RWS smoke preset's θ_pre on 128 CIFAR-100 images, batch 64: 2 steps per epoch."""
    import rws as rws_config
    config = rws_config.get_config("smoke")
    config.pre.train_size, config.pre.val_size, config.pre.epochs = 128, 100, 1
    config.log.tensorboard = False
    return config


def main():
    mode, workdir = sys.argv[1], sys.argv[2]
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
    config = _zoo_config() if mode == "zoo" else _rift_config()
    if len(sys.argv) > 3:
        (config.pre if mode == "zoo" else config.at).epochs = int(sys.argv[3])
    writes = []
    inner_text, inner_figure = writers._write_text, writers._save_figure
    writers._write_text = lambda path, text: (writes.append(os.path.relpath(path, workdir)), inner_text(path, text))
    writers._save_figure = lambda fig, path: (writes.append(os.path.relpath(path, workdir)), inner_figure(fig, path))
    if os.environ.get(FAULT):
        install_fault(os.environ[FAULT])
    os.makedirs(workdir, exist_ok=True)
    distributed.check_shared_workdir(workdir)
    from rwsjax.train.loop import Preempted
    from rwsjax.workflows import rift, rws, stages
    from rwsjax.workflows.common import Task
    try:
        if mode == "rift":
            rift.run(config, workdir)
        elif mode == "at":  # the first RiFT stage alone, through the stage runner
            stages.run(workdir, config, rift.STAGES[:1], lambda: Task(config, workdir))
        else:  # "zoo": the first RWS zoo model (θ_pre) alone
            stages.run(workdir, config, rws.stages(config)[:1], lambda: rws.Context(config, workdir))
    except Preempted as e:  # as rwsjax.main does
        print(e, file=sys.stderr)
        sys.exit(e.exit_status)
    log = os.path.join(workdir, "writes", f"process_{jax.process_index()}.json")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "w") as f:
        json.dump({"devices": jax.device_count(), "processes": jax.process_count(), "writes": writes}, f)


if __name__ == "__main__":
    main()
