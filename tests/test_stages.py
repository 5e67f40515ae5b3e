"""The stage runner: skip what is done, refuse a changed config, redo a stage and everything after it, lock the
workdir; and each workflow's stage list."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import ml_collections
import pytest

from conftest import ROOT
from rwsjax.workflows import stages
from rwsjax.workflows.stages import Stage, StageError


def _preset(name, preset="smoke"):
    spec = importlib.util.spec_from_file_location(f"cfg_{name}", f"{ROOT}/configs/{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(preset)


def _toy(calls: list, fail: str | None = None):
    """Three stages a → b → c: each writes NAME.txt = its input's content + its config value."""
    def make(name, field, source):
        def compute(ctx, r):
            calls.append(name)
            if name == fail:
                raise RuntimeError(f"{name} failed")
            value = (r[source] if source else "") + str(ctx["config"][field])
            with open(os.path.join(ctx["workdir"], f"{name}.txt"), "w") as f:
                f.write(value)
            return value
        return Stage(name, (field,), (f"{name}.txt",), compute,
                     lambda ctx: open(os.path.join(ctx["workdir"], f"{name}.txt")).read(),
                     inputs=(source,) if source else ())
    return (make("a", "x", None), make("b", "y", "a"), make("c", "z", "b"))


def _config(**kw):
    c = ml_collections.ConfigDict({"x": 1, "y": 2, "z": 3, "redo": "", "log": {"tensorboard": False}})
    c.update(kw)
    return c


def _run(workdir, config, calls, fail=None):
    return stages.run(str(workdir), config, _toy(calls, fail), lambda: {"workdir": str(workdir), "config": config})


def test_skip_then_load_only_what_is_needed(tmp_path, capsys):
    calls = []
    assert _run(tmp_path, _config(), calls)["c"] == "123"
    assert calls == ["a", "b", "c"]
    assert sorted(os.listdir(tmp_path / "stages")) == ["a.json", "b.json", "c.json"]
    record = json.loads((tmp_path / "stages" / "b.json").read_text())
    assert record["config"] == {"y": 2} and set(record["inputs"]) == {"a"} and record["seconds"] >= 0
    capsys.readouterr()
    calls.clear()
    r = _run(tmp_path, _config(), calls)
    assert calls == [] and r["c"] == "123"  # loaded from c.txt, a and b never loaded
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("[stages]")] == \
        ["[stages] a", "[stages] b", "[stages] c"]  # one line per stage


def test_changed_field_is_refused_with_old_new_and_redo(tmp_path):
    _run(tmp_path, _config(), [])
    with pytest.raises(StageError, match=r"stage 'b'.*y: 2 → 5.*--config\.redo=b.*new --workdir"):
        _run(tmp_path, _config(y=5), [])
    assert (tmp_path / "b.txt").read_text() == "12"  # nothing touched


def test_redo_recomputes_the_stage_and_everything_after(tmp_path):
    calls = []
    _run(tmp_path, _config(), calls)
    calls.clear()
    r = _run(tmp_path, _config(y=5, redo="b"), calls)
    assert calls == ["b", "c"] and r["c"] == "153"
    with pytest.raises(StageError, match=r"unknown stage\(s\) \['q'\]; valid: \['a', 'b', 'c'\]"):
        _run(tmp_path, _config(redo="q"), calls)


def test_a_recomputed_input_makes_its_consumers_stale(tmp_path):
    calls = []
    _run(tmp_path, _config(), calls)
    os.remove(tmp_path / "a.txt")  # a's artifact lost: a is recomputed, so b and c are too
    calls.clear()
    _run(tmp_path, _config(), calls)
    assert calls == ["a", "b", "c"]


def test_a_stage_that_raises_leaves_no_record(tmp_path):
    calls = []
    with pytest.raises(RuntimeError, match="b failed"):
        _run(tmp_path, _config(), calls, fail="b")
    assert sorted(os.listdir(tmp_path / "stages")) == ["a.json"]
    calls.clear()
    assert _run(tmp_path, _config(), calls)["c"] == "123" and calls == ["b", "c"]


def test_started_stage_keeps_its_config(tmp_path):
    """A killed stage with partial state is 'started': its config is recorded and a change is refused."""
    def compute(ctx, r):
        os.makedirs(tmp_path / "ckpt", exist_ok=True)
        raise KeyboardInterrupt  # killed after it checkpointed
    stage = Stage("t", ("x",), ("t.txt",), compute, partial=("ckpt",))
    with pytest.raises(KeyboardInterrupt):
        stages.run(str(tmp_path), _config(), [stage], lambda: None)
    assert stages.plan(str(tmp_path), _config(), [stage]) == {"t": "started"}
    with pytest.raises(StageError, match=r"stage 't'.*is started.*x: 1 → 2"):
        stages.plan(str(tmp_path), _config(x=2), [stage])


def test_not_result_fields_and_fields_new_to_the_record(tmp_path):
    """Where data lives and how a result is computed are not what it is; a field a newer rwsjax added (absent
    from the record) is taken at its default."""
    stage = Stage("s", ("data", "mrc"), ("s.txt",), lambda ctx, r: open(tmp_path / "s.txt", "w").close())
    c = _config(data={"name": "cifar10", "data_dir": "/a"}, mrc={"eps": 0.1, "threads": 2})
    stages.run(str(tmp_path), c, [stage], lambda: None)
    record = json.loads((tmp_path / "stages" / "s.json").read_text())
    assert record["config"] == {"data.name": "cifar10", "mrc.eps": 0.1}
    c2 = _config(data={"name": "cifar10", "data_dir": "/b", "val_size": 5}, mrc={"eps": 0.1, "threads": 1})
    assert stages.plan(str(tmp_path), c2, [stage]) == {"s": "done"}
    c2.mrc.eps = 0.2
    with pytest.raises(StageError, match=r"mrc\.eps: 0\.1 → 0\.2"):
        stages.plan(str(tmp_path), c2, [stage])


def test_outputs_without_records_are_checked_against_config_json(tmp_path):
    """A workdir written without stage records: its config.json stands for every stage whose outputs exist."""
    c = _config()
    (tmp_path / "a.txt").write_text("1")
    (tmp_path / "config.json").write_text(json.dumps(c.to_dict()))
    with pytest.raises(StageError, match=r"stage 'a'.*x: 1 → 7"):
        _run(tmp_path, _config(x=7), [])
    calls = []
    assert _run(tmp_path, c, calls)["c"] == "123" and calls == ["b", "c"]


_HOLD = """
import sys, time
from rwsjax.workflows import stages
with stages.workdir_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_workdir_lock_names_the_holder_and_is_taken_over_after_kill(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.time()
        with pytest.raises(StageError, match=rf"in use by process {holder.pid} on .*another --workdir"):
            _run(tmp_path, _config(), [])
        assert time.time() - t0 < 5
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    capsys.readouterr()
    calls = []
    _run(tmp_path, _config(), calls)  # the dead holder's lock is taken over
    assert calls == ["a", "b", "c"]
    assert f"taking over {tmp_path}/.lock from process {holder.pid}" in capsys.readouterr().out


def test_rift_stages():
    from rwsjax.workflows import rift
    names = [s.name for s in rift.stages(_preset("rift"))]
    assert names == ["at", "mrc", "ft", "interp", "ood", "report"]
    deps = {s.name: s.inputs for s in rift.STAGES}
    assert deps["ft"] == ("at", "mrc") and deps["interp"] == ("at", "ft")


def test_rws_stages_one_per_zoo_model():
    from rwsjax.workflows import rws
    c = _preset("rws")
    names = [s.name for s in rws.stages(c)]
    assert names == ["pre", "cifar10_clean", "cifar10_gaussian_noise", "cifar10_fog", "cifar100_clean",
                     "cifar100_gaussian_noise", "cifar100_fog", "cifar10_clean_continued", "signatures", "table",
                     "sweeps", "transfer", "analyses", "autoattack", "report"]
    sig = next(s for s in rws.stages(c) if s.name == "signatures")
    assert "signature.k" in sig.depends and "cifar10_fog" in sig.inputs
    assert sig.outputs == ("signatures.json", "signatures")  # names that do not depend on the config
    c.transfer.robust_models = False
    assert "cifar100_fog" not in [s.name for s in rws.stages(c)]


def test_evaluate_stages():
    from rwsjax.workflows import evaluate
    assert [s.name for s in evaluate.stages(_preset("evaluate"))] == ["model", "test", "ood", "autoattack", "report"]


def test_no_stage_body_checks_for_its_output_and_no_private_jax():
    """The runner alone decides skip/compute: no workflow looks for its own results, nothing imports jax._src."""
    root = os.path.join(ROOT, "rwsjax")
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                text = open(os.path.join(d, f)).read()
                assert "jax._src" not in text, f
                if d.endswith("workflows") and f != "stages.py":
                    assert "done: loading" not in text and "os.path.exists(path)" not in text, f


def test_unroll_auto_follows_the_backend():
    import jax
    from rwsjax.train.steps import resolve_unroll
    assert resolve_unroll(None) == (jax.default_backend() == "cpu")
    assert resolve_unroll(False) is False and resolve_unroll(True) is True
