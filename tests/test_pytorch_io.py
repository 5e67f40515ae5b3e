"""rwsjax.models.pytorch_io: PyTorch state_dict import/export against PyTorch twins of every model.

For each registered architecture a PyTorch twin in its source repository's layout (tests/torch_models.py)
gets random weights and BatchNorm statistics; its ``state_dict()`` is imported and must give the same logits
on real CIFAR-10 images and the same PGD-10 robust accuracy; the export loads back into the twin with
``strict=True``. The file-format, prefix, normalization and error tests need no torch where possible.
"""

from __future__ import annotations

import dataclasses
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rwsjax.attacks.pgd import pgd
from rwsjax.models import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, MODELS, create_model
from rwsjax.models import pytorch_io as pio

K = 10


@dataclasses.dataclass(frozen=True)
class Arch:
    """A PyTorch twin (``tests/torch_models.py`` factory + kwargs) of a registered model and its test setup.

    ``norm``: "normalize" (advertorch buffers ``normalize.mean/std``, as in RWS), "mu_sigma" (RobustBench
    buffers), "outside" (no buffers: the caller normalizes with known constants, which the rwsjax model is
    given), "none" (TRADES: raw [0, 1] input; the rwsjax model gets mean 0, std 1). ``eps`` (pixel units ×255):
    random networks are far less robust than trained ones, so ε is set per architecture for PGD-10 to leave
    some but not all of the 64 images correct.
    """

    factory: str
    width: float
    norm: str
    eps255: float
    mean: tuple = CIFAR10_MEAN
    std: tuple = CIFAR10_STD
    kwargs: dict = dataclasses.field(default_factory=dict)


ARCHS = {
    "resnet18": Arch("resnet18", 0.125, "mu_sigma", 0.1),
    "resnet34": Arch("resnet34", 0.0625, "normalize", 0.05),
    "resnet50": Arch("resnet50", 0.0625, "normalize", 0.03, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
    "preact_resnet18": Arch("preact_resnet18", 0.125, "outside", 0.1),
    # widths max(1, round(0.025 * (16, 160, 320, 640))) = 1, 4, 8, 16: block1 keeps its convShortcut.
    "wrn34_10": Arch("WideResNet", 0.025, "none", 0.2, (0.0,) * 3, (1.0,) * 3, {"depth": 34, "widen_factor": 10}),
    "vgg16": Arch("vgg16", 0.0625, "normalize", 0.2),
    "resnet50_imagenet": Arch("tv_resnet50", 0.0625, "normalize", 0.05, IMAGENET_MEAN, IMAGENET_STD),
    "resnet18_imagenet": Arch("tv_resnet18", 0.125, "outside", 0.2, IMAGENET_MEAN, IMAGENET_STD),
}


def _pgd_kwargs(arch):
    eps = arch.eps255 / 255
    return dict(eps=eps, step_size=eps / 4, steps=10)


def test_every_registered_model_has_a_twin():
    """Here, or (the RobustBench architectures) the robustbench package's own classes in test_robustbench."""
    from test_robustbench import FAMILIES
    robustbench = {"wrn28_10", "wrn34_20", "preact_resnet18_rb", "dm_wrn28_10_swish", "dm_wrn70_16_swish",
                   "dm_preact_resnet18_swish"}  # FAMILIES holds a smaller member of each family
    assert set(ARCHS) | robustbench == set(MODELS)
    assert {"dm_preact_resnet18_swish", "preact_resnet18_rb"} <= set(FAMILIES)


def _like(name, width, num_classes=K):
    model = create_model(name, num_classes=num_classes, width_multiplier=width)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))


@pytest.fixture(scope="module")
def torch_mod():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)  # tiny convs: more threads only add contention
    import torch_models
    return torch, torch_models


@pytest.fixture(scope="module")
def images(cifar_test_batch):
    x, _ = cifar_test_batch
    return np.asarray(x, np.float32) / 255.0


def _nchw(torch, x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _upsample(x, size):
    return x if size == x.shape[1] else np.repeat(np.repeat(x, size // x.shape[1], 1), size // x.shape[2], 2)


class Twin:
    """A randomized PyTorch twin, its import into rwsjax, and both frameworks' logits and PGD-10 results."""

    def __init__(self, name, torch, tm, images):
        arch = self.arch = ARCHS[name]
        self.name, self.torch, self.tm = name, torch, tm
        self.sizes = (32, 64) if name.endswith("_imagenet") else (32,)  # Tiny-ImageNet is 64x64
        self.make = lambda **extra: getattr(tm, arch.factory)(
            width=arch.width, num_classes=K, norm=arch.norm if arch.norm in ("normalize", "mu_sigma") else None,
            mean=arch.mean, std=arch.std, **arch.kwargs, **extra)
        m = torch.tensor(arch.mean, dtype=torch.float32).view(1, 3, 1, 1)
        s = torch.tensor(arch.std, dtype=torch.float32).view(1, 3, 1, 1)
        pre = (lambda x: (x - m) / s) if arch.norm == "outside" else (lambda x: x)
        xs = {size: _upsample(images, size) for size in self.sizes}
        self.net = tm.randomize(self.make(), [_nchw(torch, x) for x in xs.values()], seed=sum(map(ord, name)),
                                preprocess=pre)
        self.torch_fn = lambda x: self.net(pre(x))
        self.state_dict = {k: v.numpy() for k, v in self.net.state_dict().items()}

        # The import under test; the buffers (if any) give the normalization constants.
        self.like = _like(name, arch.width)
        self.result = pio.import_variables(self.state_dict, self.like)
        buffers = arch.norm in ("normalize", "mu_sigma")
        self.mean, self.std = (self.result.mean, self.result.std) if buffers else (arch.mean, arch.std)
        model = create_model(name, num_classes=K, width_multiplier=arch.width, mean=self.mean, std=self.std)
        v = self.result.variables

        # Logits at every size; PGD-10 at 32x32 on labels = the torch model's own predictions (clean acc 100 %).
        with torch.no_grad():
            self.torch_logits = {size: self.torch_fn(_nchw(torch, x)).numpy() for size, x in xs.items()}
        self.labels = self.torch_logits[32].argmax(1)
        kw = _pgd_kwargs(arch)
        x_adv = tm.pgd(self.torch_fn, _nchw(torch, images), torch.from_numpy(self.labels), **kw)
        with torch.no_grad():
            self.torch_robust = self.torch_fn(x_adv).numpy().argmax(1) == self.labels

        def clean_and_adversarial(v, x, y):  # one compiled program per architecture
            logits_fn = lambda z: model.apply(v, z, train=False)
            x_adv = pgd(logits_fn, x, y, None, random_init=False, unroll=False, **kw)
            return logits_fn(x), logits_fn(x_adv)

        clean, adv = jax.jit(clean_and_adversarial)(v, images, jnp.asarray(self.labels, jnp.int32))
        self.jax_logits = {32: np.asarray(clean)}
        self.jax_robust = np.asarray(adv).argmax(1) == self.labels
        for size in self.sizes[1:]:
            self.jax_logits[size] = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(v, xs[size]))


@pytest.fixture(scope="module", params=sorted(ARCHS))
def twin(request, torch_mod, images):
    return Twin(request.param, *torch_mod, images)


def test_import_matches_torch_logits(twin):
    r = twin.result
    if twin.arch.norm in ("normalize", "mu_sigma"):
        assert np.allclose(r.mean, twin.arch.mean) and np.allclose(r.std, twin.arch.std)
    else:
        assert r.mean is None and r.std is None
    if twin.name == "wrn34_10":  # TRADES' unused sub_block1 is dropped by default
        assert r.ignored and all(k.startswith("sub_block1.") for k in r.ignored)
    else:
        assert r.ignored == ()
    assert r.kept == () and r.stripped_prefixes == ()
    chex.assert_trees_all_equal_shapes_and_dtypes(r.variables, twin.like)
    for size in twin.sizes:
        want, got = twin.torch_logits[size], twin.jax_logits[size]
        assert np.abs(want - got).max() <= 1e-4, (size, np.abs(want - got).max())
        # The comparison means something: logits vary and several classes are predicted.
        assert want.std() > 0.5 and len(set(want.argmax(1))) >= 5, (want.std(), set(want.argmax(1)))


def test_pgd_robust_accuracy_matches_torch(twin):
    assert (twin.jax_logits[32].argmax(1) == twin.labels).all()  # clean accuracy 100 % in rwsjax, too
    n_t, n_j = int(twin.torch_robust.sum()), int(twin.jax_robust.sum())
    assert 0 < n_t < len(twin.labels), n_t  # some, not all, survive
    # Both attacks take the sign of gradients that agree to float32 rounding; a gradient entry within
    # rounding of 0 can get opposite signs, which may flip one example sitting on the decision boundary.
    assert (twin.torch_robust != twin.jax_robust).sum() <= 1, (n_t, n_j)


def test_export_roundtrip_and_strict_load(twin, images):
    torch = twin.torch
    keys = {"normalize": ("normalize.mean", "normalize.std"), "mu_sigma": ("mu", "sigma")}.get(twin.arch.norm)
    kw = {}
    if keys:
        kw = dict(mean=twin.mean, std=twin.std, normalization_keys=keys,
                  normalization_shape=(3,) if twin.arch.norm == "normalize" else (1, 3, 1, 1))
    sd = pio.export_state_dict(twin.result.variables, **kw)
    again = pio.import_variables(sd, twin.like)
    chex.assert_trees_all_equal(again.variables, twin.result.variables)
    assert (again.mean, again.std) == (twin.result.mean, twin.result.std)
    assert all(v.dtype == np.int64 and v.shape == () for k, v in sd.items() if k.endswith("num_batches_tracked"))
    fresh = twin.make(sub_block1=False) if twin.name == "wrn34_10" else twin.make()
    assert set(sd) == set(fresh.state_dict())
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    fresh.eval()
    for name, p in fresh.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            assert torch.equal(p, twin.net.state_dict()[name]), name
    x = _upsample(images, twin.sizes[-1])
    with torch.no_grad():
        a = twin.net(_nchw(torch, x)).numpy()
        b = fresh(_nchw(torch, x)).numpy()
    chex.assert_trees_all_equal(a, b)


# ---------------------------------------------------------------- format, prefixes, normalization, errors
# These use an rwsjax-initialized ResNet-18 exported to PyTorch names: no torch needed.


def _random_variables(like, seed=0):
    """Random float32 values in the structure of ``like`` (no jit/init compile needed); variances positive."""
    rng = np.random.default_rng(seed)
    out = jax.tree.map(lambda s: rng.normal(0, 0.5, s.shape).astype(np.float32), like)
    if "batch_stats" in out:
        out["batch_stats"] = jax.tree.map(np.abs, out["batch_stats"])
    return out


@pytest.fixture(scope="module")
def small():
    """A ResNet-18 (width x0.125) with random variables and their PyTorch export."""
    variables = _random_variables(_like("resnet18", 0.125))
    return variables, pio.export_state_dict(variables)


def test_export_names_layouts(small):
    variables, sd = small
    # Modules in the order of `variables` (here key-sorted by jax.tree.map), PyTorch's order inside a module.
    assert list(sd)[:6] == ["bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                            "bn1.num_batches_tracked", "conv1.weight"]
    assert sd["conv1.weight"].shape == (8, 3, 3, 3) and sd["linear.weight"].shape == (K, 64)
    np.testing.assert_array_equal(sd["layer2.0.shortcut.0.weight"],
                                  variables["params"]["layer2_0"]["shortcut_0"]["kernel"].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(sd["layer2.0.shortcut.1.running_var"],
                                  variables["batch_stats"]["layer2_0"]["shortcut_1"]["var"])
    assert all(v.flags.c_contiguous for v in sd.values())


def test_safetensors_roundtrip_without_torch(small, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    variables, sd = small
    path = tmp_path / "m.safetensors"
    pio.save_state_dict(pio.export_state_dict(variables, mean=CIFAR10_MEAN, std=CIFAR10_STD), path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left behind
    read = pio.read_state_dict(path)
    assert set(read) == set(sd) | {"normalize.mean", "normalize.std"}  # (safetensors sorts the names)
    like = _like("resnet18", 0.125)
    r = pio.load_pytorch_checkpoint(path, like)
    chex.assert_trees_all_equal(r.variables, variables)
    chex.assert_trees_all_close(r.mean, CIFAR10_MEAN, atol=1e-7)
    chex.assert_trees_all_close(r.std, CIFAR10_STD, atol=1e-7)
    with pytest.raises(ImportError, match="pip install torch --index-url"):
        pio.save_state_dict(sd, tmp_path / "m.pt")
    (tmp_path / "m.pt").write_bytes(b"x")
    with pytest.raises(ImportError, match="pip install torch --index-url"):
        pio.read_state_dict(tmp_path / "m.pt")


def test_bad_files(small, tmp_path):
    _, sd = small
    with pytest.raises(ValueError, match=r"m\.npz.*'\.npz'"):
        pio.read_state_dict(tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"'\.h5'"):
        pio.save_state_dict(sd, tmp_path / "m.h5")
    with pytest.raises(FileNotFoundError):
        pio.read_state_dict(tmp_path / "absent.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="bad.safetensors"):
        pio.read_state_dict(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod.", "model."])
def test_prefixes(small, prefix):
    variables, sd = small
    r = pio.import_variables({prefix + k: v for k, v in sd.items()}, _like("resnet18", 0.125))
    chex.assert_trees_all_equal(r.variables, variables)
    assert "".join(r.stripped_prefixes) == prefix


def test_normalization_buffers(small):
    variables, sd = small
    like = _like("resnet18", 0.125)
    mu = np.asarray(CIFAR10_MEAN, np.float32)
    sigma = np.asarray(CIFAR10_STD, np.float32)
    # RobustBench attribute buffers [1, 3, 1, 1] ...
    r = pio.import_variables({**sd, "mu": mu.reshape(1, 3, 1, 1), "sigma": sigma.reshape(1, 3, 1, 1)}, like)
    assert r.mean == tuple(float(v) for v in mu) and r.std == tuple(float(v) for v in sigma)
    # ... and RobustBench's normalize_model: Sequential(normalize=ImageNormalizer, model=net).
    rb = {"normalize.mean": mu.reshape(1, 3, 1, 1), "normalize.std": sigma.reshape(1, 3, 1, 1),
          **{"model." + k: v for k, v in sd.items()}}
    r = pio.import_variables(rb, like)
    chex.assert_trees_all_equal(r.variables, variables)
    assert r.stripped_prefixes == ("model.",) and r.mean == tuple(float(v) for v in mu)
    # MadryLab robustness: module.{model.*, normalizer.new_mean/new_std, attacker.*} (attacker.* to be ignored).
    ml = {"module.normalizer.new_mean": mu.reshape(3, 1, 1), "module.normalizer.new_std": sigma.reshape(3, 1, 1),
          **{"module.model." + k: v for k, v in sd.items()}, **{"module.attacker.model." + k: v for k, v in sd.items()}}
    r = pio.import_variables(ml, like, ignore=("attacker.*",))
    chex.assert_trees_all_equal(r.variables, variables)
    assert r.mean == tuple(float(v) for v in mu) and len(r.ignored) == len(sd)
    with pytest.raises(ValueError, match=r"normalize.mean=.*not per-channel constants in \[0, 1\]"):  # [0, 255] scale is not [0, 1]
        pio.import_variables({**sd, "normalize.mean": mu * 255, "normalize.std": sigma * 255}, like)
    with pytest.raises(ValueError, match="conflicting normalization"):
        pio.import_variables({**sd, "mu": mu, "sigma": sigma, "normalize.mean": mu, "normalize.std": sigma * 2},
                             like)
    with pytest.raises(ValueError, match="unknown keys.*: mu"):  # half a pair is just an unknown key
        pio.import_variables({**sd, "mu": mu}, like)


def test_errors_name_every_problem(small):
    _, sd = small
    like = _like("resnet18", 0.125)
    bad = dict(sd)
    del bad["layer3.1.bn2.running_var"]
    bad["head.weight"] = np.zeros((3, 3), np.float32)
    bad["layer2.0.conv1.weight"] = np.zeros((16, 8, 5, 5), np.float32)
    with pytest.raises(ValueError) as e:
        pio.import_variables(bad, like)
    msg = str(e.value)
    assert "unknown keys (1): head.weight" in msg
    assert "missing keys (1): layer3.1.bn2.running_var" in msg
    assert "layer2.0.conv1.weight: file [16, 8, 5, 5] vs model [16, 8, 3, 3]" in msg
    assert "model.width_multiplier" in msg
    # One problem at a time, too.
    with pytest.raises(ValueError, match=r"missing keys \(1\): linear.bias"):
        pio.import_variables({k: v for k, v in sd.items() if k != "linear.bias"}, like)
    with pytest.raises(ValueError, match=r"unknown keys \(1\): extra.weight"):
        pio.import_variables({**sd, "extra.weight": sd["linear.weight"]}, like)
    with pytest.raises(ValueError, match=r"linear.weight: file \[7, 64\] vs model \[10, 64\] \(number of classes\)"):
        pio.import_variables({**sd, "linear.weight": np.zeros((7, 64), np.float32),
                              "linear.bias": np.zeros(7, np.float32)}, like)
    with pytest.raises(ValueError, match="linear.weight: dtype int32"):
        pio.import_variables({**sd, "linear.weight": sd["linear.weight"].astype(np.int32)}, like)
    # A wrong architecture lists everything by name and hints at the configuration.
    with pytest.raises(ValueError, match=r"(?s)missing keys.*layer1.0.conv3.weight.*shape mismatches.*model.name"):
        pio.import_variables(sd, _like("resnet50", 0.125))


def test_partial_keeps_a_head_with_other_classes(small):
    variables, sd = small
    like = _random_variables(_like("resnet18", 0.125, num_classes=7), seed=1)  # concrete values to keep
    r = pio.import_variables(sd, like, partial=True)
    assert r.kept == ("linear.weight", "linear.bias")
    chex.assert_trees_all_equal(r.variables["params"]["linear"], like["params"]["linear"])
    chex.assert_trees_all_equal(r.variables["params"]["layer4_1"], variables["params"]["layer4_1"])
    chex.assert_trees_all_equal(r.variables["batch_stats"], variables["batch_stats"])
    headless = {k: v for k, v in sd.items() if not k.startswith("linear.")}
    assert pio.import_variables(headless, like, partial=True).kept == ("linear.weight", "linear.bias")
    with pytest.raises(ValueError, match="holds no values"):  # abstract `like` has nothing to keep
        pio.import_variables(sd, jax.eval_shape(lambda: like), partial=True)
    with pytest.raises(ValueError, match=r"layer1.0.conv1.weight: file"):  # partial is only about the head
        pio.import_variables({**sd, "layer1.0.conv1.weight": np.zeros((8, 8, 1, 1), np.float32)}, like,
                             partial=True)


def test_dtypes_become_float32(small):
    variables, sd = small
    like = _like("resnet18", 0.125)
    r = pio.import_variables({k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in sd.items()}, like)
    chex.assert_trees_all_equal(r.variables, variables)  # float32 -> float64 -> float32 is exact
    half = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in sd.items()}
    r = pio.import_variables(half, like)
    assert all(a.dtype == np.float32 for a in jax.tree.leaves(r.variables))
    np.testing.assert_array_equal(r.variables["params"]["conv1"]["kernel"],
                                  half["conv1.weight"].astype(np.float32).transpose(2, 3, 1, 0))


def test_vgg_without_batch_stats():
    like = _like("vgg16", 0.125)
    assert "batch_stats" not in like
    variables = jax.tree.map(lambda s: np.full(s.shape, 0.5, s.dtype), like)
    sd = pio.export_state_dict(variables)
    assert not any("running" in k or "num_batches" in k for k in sd)
    assert "features.28.bias" in sd and "classifier.weight" in sd
    chex.assert_trees_all_equal(pio.import_variables(sd, like).variables, variables)
    chex.assert_trees_all_equal(pio.import_variables(sd, {**like, "batch_stats": {}}).variables,
                                {**variables, "batch_stats": {}})


def test_torch_files_and_containers(torch_mod, small, tmp_path):
    torch, _ = torch_mod
    variables, sd = small
    like = _like("resnet18", 0.125)
    tensors = {k: torch.from_numpy(v) for k, v in sd.items()}
    chex.assert_trees_all_equal(pio.import_variables(tensors, like).variables, variables)  # live torch tensors
    pio.save_state_dict(sd, tmp_path / "a.pt")
    chex.assert_trees_all_equal(pio.load_pytorch_checkpoint(tmp_path / "a.pt", like).variables, variables)
    for container in ("state_dict", "model_state_dict", "model", "net"):
        torch.save({container: tensors, "epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "b.pth")
        chex.assert_trees_all_equal(pio.load_pytorch_checkpoint(tmp_path / "b.pth", like).variables, variables)
    torch.save({"ema": tensors, "epoch": 3}, tmp_path / "c.ckpt")
    with pytest.raises(ValueError, match=r"c.ckpt: not a state_dict of tensors.*'ema'"):
        pio.read_state_dict(tmp_path / "c.ckpt")
    chex.assert_trees_all_equal(
        pio.load_pytorch_checkpoint(tmp_path / "c.ckpt", like, container_key="ema").variables, variables)
    # bfloat16 (torch and safetensors files) becomes float32.
    bf = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in tensors.items()}
    torch.save(bf, tmp_path / "d.pt")
    from safetensors.torch import save_file
    save_file(bf, str(tmp_path / "d.safetensors"))
    want = {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in bf.items()}
    for f in ("d.pt", "d.safetensors"):
        got = pio.read_state_dict(tmp_path / f)
        chex.assert_trees_all_equal(got, want)
    # A pickled nn.Module is refused by weights_only=True, with advice.
    torch.save(torch.nn.Linear(2, 2), tmp_path / "e.pt")
    with pytest.raises(ValueError, match=r"e.pt: torch.load\(weights_only=True\) failed.*state_dict\(\)"):
        pio.read_state_dict(tmp_path / "e.pt")
    torch.save({**tensors, "x": torch.zeros(1)}, tmp_path / "f.pt")
    with pytest.raises(ValueError, match=r"(?s)^\S*f.pt: PyTorch state_dict does not fit.*unknown keys \(1\): x$"):
        pio.load_pytorch_checkpoint(tmp_path / "f.pt", like)


def test_imagenet_resnet_param_counts_and_names():
    for name, want in (("resnet50_imagenet", 25_557_032), ("resnet18_imagenet", 11_689_512)):
        like = _like(name, 1.0, num_classes=1000)
        assert sum(int(np.prod(s.shape)) for s in jax.tree.leaves(like["params"])) == want  # = torchvision
    sd = pio.export_state_dict(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), _like("resnet50_imagenet", 0.125)))
    assert "layer2.0.downsample.0.weight" in sd and "layer2.0.downsample.1.running_var" in sd
    assert "layer1.0.downsample.0.weight" in sd and "layer2.1.downsample.0.weight" not in sd
    assert sd["conv1.weight"].shape == (8, 3, 7, 7) and sd["fc.weight"].shape == (K, 256)
