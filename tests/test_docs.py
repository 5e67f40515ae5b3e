"""The README and docs/ as a test: every command and Python snippet runs, at smoke scale, on real data.

The pages are read in `PAGES` order and their fenced blocks run in document order in one scratch
directory (so ``runs/rift_cpu`` made by the README's command is the checkpoint the later pages use):

* ``python`` blocks of a page are joined and run as one script (they continue one another);
* every line of a ``bash`` block is a command. It is **run** with the smoke substitutions below, or, for
  the commands in `CHECK`, **checked**: run without data and offline, where it must get past the flag
  parsing, the config validation and the loading of any ``init_checkpoint`` (a file of the named
  architecture made here) and stop at the missing dataset (so every flag, preset and override in it is
  real); the commands in `SKIP` need what a test cannot have (a TPU pod, SLURM, the installer,
  this test suite itself) and say so. A command in none of these fails the test, as does a `SKIP`/`CHECK`
  entry no page has any more.

The scratch directory holds what the pages assume a user has: ``tiny-imagenet-200.zip`` (the real subset)
and ``runs/archives/cifar-10-python.tar.gz`` (500 + 200 real CIFAR-10 images in the official layout).

Smoke substitutions (`_smoke`): the ``cpu`` / ``paper`` (or no) preset of a packaged config becomes
``smoke``, with 4 corruptions fewer for the OOD stage; ``width_multiplier=0.25`` (the ``cpu`` preset's
width) becomes 0.0625 (the ``smoke`` one's); ``rwsjax corrupt generate`` makes one corruption at one
severity of 20 images.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import ROOT

PAGES = ["README.md", "docs/workflows.md", "docs/results.md", "docs/rws.md", "docs/pytorch_io.md",
         "docs/corruptions.md", "docs/tiny_imagenet.md", "docs/multi_host.md", "docs/benchmarks.md",
         "docs/protocols.md", "docs/mrc_reference.md", "docs/bad_inputs.md"]

SKIP = {
    'pip install -e ".[test]"': "the installer (the test runs in the installed package)",
    "TFDS_DATA_DIR=$PWD/../shared/tensorflow_datasets python -m pytest -q": "this test suite",
    "pip install torch --index-url https://download.pytorch.org/whl/cpu": "the installer",
    "TPU_NAME=my-v4-32 ZONE=us-central2-b WORKDIR=/mnt/shared/rift launch/tpu_vm_pod.sh "
    "--config=rift:paper --config.at.batch_size=512 --config.at.learning_rate=0.4": "a Cloud TPU pod",
    "sbatch --nodes=2 launch/slurm_gpu.sbatch --config=rift:paper --config.at.batch_size=1024 "
    "--config.at.learning_rate=0.8": "SLURM",
    "launch/local.sh 2 2 rwsjax run --config=rift:smoke --workdir=runs/mp":
        "run by tests/test_multiprocess.py (2 processes x 2 devices)",
    "rwsjax regimes runs/rift_cpu runs/rift_cpu_trades": "reads the TRADES run, which is only checked here",
}

CHECK = {
    "rwsjax run --config=rift:cpu --workdir=runs/rift_official --config.protocol=official",  # tests/test_pipeline.py
    "rwsjax run --config=rws:cpu --workdir=runs/rws_official --config.protocol=official",  # tests/test_rws_pipeline.py
    "rwsjax run --config=rift:paper --workdir=runs/rift_paper",
    "rwsjax run --config=rift:cpu --workdir=runs/rift_cpu_trades --config.at.regime=trades",
    "rwsjax run --config=rws:cpu --workdir=runs/rws_cpu",
    "rwsjax run --config=rift --workdir=runs/rift_bot --config.model.name=preact_resnet18 "
    "--config.init_checkpoint=PreActResNet18_AT.safetensors",
    "rwsjax run --config=evaluate --workdir=runs/eval_wong --config.checkpoint=robustbench:Wong2020Fast "
    "--config.eval.autoattack=standard",
}

_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
_OFFLINE = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}


def commands(block: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments and blank lines dropped."""
    out, line = [], ""
    for raw in block.splitlines():
        line += raw.rstrip()
        if line.endswith("\\"):
            line = line[:-1].rstrip() + " "
            continue
        text = re.sub(r"\s+#.*$", "", line).strip()
        if text and not text.startswith("#"):
            out.append(" ".join(text.split()))
        line = ""
    return out


def blocks(page: str) -> list[tuple[str, str]]:
    with open(os.path.join(ROOT, page)) as f:
        return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(f.read())]


def _smoke(command: str) -> str:
    command = re.sub(r"--config=(rift|rws|evaluate)(:(cpu|paper))?(?=\s|$)", r"--config=\1:smoke", command)
    if command.startswith("rwsjax run --config=rift:smoke"):
        command += " --config.ood.corruptions=fog --config.ood.severities=3"
    if command.startswith("rwsjax evaluate") and "--config=" not in command:
        command = command.replace("rwsjax evaluate", "rwsjax evaluate --config=evaluate:smoke", 1)
    if command.startswith("rwsjax corrupt generate"):
        command += " --num_examples=20 --corruptions=fog --severities=3 --no_progress"
    return command


def _run(command: str, cwd: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(shlex.split(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_readme_is_a_manual_of_at_most_250_lines():
    with open(os.path.join(ROOT, "README.md")) as f:
        assert len(f.read().splitlines()) <= 250


def test_every_skipped_or_checked_command_is_in_the_docs():
    found = {c for page in PAGES for kind, text in blocks(page) if kind == "bash" for c in commands(text)}
    assert set(SKIP) <= found, set(SKIP) - found
    assert CHECK <= found, CHECK - found


@pytest.mark.slow
def test_the_readme_and_docs_run(tmp_path):
    if not os.path.isdir(os.path.join(os.environ.get("TFDS_DATA_DIR", ""), "cifar10")):
        pytest.skip("needs the prepared CIFAR-10/100 (TFDS_DATA_DIR)")
    work = tmp_path / "work"
    work.mkdir()
    shared = os.path.dirname(os.path.abspath(os.environ["TFDS_DATA_DIR"]))
    zip_path = os.path.join(shared, "tiny-imagenet-200-subset.zip")
    if os.path.exists(zip_path):
        os.symlink(zip_path, work / "tiny-imagenet-200.zip")
    import cifar_archive  # the archive docs/workflows.md prepares from: real images, official layout
    cifar_archive.write("cifar10", os.environ["TFDS_DATA_DIR"], str(work / "runs" / "archives" / "cifar-10-python.tar.gz"),
                        train=500, test=200)
    env = dict(os.environ, PYTHONPATH=ROOT)
    offline = dict(env, TFDS_DATA_DIR=str(tmp_path / "no_data"), **_OFFLINE)
    ran = []
    for page in PAGES:
        python = []
        for kind, text in blocks(page):
            if kind == "python":
                python.append(text.replace("width_multiplier=0.25", "width_multiplier=0.0625"))
            elif kind == "bash":
                if python:  # the page's snippets so far run before its next command
                    _python(python, work, env, page)
                    python = []
                for command in commands(text):
                    if command in SKIP:
                        continue
                    if command in CHECK:
                        args = dict(a.split("=", 1) for a in shlex.split(command) if "=" in a)
                        if "--config.init_checkpoint" in args:  # a PyTorch file of the named architecture
                            _pytorch_file(args.get("--config.model.name", "resnet18"),
                                          work / args["--config.init_checkpoint"])
                        if args.get("--config.checkpoint", "").startswith("robustbench:"):  # in its layout
                            from rwsjax.models import robustbench
                            name = args["--config.checkpoint"].split(":", 1)[1]
                            folder = work / "models" / "cifar10" / "Linf"
                            folder.mkdir(parents=True, exist_ok=True)
                            _pytorch_file(robustbench.MODELS[("cifar10", "Linf")][name][0], folder / f"{name}.pt")
                        p = _run(command, str(work), offline)
                        last = (p.stderr.strip().splitlines() or [""])[-1]
                        assert p.returncode == 2 and " is not prepared in " in last, (page, command, p.stderr[-3000:])
                        continue
                    smoke = _smoke(command)
                    p = _run(smoke, str(work), env)
                    assert p.returncode == 0, (page, smoke, (p.stdout + p.stderr)[-4000:])
                    ran.append(smoke)
        if python:
            _python(python, work, env, page)
    assert any(c.startswith("rwsjax run --config=rift:smoke") for c in ran)


def _pytorch_file(architecture: str, path) -> None:
    import jax
    import numpy as np

    from rwsjax.models import pytorch_io
    from rwsjax.models.registry import create_model

    model = create_model(architecture, num_classes=10)
    variables = model.init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3), np.float32), train=False)
    pytorch_io.save_state_dict(pytorch_io.export_state_dict(variables), str(path))


def _python(snippets: list[str], work, env, page: str) -> None:
    script = work / f"snippet_{os.path.basename(page)}.py"
    script.write_text("\n".join(snippets))
    p = subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, (page, (p.stdout + p.stderr)[-4000:])



def test_every_config_field_the_docs_name_exists():
    """A ``--config.a.b`` anywhere in README/docs prose is a field of a packaged config (bad_inputs.md shows typos
    on purpose)."""
    from rwsjax.configs import evaluate, rift, rws

    configs = [module.get_config(preset) for module in (rift, rws, evaluate) for preset in module.PRESETS]

    def has(config, path):
        node = config
        for part in path.split("."):
            if not hasattr(node, "keys") or part not in node:
                return False
            node = node[part]
        return True

    missing = set()
    for page in PAGES:
        if page == "docs/bad_inputs.md":
            continue
        with open(os.path.join(ROOT, page)) as f:
            for m in re.finditer(r"--config\.([A-Za-z_][\w.]*)", f.read()):
                path = m.group(1).rstrip(".")
                if path != "FIELD" and not any(has(c, path) for c in configs):
                    missing.add((page, path))
    assert not missing, sorted(missing)
