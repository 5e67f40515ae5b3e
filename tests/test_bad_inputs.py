"""Every kind of bad input we know of gets a clear error naming the problem and the fix.

Each case below is one row of ``docs/bad_inputs.md``; the test triggers it and
checks the exception type and the key words of the message.  Regenerate the
table (with the messages as they are now) with ``python tests/test_bad_inputs.py``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import DATA_DIR, ROOT, have_cifar10  # noqa: E402

HAVE_DATA = have_cifar10()


@dataclass
class Case:
    kind: str            # what is wrong (a row of the table)
    trigger: str         # what the user did
    run: Callable        # (tmp_path) -> the exception (or a CompletedProcess for CLI cases)
    expected: type       # exception type (SystemExit for CLI cases: exit status != 0)
    words: tuple         # substrings the message must contain
    data: bool = False   # needs the prepared CIFAR-10


def _config(name="rift", preset="smoke"):
    spec = importlib.util.spec_from_file_location(f"cfg_{name}", f"{ROOT}/configs/{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(preset)


def _raises(fn):
    try:
        fn()
    except BaseException as e:  # noqa: BLE001
        return e
    raise AssertionError("no error raised")


# No network for the subprocess: every HTTP(S) request goes to a closed local port (refused at once).
_OFFLINE = {"TFDS_DATA_DIR": "{tmp}/empty", "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}


def _cli(*args, env=None):
    def run(tmp_path):
        fmt = dict(tmp=tmp_path, root=ROOT)
        proc = subprocess.run([sys.executable, "-m", "rwsjax.main", *[a.format(**fmt) for a in args]],
                              capture_output=True, text=True, cwd=ROOT, timeout=300,
                              env=dict(os.environ, **{k: v.format(**fmt) for k, v in (env or {}).items()}))
        assert proc.returncode != 0, proc.stdout[-2000:]
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return SystemExit(lines[-1] if lines else proc.stdout)
    return run


def _validate(**fields):
    def run(_):
        from rwsjax.workflows import validate
        c = _config()
        for field, value in fields.items():
            block, key = field.split("__")
            c[block][key] = value
        return _raises(lambda: validate(c))
    return run


def _validate_with(**top):
    def run(_):
        from rwsjax.workflows import validate
        c = _config()
        for k, v in top.items():
            c[k] = v
        return _raises(lambda: validate(c))
    return run


def _batch_vs_devices(_):
    from rwsjax import config_validation, workflows
    c = _config()
    c.at.batch_size = 64
    real = jax.device_count
    config_validation.jax.device_count = lambda: 3
    try:
        return _raises(lambda: workflows.validate(c))
    finally:
        config_validation.jax.device_count = real


@functools.lru_cache(maxsize=None)
def _tiny(width=0.0625, name="resnet18"):
    from rwsjax.models.registry import create_model
    model = create_model(name, num_classes=10, width_multiplier=width)
    return jax.device_get(jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(
        jax.random.PRNGKey(0)))


def _saved(tmp_path, width=0.0625):
    from rwsjax.train import checkpoint
    path = str(tmp_path / f"ckpt_{width}")
    if not checkpoint.exists(path):
        checkpoint.save_variables(path, _tiny(width))
    return path


def _checkpoint_other_width(tmp_path):
    from rwsjax.train import checkpoint
    return _raises(lambda: checkpoint.load_variables(_saved(tmp_path, 0.125), like=_tiny(0.0625)))


def _checkpoint_missing(tmp_path):
    from rwsjax.train import checkpoint
    return _raises(lambda: checkpoint.load_variables(str(tmp_path / "nope"), like=_tiny()))


def _checkpoint_truncated(tmp_path):
    from rwsjax.train import checkpoint
    path = _saved(tmp_path)
    for root, _, files in os.walk(path):  # cut every data file of the OCDBT store in half
        for f in files:
            full = os.path.join(root, f)
            if os.sep + "d" + os.sep in full + os.sep and os.path.getsize(full) > 0:
                with open(full, "r+b") as fh:
                    fh.truncate(os.path.getsize(full) // 2)
    return _raises(lambda: checkpoint.load_variables(path, like=_tiny()))


def _checkpoint_metadata_garbage(tmp_path):
    from rwsjax.train import checkpoint
    path = _saved(tmp_path)
    with open(os.path.join(path, "_METADATA"), "w") as f:
        f.write("{not json")
    return _raises(lambda: checkpoint.load_variables(path, like=_tiny()))


def _signature(tmp_path, bits=None):
    from rwsjax.rws import signatures as sg
    params = _tiny()["params"]
    rws = {"conv1.kernel": np.asarray(params["conv1"]["kernel"]) * 0.01}
    sig = sg.make_signature(rws, architecture="resnet18", width_multiplier=0.0625, num_classes=10, bits=bits)
    path = tmp_path / f"sig_{bits}.safetensors"
    sg.save_signature(path, sig)
    return path


def _signature_truncated(tmp_path):
    from rwsjax.rws import signatures as sg
    path = _signature(tmp_path)
    path.write_bytes(path.read_bytes()[:-20])
    return _raises(lambda: sg.load_signature(path))


def _signature_bitflip(tmp_path):
    from rwsjax.rws import signatures as sg
    path = _signature(tmp_path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10  # one bit inside the last tensor's bytes
    path.write_bytes(bytes(data))
    return _raises(lambda: sg.load_signature(path))


def _signature_not_ours(tmp_path):
    from safetensors.numpy import save_file
    from rwsjax.rws import signatures as sg
    path = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(path))
    return _raises(lambda: sg.load_signature(path))


def _signature_other_model(tmp_path):
    from rwsjax.rws import patching, signatures as sg
    sig = sg.load_signature(_signature(tmp_path))
    return _raises(lambda: patching.patch(_tiny(0.125), [(sig, 1.0)]))


def _signature_other_architecture(tmp_path):
    from rwsjax.rws import patching, signatures as sg
    sig = sg.load_signature(_signature(tmp_path))
    return _raises(lambda: patching.check_compatible(sig, _tiny(), architecture="preact_resnet18"))


def _dataset_missing(tmp_path):
    from rwsjax.data import sources
    return _raises(lambda: sources.load_split("cifar10", "test", data_dir=str(tmp_path / "empty")))


def _init_checkpoint_garbage(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"not a state_dict")
    return _cli("--config=rift:smoke", "--workdir={tmp}/w", "--config.init_checkpoint={tmp}/bad.safetensors")(tmp_path)


def _val_too_large(_):
    from rwsjax.data.splits import load_splits
    return _raises(lambda: load_splits("cifar10", data_dir=DATA_DIR, val_size=50000))


def _nan_loss(tmp_path):
    """An infinite learning rate: the weights become inf/NaN after step 1, so step 2's loss is NaN."""
    from rwsjax.data.sources import load_split
    from rwsjax.models.registry import create_model
    from rwsjax.train import sharding, steps
    from rwsjax.train.loop import fit
    from rwsjax.train.state import TrainState, sgd
    split = load_split("cifar10", "test", data_dir=DATA_DIR, indices=np.arange(64), progress=False)
    model = create_model("resnet18", num_classes=10, width_multiplier=0.0625)
    tx = sgd(float("inf"), momentum=0.9, weight_decay=0.0, steps_per_epoch=2)
    mesh = sharding.make_mesh(jax.devices()[:1])
    return _raises(lambda: fit(name="at", directory=str(tmp_path / "nan"), state=TrainState.create(_tiny(), tx),
                               train_step=steps.make_train_step(model, tx, mesh), train=split, batch_size=32,
                               epochs=5, seed=0, mesh=mesh, validate=lambda v: {"accuracy": 0.0},
                               select="accuracy"))


def _changed_config(tmp_path):
    from rwsjax.workflows import stages
    from rwsjax.workflows.rift import STAGES
    c = _config()
    os.makedirs(tmp_path / "run" / "at" / "final")
    (tmp_path / "run" / "config.json").write_text(json.dumps(c.to_dict()))
    c.at.epochs = 7
    return _raises(lambda: stages.plan(str(tmp_path / "run"), c, STAGES))


_HOLD = "import sys, time\nfrom rwsjax.workflows import stages\nwith stages.workdir_lock(sys.argv[1]):\n" \
        "    print('locked', flush=True)\n    time.sleep(60)\n"


def _workdir_in_use(tmp_path):
    from rwsjax.workflows import stages
    from rwsjax.workflows.rift import STAGES
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        holder.stdout.readline()
        return _raises(lambda: stages.run(str(tmp_path), _config(), STAGES, lambda: None))
    finally:
        holder.kill()
        holder.wait()


def _multiprocess_partial(_):
    from rwsjax import distributed
    return _raises(lambda: distributed.resolve("10.0.0.1:1234", environ={}))


def _multiprocess_no_port(_):
    from rwsjax import distributed
    return _raises(lambda: distributed.resolve("10.0.0.1", 2, 0, environ={}))


def _errors():
    from rwsjax.config_validation import ConfigError
    from rwsjax.data.sources import DatasetNotFoundError
    from rwsjax.rws.patching import SignatureMismatchError
    from rwsjax.rws.signatures import SignatureFormatError
    from rwsjax.train.checkpoint import CheckpointError
    from rwsjax.workflows.stages import StageError
    return ConfigError, DatasetNotFoundError, SignatureMismatchError, SignatureFormatError, CheckpointError, StageError


def cases() -> list[Case]:
    ConfigError, DatasetNotFoundError, SignatureMismatchError, SignatureFormatError, CheckpointError, StageError = (
        _errors())
    return [
        Case("no config", "`rwsjax run --workdir=DIR`", _cli("--workdir={tmp}/w"), SystemExit,
             ("--config is required", "--config=rift:cpu")),
        Case("no workdir", "`--config=rift:cpu` only", _cli("--config=rift:cpu"),
             SystemExit, ("--workdir is required",)),
        Case("unknown preset", "`--config=rift:fast`",
             _cli("--config=rift:fast", "--workdir={tmp}/w"), SystemExit, ("fast", "paper")),
        Case("unknown config key", "`--config.at.epoch=3` (typo)",
             _cli("--config=rift:smoke", "--workdir={tmp}/w", "--config.at.epoch=3"), SystemExit,
             ("has no config.at.epoch", "did you mean config.at.epochs?")),
        Case("override of a section the workflow lacks", "`--config=evaluate:smoke --config.mrc.eps=0.2`",
             _cli("--config=evaluate:smoke", "--workdir={tmp}/w", "--config.mrc.eps=0.2"), SystemExit,
             ("the evaluate config has no config.mrc", "remove the override")),
        Case("wrong --config path", "`--config=configs/rfit.py:cpu`",
             _cli("--config=configs/rfit.py:cpu", "--workdir={tmp}/w"), SystemExit,
             ("no config file 'configs/rfit.py'", "rift:PRESET", "--config=rift:cpu")),
        Case("value of the wrong type", "`--config.at.epochs=ten`",
             _cli("--config=rift:smoke", "--workdir={tmp}/w", "--config.at.epochs=ten"),
             SystemExit, ("bad override", "ten")),
        Case("unknown model", "`--config.model.name=resnet101`", _validate(model__name="resnet101"), ConfigError,
             ("config.model.name='resnet101'", "resnet18", "wrn34_10")),
        Case("unknown dataset", "`--config.data.name=mnist`", _validate(data__name="mnist"), ConfigError,
             ("config.data.name='mnist'", "cifar10")),
        Case("negative ε", "`--config.attack.eps=-0.03`", _validate(attack__eps=-0.03), ConfigError,
             ("config.attack.eps=-0.03 must be ≥ 0",)),
        Case("α grid outside [0, 1]", "`--config.interp.alphas='(0.0, 1.5)'`", _validate(interp__alphas=(0.0, 1.5)),
             ConfigError, ("config.interp.alphas", "must lie in [0, 1]")),
        Case("unknown corruption", "`--config.ood.corruptions=fog,blizzard`",
             _validate(ood__corruptions="fog,blizzard"), ConfigError, ("unknown ['blizzard']", "gaussian_noise")),
        Case("batch not divisible by the devices", "`--config.at.batch_size=64` on 3 devices", _batch_vs_devices,
             ConfigError, ("config.at.batch_size=64", "multiple of the 3 device(s)")),
        Case("unknown stage to redo", "`--config.redo=training`",
             _validate_with(redo="training"), ConfigError, ("unknown stage(s) ['training']", "'at'", "'mrc'")),
        Case("changed config in a used workdir", "re-run with `--config.at.epochs=7` where θ_AT is done",
             _changed_config, StageError, ("stage 'at'", "at.epochs: 2 → 7", "--config.redo=at", "new --workdir")),
        Case("evaluate without a checkpoint", "`--config=evaluate:smoke` without `--config.checkpoint`",
             _cli("--config=evaluate:smoke", "--workdir={tmp}/w"), SystemExit,
             ("config.checkpoint is empty", "--config.checkpoint=runs/rift_cpu/at/final")),
        Case("workdir in use", "a second run started on the workdir of a live run", _workdir_in_use, StageError,
             ("is in use by process", "another --workdir")),
        Case("workdir is a file", "`--workdir=FILE`",
             _cli("--config=rift:smoke", "--workdir={root}/README.md"), SystemExit,
             ("is a file", "give a directory")),
        Case("dataset missing, offline", "`rwsjax run --config=rift:smoke` with an empty `TFDS_DATA_DIR`, no network",
             _cli("--config=rift:smoke", "--workdir={tmp}/w", env=_OFFLINE), SystemExit,
             ("cifar10 is not prepared", "cannot download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
              "--config.data.manual_dir=PATH/cifar-10-python.tar.gz")),
        Case("dataset not prepared, read directly", "`sources.load_split` on an empty data dir",
             _dataset_missing, DatasetNotFoundError, ("rwsjax prepare cifar10", "TFDS_DATA_DIR")),
        Case("impossible split size", "`--config.data.val_size=50000`", _val_too_large, ValueError,
             ("data.val_size",), data=True),
        Case("checkpoint path that is not a checkpoint", "`--config.checkpoint=DIR/nope`", _checkpoint_missing,
             CheckpointError, ("no checkpoint at", "_CHECKPOINT_METADATA")),
        Case("checkpoint of another architecture", "width ×0.125 checkpoint into a width ×0.0625 model",
             _checkpoint_other_width, CheckpointError, ("does not match", "shape", "expected",
                                                        "width_multiplier")),
        Case("PyTorch file that is not a state_dict", "`--config.init_checkpoint=bad.safetensors` (garbage bytes)",
             _init_checkpoint_garbage, SystemExit, ("bad.safetensors", "not a valid safetensors file")),
        Case("truncated checkpoint", "a checkpoint's data files cut in half", _checkpoint_truncated,
             CheckpointError, ("truncated or corrupt",)),
        Case("corrupt checkpoint metadata", "`_METADATA` overwritten with garbage", _checkpoint_metadata_garbage,
             CheckpointError, ("truncated or corrupt",)),
        Case("truncated signature file", "last 20 bytes of a `.safetensors` signature missing",
             _signature_truncated, SignatureFormatError, ("truncated or corrupt",)),
        Case("bit flip inside a signature", "one bit of the tensor data flipped", _signature_bitflip,
             SignatureFormatError, ("SHA-256", "corrupt")),
        Case("safetensors file that is not a signature", "a plain safetensors file", _signature_not_ours,
             SignatureFormatError, ("rwsjax_signature", "not an rwsjax signature")),
        Case("signature for a different model", "width ×0.0625 signature patched into a width ×0.125 model",
             _signature_other_model, SignatureMismatchError, ("conv1.kernel", "shape")),
        Case("signature for a different architecture", "ResNet-18 signature checked against `preact_resnet18`",
             _signature_other_architecture, SignatureMismatchError, ("resnet18", "preact_resnet18")),
        Case("loss becomes NaN/inf", "an infinite learning rate", _nan_loss, FloatingPointError,
             ("at step 2", "last good checkpoint", "Lower the learning rate"), data=True),
        Case("incomplete multi-process flags", "`--coordinator=10.0.0.1:1234` alone", _multiprocess_partial,
             ValueError, ("missing ['--num_processes', '--process_id']",)),
        Case("coordinator without a port", "`--coordinator=10.0.0.1`", _multiprocess_no_port, ValueError,
             ("HOST:PORT",)),
        Case("bad multi-process flags on the command line", "`--coordinator=h:1 --num_processes=2 --process_id=5`",
             _cli("--config=rift:smoke", "--workdir={tmp}/w", "--coordinator=h:1",
                  "--num_processes=2", "--process_id=5"), SystemExit, ("0 <= process_id < num_processes",)),
    ]


CASES = cases()


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_bad_input_gets_a_clear_message(case, tmp_path):
    if case.data and not HAVE_DATA:
        pytest.skip("needs the prepared CIFAR-10")
    error = case.run(tmp_path)
    assert isinstance(error, case.expected), repr(error)
    message = str(error)
    for w in case.words:
        assert w in message, (w, message)
    assert "Traceback" not in message


def test_the_table_lists_every_case():
    table = open(os.path.join(ROOT, "docs", "bad_inputs.md")).read()
    for case in CASES:
        assert f"| {case.kind} |" in table, case.kind
    assert len(CASES) >= 20


if __name__ == "__main__":  # regenerate docs/bad_inputs.md
    import tempfile
    rows = []
    for case in CASES:
        with tempfile.TemporaryDirectory() as d:
            from pathlib import Path
            msg = " ".join(str(case.run(Path(d))).split()).replace("|", "\\|").replace(d, "TMP").replace(ROOT + "/", "")
        rows.append(f"| {case.kind} | {case.trigger} | `{case.expected.__name__}` | {msg} |")
    out = ["# Bad inputs and the messages they get", "",
           "Each row is triggered by `tests/test_bad_inputs.py`, which checks the error type and the key words of",
           "the message (regenerate this table with `python tests/test_bad_inputs.py`). Command-line errors exit",
           "with a non-zero status and print the message last.", "",
           "| what is wrong | what the user did | error | message |", "|---|---|---|---|", *rows, ""]
    with open(os.path.join(ROOT, "docs", "bad_inputs.md"), "w") as f:
        f.write("\n".join(out))
    print(f"wrote {len(rows)} rows")
