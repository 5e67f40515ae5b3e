"""Tests for the CIFAR model zoo (rwsjax.models)."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rwsjax.models import (CIFAR10_MEAN, CIFAR10_STD, MODELS, create_model,
                           flax_path_to_torch_name)

WIDTH = 0.25
NUM_CLASSES = 7
BATCH = 2

EXPECTED_PARAMS = {
    "resnet18": 11_173_962,
    "resnet34": 21_282_122,
    # kuangliu PreActResNet18 (11,171,146) + final `bn` (512 scale + 512 bias).
    "preact_resnet18": 11_172_170,
    "wrn34_10": 46_160_474,
}


def _key(seed):
    # "rbg" keys compile their sampling kernels much faster on CPU than the
    # default threefry, which keeps the eager `model.init` calls cheap.
    return jax.random.key(seed, impl="rbg")


def _images(key, size=32, batch=BATCH):
    return jax.random.uniform(key, (batch, size, size, 3), jnp.float32)


def _torch_names(params, leaf="kernel"):
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    names = []
    for path, _ in flat:
        keys = [p.key for p in path]
        if keys[-1] == leaf:
            names.append(re.sub(r"_(\d+)", r".\1", ".".join(keys[:-1])))
    return names


@pytest.fixture(scope="module", params=sorted(MODELS))
def built(request):
    name = request.param
    model = create_model(name, num_classes=NUM_CLASSES, width_multiplier=WIDTH)
    x = _images(jax.random.key(1))
    variables = model.init(_key(0), x, train=False)
    return name, model, variables, x


def test_registry_names():
    assert MODELS == {"resnet18", "resnet34", "preact_resnet18", "wrn34_10"}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_param_counts_at_full_width(name):
    model = create_model(name, num_classes=10)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    assert set(shapes) == {"params", "batch_stats"}
    n = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes["params"]))
    assert n == EXPECTED_PARAMS[name]
    assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(shapes["params"]))


def test_forward_train_eval(built):
    name, model, variables, x = built
    assert set(variables) == {"params", "batch_stats"}
    logits = model.apply(variables, x, train=False)
    chex.assert_shape(logits, (BATCH, NUM_CLASSES))
    chex.assert_type(logits, jnp.float32)
    chex.assert_tree_all_finite(logits)
    # Eval mode is deterministic.
    chex.assert_trees_all_equal(logits, model.apply(variables, x, train=False))

    train_logits, updates = model.apply(variables, x, train=True,
                                        mutable=["batch_stats"])
    chex.assert_shape(train_logits, (BATCH, NUM_CLASSES))
    chex.assert_type(train_logits, jnp.float32)
    assert set(updates) == {"batch_stats"}
    chex.assert_trees_all_equal_structs(updates["batch_stats"],
                                        variables["batch_stats"])
    old = jax.tree.leaves(variables["batch_stats"])
    new = jax.tree.leaves(updates["batch_stats"])
    assert all(not np.allclose(a, b) for a, b in zip(old, new))


def test_larger_input(built):
    name, model, variables, _ = built
    x64 = _images(jax.random.key(2), size=64)
    logits = model.apply(variables, x64, train=False)
    chex.assert_shape(logits, (BATCH, NUM_CLASSES))
    chex.assert_type(logits, jnp.float32)


def test_normalization_inside(built):
    name, model, variables, x = built
    plain = create_model(name, num_classes=NUM_CLASSES, width_multiplier=WIDTH,
                         mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    x_norm = (x - jnp.asarray(CIFAR10_MEAN)) / jnp.asarray(CIFAR10_STD)
    chex.assert_trees_all_close(model.apply(variables, x, train=False),
                                plain.apply(variables, x_norm, train=False),
                                atol=1e-5, rtol=1e-5)


def test_resnet18_kernel_names():
    model = create_model("resnet18", num_classes=10, width_multiplier=WIDTH)
    variables = model.init(_key(0), _images(jax.random.key(1)), train=False)
    names = _torch_names(variables["params"])
    assert len(names) == 21 == len(set(names))
    for n in ("conv1", "layer1.0.conv1", "layer2.0.shortcut.0", "layer3.0.shortcut.0",
              "layer4.0.shortcut.0", "layer4.1.conv2", "linear"):
        assert n in names
    assert not any("layer1.0.shortcut" in n for n in names)
    bn = _torch_names(variables["params"], leaf="scale")
    assert "bn1" in bn and "layer2.0.shortcut.1" in bn
    # Base width 16 at multiplier 0.25.
    assert variables["params"]["conv1"]["kernel"].shape == (3, 3, 3, 16)
    assert variables["params"]["layer2_0"]["shortcut_0"]["kernel"].shape == (1, 1, 16, 32)
    # Helper implements the same rule.
    assert flax_path_to_torch_name(("layer2_0", "shortcut_0", "kernel")) == \
        "layer2.0.shortcut.0.kernel"


def test_preact_and_wrn_names():
    pre = create_model("preact_resnet18", num_classes=10, width_multiplier=WIDTH)
    shapes = jax.eval_shape(lambda: pre.init(jax.random.key(0),
                                             jnp.zeros((1, 32, 32, 3)), train=False))
    names = _torch_names(shapes["params"])
    assert len(names) == 21
    assert "layer2.0.shortcut.0" in names and "linear" in names
    assert "bn" in _torch_names(shapes["params"], leaf="scale")
    assert set(shapes["params"]["layer2_0"]) == {"bn1", "shortcut_0", "conv1",
                                                 "bn2", "conv2"}

    wrn = create_model("wrn34_10", num_classes=10, width_multiplier=WIDTH)
    shapes = jax.eval_shape(lambda: wrn.init(jax.random.key(0),
                                             jnp.zeros((1, 32, 32, 3)), train=False))
    names = _torch_names(shapes["params"])
    # conv1 + 3 stages x 5 blocks x 2 convs + 3 shortcut convs + fc.
    assert len(names) == 1 + 30 + 3 + 1
    for n in ("conv1", "block1.layer.0.convShortcut", "block3.layer.4.conv2", "fc"):
        assert n in names
    assert "bn1" in _torch_names(shapes["params"], leaf="scale")
    assert shapes["params"]["block3"]["layer_4"]["conv2"]["kernel"].shape == \
        (3, 3, 160, 160)


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = create_model("resnet18", num_classes=10, width_multiplier=WIDTH,
                         dtype=jnp.bfloat16)
    x = jax.ShapeDtypeStruct((BATCH, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, train=False), x)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
    logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    chex.assert_shape(logits, (BATCH, 10))
    assert logits.dtype == jnp.float32


def test_errors():
    with pytest.raises(ValueError, match="resnet18"):
        create_model("resnet50", num_classes=10)
    with pytest.raises(ValueError):
        create_model("resnet18", num_classes=10, width_multiplier=0.0)
    with pytest.raises(ValueError):
        create_model("resnet18", num_classes=0)
    model = create_model("resnet18", num_classes=10, width_multiplier=0.125)
    with pytest.raises(ValueError):
        model.init(jax.random.key(0), jnp.zeros((32, 32, 3)), train=False)
    with pytest.raises(TypeError):
        model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.uint8), train=False)
