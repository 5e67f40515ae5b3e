"""Tests for the CIFAR model zoo (rwsjax.models)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rwsjax.models import (CIFAR10_MEAN, CIFAR10_STD, MODELS, create_model,
                           flax_path_to_torch_name)

WIDTH = 0.25
#: Thinner test widths for the bigger models (keeps the eager tests fast).
WIDTHS = {"resnet50": 0.125, "vgg16": 0.125, "resnet50_imagenet": 0.125, "wrn28_10": 0.0625, "wrn34_20": 0.03125,
          "dm_wrn28_10_swish": 0.0625, "dm_wrn70_16_swish": 0.03125}
NUM_CLASSES = 7
BATCH = 2
#: Models without BatchNorm (no "batch_stats" collection).
NO_BN = {"vgg16"}

EXPECTED_PARAMS = {
    "resnet18": 11_173_962,
    "resnet34": 21_282_122,
    # kuangliu PreActResNet18 (11,171,146) + final `bn` (512 scale + 512 bias).
    "preact_resnet18": 11_172_170,
    "wrn34_10": 46_160_474,
    "wrn28_10": 36_479_194,
    "wrn34_20": 184_531_674,
    # RobustBench's PreActResNet (PreActBlock, no final BN) = kuangliu PreActResNet18.
    "preact_resnet18_rb": 11_171_146,
    # RobustBench DMWideResNet / DMPreActResNet (3x3 shortcut convs).
    "dm_wrn28_10_swish": 36_479_194,
    "dm_wrn70_16_swish": 266_796_506,
    "dm_preact_resnet18_swish": 12_548_426,
    # kuangliu ResNet50 (Bottleneck, [3, 4, 6, 3]).
    "resnet50": 23_520_842,
    # VGG-16 conv features without BN (14,714,688) + 512*10 + 10 head.
    "vgg16": 14_714_688 + 512 * 10 + 10,
    # torchvision ResNet-50 / ResNet-18 (25,557,032 / 11,689,512 with 1000 classes) with a 10-class fc.
    "resnet50_imagenet": 25_557_032 - 2048 * 990 - 990,
    "resnet18_imagenet": 11_689_512 - 512 * 990 - 990,
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
            names.append(flax_path_to_torch_name(keys[:-1]))
    return names


@pytest.fixture(scope="module", params=sorted(MODELS))
def built(request):
    name = request.param
    model = create_model(name, num_classes=NUM_CLASSES,
                         width_multiplier=WIDTHS.get(name, WIDTH))
    x = _images(jax.random.key(1))
    variables = model.init(_key(0), x, train=False)
    return name, model, variables, x


def test_registry_names():
    assert MODELS == {"resnet18", "resnet34", "resnet50", "preact_resnet18", "preact_resnet18_rb",
                      "wrn28_10", "wrn34_10", "wrn34_20", "dm_wrn28_10_swish", "dm_wrn70_16_swish",
                      "dm_preact_resnet18_swish", "vgg16", "resnet18_imagenet", "resnet50_imagenet"}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_param_counts_at_full_width(name):
    model = create_model(name, num_classes=10)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    assert set(shapes) == ({"params"} if name in NO_BN else {"params", "batch_stats"})
    n = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes["params"]))
    assert n == EXPECTED_PARAMS[name]
    assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(shapes["params"]))


def test_forward_train_eval(built):
    name, model, variables, x = built
    if name in NO_BN:
        assert set(variables) == {"params"}
    else:
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
    if name in NO_BN:
        # Flax returns no collection that was never created ...
        assert not updates
        chex.assert_trees_all_equal(train_logits, logits)
        # ... but an empty one passed in comes back (the train step's case).
        _, updates = model.apply({**variables, "batch_stats": {}}, x, train=True,
                                 mutable=["batch_stats"])
        assert updates == {"batch_stats": {}}
        return
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
    plain = create_model(name, num_classes=NUM_CLASSES,
                         width_multiplier=WIDTHS.get(name, WIDTH),
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


def _key_tree(tree):
    """Nested dict keys in insertion order (``jax.tree.map`` would sort them)."""
    return {k: _key_tree(v) if isinstance(v, dict) else None for k, v in tree.items()}


def _shapes(name, width=0.125, num_classes=10):
    """Abstract ``init`` output plus the params dict as built (creation order).

    ``jax.eval_shape`` returns key-sorted dicts, so the module creation order
    is captured inside the trace, where ``init``'s insertion order survives.
    """
    model = create_model(name, num_classes=num_classes, width_multiplier=width)
    created = {}

    def init():
        variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
        created.update(_key_tree(variables["params"]))
        return variables

    return jax.eval_shape(init), created


def test_vgg16_names_and_shapes():
    shapes, created = _shapes("vgg16")  # base width 8
    assert set(shapes) == {"params"}
    params = shapes["params"]
    conv_idx = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    # torchvision `features` indices, created in forward order, then the head.
    assert list(created) == [f"features_{i}" for i in conv_idx] + ["classifier"]
    names = _torch_names(params)
    assert names == sorted([f"features.{i}" for i in conv_idx] + ["classifier"])
    assert len(names) == 14
    assert sorted(_torch_names(params, leaf="bias")) == sorted(names)  # convs have bias
    widths = [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]
    c_in = 3
    for i, c in zip(conv_idx, widths):
        assert params[f"features_{i}"]["kernel"].shape == (3, 3, c_in, c)
        assert params[f"features_{i}"]["bias"].shape == (c,)
        c_in = c
    assert params["classifier"]["kernel"].shape == (64, 10)
    assert flax_path_to_torch_name(("features_28", "kernel")) == "features.28.kernel"


def test_resnet50_names_and_shapes():
    shapes, created = _shapes("resnet50")  # base width 8
    params = shapes["params"]
    names = _torch_names(params)
    # stem + 16 bottlenecks x 3 convs + 4 projection shortcuts = 53 convs, + linear.
    assert len(names) == 1 + 16 * 3 + 4 + 1 == 54 == len(set(names))
    assert sum(n.endswith("shortcut.0") for n in names) == 4
    for i in range(1, 5):
        assert f"layer{i}.0.shortcut.0" in names
    assert set(params) == ({"conv1", "bn1", "linear"}
                           | {f"layer{i + 1}_{j}" for i, n in enumerate((3, 4, 6, 3))
                              for j in range(n)})
    assert list(created)[:3] == ["conv1", "bn1", "layer1_0"]
    assert list(created)[-2:] == ["layer4_2", "linear"]
    assert list(created["layer1_0"]) == ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3",
                                         "shortcut_0", "shortcut_1"]
    assert list(created["layer3_5"]) == ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3"]
    assert "layer2.0.shortcut.1" in _torch_names(params, leaf="scale")
    assert set(shapes["batch_stats"]["layer1_0"]) == {"bn1", "bn2", "bn3", "shortcut_1"}
    # Expansion 4: layer1 maps 8 -> 32 channels, layer2 32 -> 64 with stride on conv2.
    l1, l2 = params["layer1_0"], params["layer2_0"]
    assert l1["conv1"]["kernel"].shape == (1, 1, 8, 8)
    assert l1["conv3"]["kernel"].shape == (1, 1, 8, 32)
    assert l1["shortcut_0"]["kernel"].shape == (1, 1, 8, 32)
    assert l2["conv1"]["kernel"].shape == (1, 1, 32, 16)
    assert l2["conv2"]["kernel"].shape == (3, 3, 16, 16)
    assert l2["shortcut_0"]["kernel"].shape == (1, 1, 32, 64)
    assert params["linear"]["kernel"].shape == (256, 10)


def test_resnet50_stride_and_spatial_shapes():
    model = create_model("resnet50", num_classes=10, width_multiplier=0.125)
    variables, _ = _shapes("resnet50")
    x = jax.ShapeDtypeStruct((BATCH, 32, 32, 3), jnp.float32)
    _, inter = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, capture_intermediates=True,
                                 mutable=["intermediates"]), variables, x)
    out = {k: v["__call__"][0].shape for k, v in inter["intermediates"].items()
           if k.startswith("layer") and k.endswith("_0")}
    assert out == {"layer1_0": (BATCH, 32, 32, 32), "layer2_0": (BATCH, 16, 16, 64),
                   "layer3_0": (BATCH, 8, 8, 128), "layer4_0": (BATCH, 4, 4, 256)}


def test_vgg16_train_and_eval_step_without_batch_stats():
    from rwsjax.train import sharding, steps
    from rwsjax.train.state import TrainState, sgd

    model = create_model("vgg16", num_classes=10, width_multiplier=0.125)
    variables = model.init(_key(0), _images(jax.random.key(1)), train=False)
    assert "batch_stats" not in variables
    mesh = sharding.make_mesh(jax.devices()[:1])
    tx = sgd(0.05, momentum=0.9, weight_decay=5e-4, steps_per_epoch=1)
    state = TrainState.create(variables, tx)
    assert state.batch_stats == {}
    before = jax.device_get(state.params)
    state = sharding.replicate(state, mesh)
    step = steps.make_train_step(model, tx, mesh, regime="standard", augment=False)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(4, dtype=np.int32)
    x, y = sharding.shard_batch((images, labels), mesh)
    state, metrics = step(state, x, y, jax.random.key(0))
    assert int(state.step) == 1
    assert state.batch_stats == {}
    assert np.isfinite(float(metrics["loss"]))
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0
    after = jax.device_get(state.params)
    assert jax.tree.structure(after) == jax.tree.structure(before)
    assert not np.allclose(after["features_0"]["kernel"], before["features_0"]["kernel"])

    evaluate = steps.make_eval_step(model, mesh)
    mask = sharding.shard_batch(np.ones(4, bool), mesh)
    out = evaluate(state.variables, x, y, mask, jax.random.key(1))
    assert "robust" not in out  # a clean-only evaluation step reports no robust count
    assert 0 <= int(out["clean"]) <= 4 and np.isfinite(float(out["loss"]))


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
        create_model("resnet101", num_classes=10)
    with pytest.raises(ValueError):
        create_model("resnet18", num_classes=10, width_multiplier=0.0)
    with pytest.raises(ValueError):
        create_model("resnet18", num_classes=0)
    model = create_model("resnet18", num_classes=10, width_multiplier=0.125)
    with pytest.raises(ValueError):
        model.init(jax.random.key(0), jnp.zeros((32, 32, 3)), train=False)
    with pytest.raises(TypeError):
        model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.uint8), train=False)
