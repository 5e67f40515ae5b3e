"""Export an rwsjax model to a PyTorch ``state_dict`` file.

    rwsjax export runs/rift_cpu/at/final at.pt [--normalization]   # or python -m rwsjax.models.export_pytorch

Reads the variables directory (Orbax, as written by every workflow: ``at/final``, ``ft/final``,
``zoo/<name>/final``) and writes ``.pt``/``.pth`` (needs torch) or ``.safetensors`` (no torch) with
PyTorch names and layouts (conv OIHW, linear ``[out, in]``, BN ``running_mean``/``running_var``/
``num_batches_tracked``), loadable with ``strict=True`` into the PyTorch twin of the architecture
(kuangliu ResNet/PreActResNet, TRADES WideResNet, torchvision VGG features / ResNet; see
:mod:`rwsjax.models.pytorch_io`). The model expects [0, 1] pixels normalized with the run's constants,
which are printed (from the directory's record, or the run's ``config.json`` for a directory written
without one); ``--normalization`` also stores them as
``normalize.mean``/``normalize.std`` buffers, which a re-import checks.
"""

from __future__ import annotations

import json
import os
import sys


def run_config(variables_dir: str) -> dict | None:
    """The ``config.json`` of the run that holds ``variables_dir`` (searched upwards), or None."""
    d = os.path.abspath(variables_dir)
    for _ in range(4):
        d = os.path.dirname(d)
        path = os.path.join(d, "config.json")
        if os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
    return None


def normalization(config: dict | None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The run's input normalization ``(mean, std)`` (:func:`rwsjax.workflows.common.normalization` of its
    ``config.json``), or None without a config of a known dataset."""
    from rwsjax.data.sources import DATASETS
    name = (config or {}).get("data", {}).get("name")
    if name not in DATASETS:
        return None
    import ml_collections
    from rwsjax.workflows.common import normalization as configured
    return configured(ml_collections.ConfigDict(config), name)


def _define(fv) -> None:
    from absl import flags
    flags.DEFINE_boolean("normalization", False, "also store the input normalization as normalize.mean / "
                         "normalize.std buffers", flag_values=fv)


def main(argv: list[str] | None = None, prog: str = "python -m rwsjax.models.export_pytorch") -> int:
    from rwsjax.cli import parse
    parsed = parse(sys.argv[1:] if argv is None else argv, prog, __doc__.splitlines()[0], _define,
                   positionals="CHECKPOINT_DIR OUT.{pt,pth,safetensors} ", nargs=(2, 2))
    if isinstance(parsed, int):
        return parsed
    fv, (checkpoint_dir, out) = parsed
    from rwsjax.models import pytorch_io
    from rwsjax.train import checkpoint
    try:
        variables = checkpoint.load_variables(checkpoint_dir)
    except Exception as e:  # noqa: BLE001 — CheckpointError and Orbax's own errors: one line for the user
        print(f"error: {e}", file=sys.stderr)
        return 1
    info = checkpoint.read_info(checkpoint_dir)  # what the directory records; older ones: the run's config.json
    config = info["config"] if info else run_config(checkpoint_dir)
    norm = (tuple(info["mean"]), tuple(info["std"])) if info else normalization(config)
    if fv.normalization and norm is None:
        print(f"error: --normalization needs the normalization: {checkpoint_dir} records none and has no run "
              "config.json above it", file=sys.stderr)
        return 1
    mean, std = norm if fv.normalization else (None, None)
    try:
        pytorch_io.save_state_dict(pytorch_io.export_state_dict(variables, mean=mean, std=std), out)
    except (ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    what = (f"{config['model']['name']} ×{config['model']['width_multiplier']} on {config['data']['name']}"
            if config else "model")
    print(f"wrote {out}: {what}" + (f"; inputs in [0, 1], normalized with mean={norm[0]}, std={norm[1]}"
                                       if norm else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
