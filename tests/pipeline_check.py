"""A small RiFT run for the multi-process and kill/resume tests (test_multiprocess.py, test_reliability.py).

    python tests/pipeline_check.py MODE WORKDIR [AT_EPOCHS]

MODE ``rift``: the RiFT pipeline (smoke preset on 128 training images, so 2
PGD-AT steps of 64, one fine-tuning epoch, no OOD), with ℓ2 PGD (ε=0.5) and
eval-mode BN in the training attack.  Data-parallel runs on different device
counts differ in the last float bits (the order of the cross-device sums);
ℓ∞ PGD's sign(∇x) turns such bits into whole pixel steps wherever ∇x ≈ 0,
and a conv followed by train-mode BatchNorm has a weight gradient that is a
difference of nearly equal terms, so runs drift apart step by step (as in
any data-parallel implementation); ℓ2 PGD and few steps keep the comparison
at float tolerance;
``at``: only its adversarial-training stage.  Joins the distributed runtime
from the ``RWSJAX_*`` variables set by ``launch/local.sh`` (single process
without them).  Every artifact write (reports, JSON, figures) is recorded in
``WORKDIR/writes/process_<i>.json``.
"""

import json
import os
import sys

from rwsjax import distributed

distributed.initialize(distributed.resolve())

import jax  # noqa: E402

from rwsjax.report import writers  # noqa: E402


def main():
    mode, workdir = sys.argv[1], sys.argv[2]
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
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
    if len(sys.argv) > 3:
        config.at.epochs = int(sys.argv[3])
    writes = []
    inner_text, inner_figure = writers._write_text, writers._save_figure
    writers._write_text = lambda path, text: (writes.append(os.path.relpath(path, workdir)), inner_text(path, text))
    writers._save_figure = lambda fig, path: (writes.append(os.path.relpath(path, workdir)), inner_figure(fig, path))
    os.makedirs(workdir, exist_ok=True)
    distributed.check_shared_workdir(workdir)
    from rwsjax.train.loop import Preempted
    from rwsjax.workflows import rift
    try:
        if mode == "rift":
            rift.run(config, workdir)
        else:
            rift.adversarial_training(rift.Setup(config, workdir))
    except Preempted as e:  # as rwsjax.main does
        print(e, file=sys.stderr)
        sys.exit(143)
    log = os.path.join(workdir, "writes", f"process_{jax.process_index()}.json")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "w") as f:
        json.dump({"devices": jax.device_count(), "processes": jax.process_count(), "writes": writes}, f)


if __name__ == "__main__":
    main()
