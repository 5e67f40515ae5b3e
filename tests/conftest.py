"""Shared fixtures: a tiny ResNet-18 and real CIFAR-10 images from TFDS_DATA_DIR."""

from __future__ import annotations

import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

DATA_DIR = os.environ.get("TFDS_DATA_DIR")
# Every training / evaluation / MRC loop in the tests (and the pipelines they start) runs its per-step work
# under jax.transfer_guard("disallow"): an implicit host<->device copy per step fails the test (dispatch.guard).
os.environ.setdefault("RWSJAX_TRANSFER_GUARD", "disallow")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One persistent XLA compilation cache for the whole test run: the xdist workers and every rwsjax process
# the tests start (pipelines killed and resumed, multi-process runs) compile each program once.  The process
# that starts the run (the xdist controller, or a plain pytest) makes a fresh directory, which the workers and
# subprocesses inherit through the environment, and removes it at the end: every run compiles from scratch
# once, and two runs on one machine do not share it.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="rwsjax-tests-xla-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")


def pytest_unconfigure(config):
    if _OWN_CACHE and not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def reference_autoattack():
    """``(torch, pyautoattack)``, the official AutoAttack code as a test reference; skips the test without them."""
    torch = pytest.importorskip("torch")
    try:
        import pyautoattack
        import pyautoattack.autopgd_base  # noqa: F401
    except ImportError:
        pytest.skip("needs pyautoattack (pip install --no-deps pyautoattack)")
    return torch, pyautoattack


def have_cifar10() -> bool:
    return bool(DATA_DIR) and os.path.isdir(os.path.join(DATA_DIR, "cifar10"))


needs_data = pytest.mark.skipif(not have_cifar10(), reason="set TFDS_DATA_DIR to a dir holding prepared cifar10")


@pytest.fixture(scope="session")
def cifar_test_batch():
    """64 real CIFAR-10 test images (uint8 [64,32,32,3]) and labels (int32 [64])."""
    if not have_cifar10():
        pytest.skip("set TFDS_DATA_DIR to a dir holding prepared cifar10")
    from rwsjax.data.sources import load_split
    split = load_split("cifar10", "test", data_dir=DATA_DIR, indices=np.arange(64) * 150, progress=False)
    return split.images, split.labels


@pytest.fixture(scope="session")
def tiny_resnet():
    """ResNet-18 at width ×0.125 (base width 8) and its initial variables."""
    from rwsjax.models.registry import create_model
    model = create_model("resnet18", num_classes=10, width_multiplier=0.125)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(jax.random.PRNGKey(0))
    return model, variables


@pytest.fixture(scope="session")
def trained_tiny_resnet(tiny_resnet, cifar_test_batch):
    """The tiny ResNet after 30 clean SGD steps on the real batch (so its loss and accuracy mean something)."""
    from rwsjax.train import sharding, steps
    from rwsjax.train.state import TrainState, sgd
    model, variables = tiny_resnet
    mesh = sharding.make_mesh(jax.devices()[:1])
    tx = sgd(0.05, momentum=0.9, weight_decay=0.0, steps_per_epoch=1)
    step = steps.make_train_step(model, tx, mesh, regime="standard", augment=False)
    state = sharding.replicate(jax.device_get(TrainState.create(variables, tx)), mesh)
    x, y = sharding.shard_batch(cifar_test_batch, mesh)
    for i in range(30):
        state, _ = step(state, x, y, jax.random.PRNGKey(i))
    return model, jax.device_get(state.variables)
