"""Robust Weight Signatures (Cai, Zhang & Wang, ICML 2023): extraction, quantization,
file format, patching and BN re-estimation, checked against their definitions.

No training: θ_pre has random He-normal weights in ``model.init``'s structure; θ_clean / θ_c are θ_pre plus small random updates.
"""

from __future__ import annotations

import copy
import json
import math
import os
import struct

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from rwsjax.models.common import CIFAR10_MEAN, CIFAR10_STD
from rwsjax.models.registry import create_model
from rwsjax.rws import analysis, patching
from rwsjax.rws import signatures as sg
from rwsjax.rws.patching import Patched, SignatureMismatchError, check_compatible, patch
from rwsjax.rws.signatures import SignatureFormatError
from rwsjax.weights.modules import call_order, get_leaf

VGG_CONVS = ["features.0", "features.2", "features.5", "features.7", "features.10", "features.12",
             "features.14", "features.17", "features.19", "features.21", "features.24",
             "features.26", "features.28"]


def _leaves(tree):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def _bit_equal(a, b):
    la, lb = _leaves(a), _leaves(b)
    assert la.keys() == lb.keys()
    for k in la:
        assert la[k].dtype == lb[k].dtype and la[k].shape == lb[k].shape, k
        assert la[k].tobytes() == lb[k].tobytes(), k


def _random_variables(model, seed):
    """Variables with ``model.init``'s structure, filled by numpy (He-normal kernels, small random
    biases, BN scale 1, running mean 0 / var 1).  Avoids compiling ``init`` (its threefry RNG takes
    many seconds to compile on a small CPU)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False))
    rng = np.random.default_rng(seed)

    def fill(path, s):
        leaf = path[-1].key
        if leaf == "kernel":
            return (rng.normal(size=s.shape) * np.sqrt(2.0 / np.prod(s.shape[:-1]))).astype(np.float32)
        if leaf in ("scale", "var"):
            return np.ones(s.shape, np.float32)
        if leaf == "mean":
            return np.zeros(s.shape, np.float32)
        return (0.01 * rng.normal(size=s.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def tiny_resnet18():
    """ResNet-18 at width ×0.125 (base width 8) and random variables (params + batch_stats)."""
    model = create_model("resnet18", num_classes=10, width_multiplier=0.125)
    return model, _random_variables(model, 0)


@pytest.fixture(scope="module")
def vgg():
    """Tiny VGG-16 (width ×0.0625): model, forward order, θ_pre, θ_clean, θ_fog, θ_snow (params)."""
    model = create_model("vgg16", num_classes=10, width_multiplier=0.0625)
    pre = _random_variables(model, 0)["params"]
    rng = np.random.default_rng(1)  # "fine-tuned" copies: θ_pre + a small random update on every leaf
    clean, fog, snow = (jax.tree.map(lambda x: (x + 0.01 * rng.normal(size=x.shape)).astype(np.float32), pre)
                        for _ in range(3))
    order = call_order(model, {"params": pre}, jnp.zeros((1, 32, 32, 3)))
    return model, order, pre, clean, fog, snow


@pytest.fixture(scope="module")
def vgg_sigs(vgg):
    _, order, pre, clean, fog, snow = vgg
    mods = sg.select_shallowest(sg.conv_modules(pre, order), 3)
    make = lambda p, c: sg.make_signature(
        sg.extract(p, pre, clean, modules=mods), architecture="vgg16", width_multiplier=0.0625,
        num_classes=10, base=pre, clean=clean, corruption=c, severity=5, dataset="cifar10")
    return make(fog, "fog"), make(snow, "snow")


# ---------------------------------------------------------------- projection

def test_project_out_is_orthogonal():
    rng = np.random.default_rng(0)
    for shape in [(3, 3, 4, 8), (1000,), (7, 5)]:
        v = rng.normal(size=shape).astype(np.float32)
        a = rng.normal(size=shape).astype(np.float32)
        r = sg.project_out(v, a)
        assert r.dtype == np.float32 and r.shape == shape
        r64, a64, v64 = (x.astype(np.float64).ravel() for x in (r, a, v))
        assert abs(r64 @ a64) <= 1e-5 * np.linalg.norm(r64) * np.linalg.norm(a64)
        # what was removed is exactly the component along a
        np.testing.assert_allclose(v64 - r64, (v64 @ a64) / (a64 @ a64) * a64, atol=1e-5)


def test_project_out_zero_direction_and_hand_case():
    v = np.array([[1.5, -2.0], [0.25, 3.0]], np.float32)
    r = sg.project_out(v, np.zeros_like(v))
    assert not np.isnan(r).any()
    np.testing.assert_array_equal(r, v)
    np.testing.assert_allclose(sg.project_out(np.array([1.0, 1.0]), np.array([1.0, 0.0])), [0.0, 1.0])
    with pytest.raises(ValueError, match="shapes"):
        sg.project_out(np.ones(3), np.ones(4))


# ---------------------------------------------------------------- quantization

def test_quantize_error_and_packing():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1001,)).astype(np.float32) * 0.01  # n not a multiple of 8
    for bits in range(1, 9):
        q = sg.quantize(x, bits)
        assert q.codes_packed.dtype == np.uint8 and q.codes_packed.ndim == 1
        assert q.codes_packed.size == math.ceil(x.size * bits / 8)
        assert q.minimum == x.min()
        np.testing.assert_allclose(q.scale, (float(x.max()) - float(x.min())) / (2 ** bits - 1), rtol=1e-6)
        y = sg.dequantize(q)
        assert y.dtype == np.float32 and y.shape == x.shape
        err = np.abs(y.astype(np.float64) - x)
        assert err.max() <= q.scale / 2 * (1 + 1e-6) + np.spacing(np.abs(x).max()), bits
        codes = sg.unpack_codes(q.codes_packed, bits, x.size)
        assert codes.max() <= 2 ** bits - 1
        np.testing.assert_array_equal(sg.pack_codes(codes, bits), q.codes_packed)
    # the bitstream layout by hand: codes 0,1,2,3 at 2 bits, LSB first → 0b11_10_01_00
    q = sg.quantize(np.array([0.0, 1.0, 2.0, 3.0]), 2)
    assert q.codes_packed.tolist() == [0b11100100] and q.scale == 1.0
    with pytest.raises(ValueError, match="bits"):
        sg.quantize(x, 9)


def test_quantize_constant_tensor_is_exact():
    x = np.full((5, 3), 0.37, np.float32)
    for bits in (1, 4, 8):
        q = sg.quantize(x, bits)
        assert q.scale == 0 and not q.codes_packed.any()
        np.testing.assert_array_equal(sg.dequantize(q), x)


# ---------------------------------------------------------------- extraction

def test_conv_modules_and_select_shallowest(vgg):
    _, order, pre, *_ = vgg
    convs = sg.conv_modules(pre, order)
    assert convs == VGG_CONVS  # forward order, dense head excluded
    assert sg.select_shallowest(convs, 3) == VGG_CONVS[:3]
    assert sg.select_shallowest(convs, None) == VGG_CONVS
    for k in (0, 14, -1):
        with pytest.raises(ValueError, match="1..13"):
            sg.select_shallowest(convs, k)
    with pytest.raises(TypeError):
        sg.select_shallowest(convs, 2.5)


def test_extract_k_shallowest(vgg):
    _, order, pre, clean, fog, _ = vgg
    mods = sg.select_shallowest(sg.conv_modules(pre, order), 3)
    rws = sg.extract(fog, pre, clean, modules=mods)
    assert list(rws) == ["features.0.kernel", "features.0.bias", "features.2.kernel", "features.2.bias",
                         "features.5.kernel", "features.5.bias"]
    plain = sg.extract(fog, pre, None, modules=mods, project=False)
    for name, t in rws.items():
        path = (name.split(".")[0] + "_" + name.split(".")[1], name.split(".")[2])
        v = np.asarray(get_leaf(fog, path), np.float64) - np.asarray(get_leaf(pre, path), np.float64)
        a = np.asarray(get_leaf(clean, path), np.float64) - np.asarray(get_leaf(pre, path), np.float64)
        assert t.dtype == np.float32 and t.shape == v.shape
        np.testing.assert_allclose(plain[name], v, atol=1e-7)
        assert abs(t.astype(np.float64).ravel() @ a.ravel()) <= 1e-5 * np.linalg.norm(t) * np.linalg.norm(a)
        np.testing.assert_allclose(t, sg.project_out(v, a))
    with pytest.raises(ValueError, match="features.99"):
        sg.extract(fog, pre, clean, modules=["features.99"])


def test_fingerprint(vgg):
    _, _, pre, clean, *_ = vgg
    f = sg.fingerprint(pre)
    assert len(f) == 16 and int(f, 16) >= 0
    assert sg.fingerprint(jax.tree.map(jnp.asarray, pre)) == f
    assert sg.fingerprint(clean) != f
    changed = copy.deepcopy(pre)
    changed["classifier"]["bias"][3] += 1e-6
    assert sg.fingerprint(changed) != f


# ---------------------------------------------------------------- patching

def test_patch_equals_definition_and_keeps_input(vgg, vgg_sigs):
    _, _, pre, *_ = vgg
    fog, snow = vgg_sigs
    target = {"params": pre}
    snapshot = copy.deepcopy(target)
    out = patch(target, [(fog, 0.7)])
    assert out is not target and out["params"] is not pre
    for name, path in sg.leaf_index(pre).items():
        new, old = np.asarray(get_leaf(out["params"], path)), np.asarray(get_leaf(pre, path))
        if name in fog.tensors:
            np.testing.assert_allclose(new, old + 0.7 * fog.tensors[name], rtol=1e-6, atol=1e-7)
            assert not np.array_equal(new, old)
        else:
            assert new.tobytes() == old.tobytes()
    # sum vs mean of two signatures
    both = patch(target, [(fog, 0.7), (snow, 1.3)])
    mean = patch(target, [(fog, 0.7), (snow, 1.3)], mode="mean")
    for name in fog.tensors:
        path = sg.leaf_index(pre)[name]
        old = np.asarray(get_leaf(pre, path))
        upd = 0.7 * fog.tensors[name] + 1.3 * snow.tensors[name]
        np.testing.assert_allclose(get_leaf(both["params"], path), old + upd, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(get_leaf(mean["params"], path), old + upd / 2, rtol=1e-6, atol=1e-7)
    _bit_equal(target, snapshot)  # nothing mutated
    with pytest.raises(ValueError, match="mode"):
        patch(target, [(fog, 1.0)], mode="max")


def test_zero_coefficients_are_the_identity(vgg, vgg_sigs):
    _, _, pre, *_ = vgg
    fog, snow = vgg_sigs
    target = {"params": jax.tree.map(jnp.asarray, pre)}
    _bit_equal(patch(target, [(fog, 0.0), (snow, 0.0)]), target)
    _bit_equal(patch(target, [(fog, 0.0)], mode="mean"), target)
    lams, models = zip(*patching.scale_sweep(target, fog, [0.0, 0.5]))
    assert lams == (0.0, 0.5)
    _bit_equal(models[0], target)
    chex.assert_trees_all_close(models[1], patch(target, [(fog, 0.5)]))


def test_patched_remove_is_bit_exact(vgg, vgg_sigs):
    _, _, pre, *_ = vgg
    fog, snow = vgg_sigs
    target = {"params": pre}
    p = Patched(target).add(fog, 0.7).add(snow, 1.3)
    assert len(p) == 2
    assert _leaves(p.variables)["['params']['features_0']['kernel']"].tobytes() != \
        _leaves(target)["['params']['features_0']['kernel']"].tobytes()
    p.remove("snow")
    _bit_equal(p.variables, patch(target, [(fog, 0.7)]))
    p.remove(0)
    _bit_equal(p.variables, target)
    with pytest.raises(KeyError):
        p.remove("fog")
    with pytest.raises(IndexError):
        p.remove(0)


def test_patch_keeps_batch_stats(tiny_resnet18):
    _, variables = tiny_resnet18
    params = variables["params"]
    variables = jax.tree.map(jnp.asarray, variables)  # jax leaves in → jax leaves out
    noisy = jax.tree.map(lambda x: x + 0.01, params)
    rws = sg.extract(noisy, params, None, modules=["conv1", "layer1.0.conv1"], project=False)
    assert list(rws) == ["conv1.kernel", "layer1.0.conv1.kernel"]  # ResNet convs have no bias
    sig = sg.make_signature(rws, architecture="resnet18", width_multiplier=0.125, num_classes=10)
    out = patch(variables, [(sig, 2.0)])
    assert out["batch_stats"] is variables["batch_stats"]
    assert isinstance(out["params"]["conv1"]["kernel"], jax.Array)
    np.testing.assert_allclose(out["params"]["conv1"]["kernel"], params["conv1"]["kernel"] + 0.02, atol=1e-6)


def test_mismatching_signature_is_rejected(vgg, vgg_sigs, tiny_resnet18):
    fog, _ = vgg_sigs
    _, resnet_vars = tiny_resnet18
    with pytest.raises(SignatureMismatchError, match=r"features\.0\.kernel: in the signature but not in the model"):
        check_compatible(fog, resnet_vars)
    with pytest.raises(SignatureMismatchError, match="'vgg16'.*'resnet18'"):
        check_compatible(fog, resnet_vars, architecture="resnet18")
    with pytest.raises(SignatureMismatchError):
        patch(resnet_vars, [(fog, 1.0)])
    with pytest.raises(SignatureMismatchError):
        Patched(resnet_vars).add(fog, 1.0)
    # a wider VGG: only shapes are needed, so eval_shape is enough
    wide = create_model("vgg16", num_classes=10, width_multiplier=0.125)
    wide_vars = jax.eval_shape(lambda: wide.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    with pytest.raises(SignatureMismatchError,
                       match=r"features\.0\.kernel: signature shape \(3, 3, 3, 4\) vs model \(3, 3, 3, 8\)"):
        check_compatible(fog, wide_vars)
    # "first" is in signature order, not alphabetical
    _, _, pre, clean, fog_params, _ = vgg
    rev = sg.make_signature(sg.extract(fog_params, pre, clean, modules=["features.5", "features.0"]),
                            architecture="vgg16", width_multiplier=0.0625, num_classes=10)
    with pytest.raises(SignatureMismatchError, match=r"first mismatching layer features\.5\.kernel"):
        check_compatible(rev, wide_vars)
    check_compatible(fog, {"params": pre}, architecture="vgg16")


# ---------------------------------------------------------------- file format

def _payload_bytes(path):
    with open(path, "rb") as f:
        (header,) = struct.unpack("<Q", f.read(8))
    return os.path.getsize(path) - 8 - header


def test_signature_file_round_trip_and_sizes(vgg, tmp_path):
    _, order, pre, clean, fog, _ = vgg
    mods = sg.conv_modules(pre, order)  # all 13 convs
    rws = sg.extract(fog, pre, clean, modules=mods)
    n_values = sum(t.size for t in rws.values())
    sizes = {}
    for bits in (None, 8, 4, 3):
        sig = sg.make_signature(rws, architecture="vgg16", width_multiplier=0.0625, num_classes=10,
                                base=pre, clean=clean, bits=bits, corruption="fog", severity=5,
                                dataset="cifar10", extra={"note": "test"})
        path = tmp_path / f"fog_{bits}.safetensors"
        sg.save_signature(path, sig)
        back = sg.load_signature(path)
        assert back.meta == sig.meta and back.names == sig.names == list(rws)
        assert back.meta["base_fingerprint"] == sg.fingerprint(pre) and back.bits == bits
        for name in rws:
            assert back.tensors[name].dtype == np.float32
            assert back.tensors[name].tobytes() == sig.tensors[name].tobytes()
        if bits is None:
            for name in rws:
                np.testing.assert_array_equal(back.tensors[name], rws[name])
            assert _payload_bytes(path) == 4 * n_values
        else:
            for name, q in sig.quantized.items():
                np.testing.assert_array_equal(back.quantized[name].codes_packed, q.codes_packed)
            # codes are really packed: ceil(n·b/8) bytes per tensor, plus float32 min and scale
            assert _payload_bytes(path) == sum(math.ceil(t.size * bits / 8) + 8 for t in rws.values())
        sizes[bits] = os.path.getsize(path)
    assert sizes[8] < sizes[None] / 3 and sizes[4] < sizes[8] * 0.6 and sizes[3] < sizes[4]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # atomic write left nothing
    report = analysis.storage_report([tmp_path / "fog_8.safetensors"],
                                     reference_bytes=analysis.full_model_bytes(pre))
    (entry,) = report.values()
    assert entry["bytes"] == sizes[8] and entry["times_smaller"] > 3


def test_corrupt_files_raise_format_error(vgg_sigs, tmp_path):
    fog, _ = vgg_sigs
    good = tmp_path / "fog.safetensors"
    sg.save_signature(good, fog)
    data = good.read_bytes()
    cases = {"truncated.safetensors": data[:-10], "header_cut.safetensors": data[:30],
             "garbage.safetensors": b"this is not a safetensors file at all" * 5, "empty.safetensors": b""}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SignatureFormatError, match=name):
            sg.load_signature(tmp_path / name)
    other = tmp_path / "plain.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(other))
    with pytest.raises(SignatureFormatError, match="rwsjax_signature"):
        sg.load_signature(other)
    # metadata that disagrees with the tensors, or a future format version
    tensors = {k: np.asarray(v) for k, v in fog.tensors.items()}
    meta = dict(fog.meta, layers=dict(fog.meta["layers"], **{"features.0.kernel": [3, 3, 3, 5]}))
    save_file(tensors, str(other), metadata={"rwsjax_signature": json.dumps(meta)})
    with pytest.raises(SignatureFormatError, match=r"features\.0\.kernel"):
        sg.load_signature(other)
    save_file(tensors, str(other), metadata={"rwsjax_signature": json.dumps(dict(fog.meta, format_version=99))})
    with pytest.raises(SignatureFormatError, match="format_version 99"):
        sg.load_signature(other)
    q = sg.make_signature(fog.tensors, architecture="vgg16", width_multiplier=0.0625, num_classes=10, bits=4)
    qt = {f"{k}.codes": v.codes_packed[:-1] for k, v in q.quantized.items()}
    qt.update({f"{k}.{f}": np.asarray(getattr(v, a), np.float32)
               for k, v in q.quantized.items() for f, a in (("min", "minimum"), ("scale", "scale"))})
    save_file(qt, str(other), metadata={"rwsjax_signature": json.dumps(q.meta)})
    with pytest.raises(SignatureFormatError, match="codes"):
        sg.load_signature(other)
    with pytest.raises(FileNotFoundError):
        sg.load_signature(tmp_path / "missing.safetensors")


# ---------------------------------------------------------------- BN re-estimation

def _stem_stats(variables, images):
    """Batch mean / biased variance of the first BN's input, by a hand forward of conv1."""
    x = (images.astype(np.float32) / 255.0 - np.array(CIFAR10_MEAN, np.float32)) / np.array(CIFAR10_STD, np.float32)
    y = jax.lax.conv_general_dilated(jnp.asarray(x), jnp.asarray(variables["params"]["conv1"]["kernel"]),
                                     (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=jax.lax.Precision.HIGHEST)
    y = np.asarray(y, np.float64)
    return y.mean(axis=(0, 1, 2)), y.var(axis=(0, 1, 2))


def test_reestimate_batch_stats(tiny_resnet18):
    model, variables = tiny_resnet18
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8) for _ in range(3)]
    snapshot = copy.deepcopy(jax.device_get(variables))
    out = patching.reestimate_batch_stats(model, variables, iter(batches))
    assert out["params"] is variables["params"]
    _bit_equal(variables, snapshot)
    hand = [_stem_stats(variables, b) for b in batches]
    np.testing.assert_allclose(out["batch_stats"]["bn1"]["mean"], np.mean([m for m, _ in hand], axis=0),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["batch_stats"]["bn1"]["var"], np.mean([v for _, v in hand], axis=0),
                               rtol=1e-4, atol=1e-4)
    # every layer: the cumulative average of the single-batch estimates
    singles = [patching.reestimate_batch_stats(model, variables, [b])["batch_stats"] for b in batches]
    chex.assert_trees_all_close(out["batch_stats"], jax.tree.map(lambda *s: sum(s) / 3, *singles),
                                rtol=1e-4, atol=1e-5)
    # sample weighting (the official bn_update) vs batch weighting with unequal batch sizes
    small = batches[1][:4]
    (m0, _), (m1, _) = hand[0], _stem_stats(variables, small)
    by_sample = patching.reestimate_batch_stats(model, variables, [batches[0], small], weighting="sample")
    np.testing.assert_allclose(by_sample["batch_stats"]["bn1"]["mean"], (8 * m0 + 4 * m1) / 12, rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="uint8"):
        patching.reestimate_batch_stats(model, variables, [batches[0].astype(np.float32)])
    with pytest.raises(ValueError, match="no batches"):
        patching.reestimate_batch_stats(model, variables, [])


def test_reestimate_without_batch_stats_is_a_no_op(vgg):
    model, _, pre, *_ = vgg
    v = {"params": pre}
    assert patching.reestimate_batch_stats(model, v, [np.zeros((2, 32, 32, 3), np.uint8)]) is v
    v2 = {"params": pre, "batch_stats": {}}
    assert patching.reestimate_batch_stats(model, v2, []) is v2


# ---------------------------------------------------------------- analysis

def test_relative_difference_and_cosine(vgg, vgg_sigs):
    _, _, pre, *_ = vgg
    scaled = jax.tree.map(lambda x: x * 1.1, pre)
    rd = analysis.relative_difference(scaled, pre, ["features.0", "classifier"])
    assert list(rd) == ["features.0", "classifier"]
    np.testing.assert_allclose(list(rd.values()), [0.1, 0.1], rtol=1e-5)
    with pytest.raises(ValueError, match="nope"):
        analysis.relative_difference(scaled, pre, ["nope"])
    fog, snow = vgg_sigs
    names, sim = analysis.cosine_similarity_matrix({"fog": fog, "snow": snow, "neg": {
        k: -v for k, v in fog.tensors.items()}})
    assert names == ["fog", "snow", "neg"]
    np.testing.assert_allclose(np.diag(sim), 1.0)
    np.testing.assert_allclose(sim, sim.T)
    np.testing.assert_allclose(sim[0, 2], -1.0, atol=1e-6)
    names, sim = analysis.cosine_similarity_matrix({"a": {"w": np.array([1.0, 0.0])},
                                                    "b": {"w": np.array([0.0, 2.0]), "x": np.ones(2)}})
    np.testing.assert_allclose(sim, [[1.0, 0.0], [0.0, 1.0]])
    assert analysis.full_model_bytes(pre) == 4 * sum(x.size for x in jax.tree.leaves(pre))


def test_official_bn_and_shortcut_rules_on_resnet18():
    """The official patch's BN/shortcut handling by module type on the kuangliu ResNet-18: every BatchNorm and
    both leaves of every projection shortcut; their mean over two models; (1 − λ)·own + λ·re-estimated."""
    model = create_model("resnet18", num_classes=10, width_multiplier=0.0625)
    v = jax.device_get(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False))
    names = patching.transplant_modules(v)
    assert "bn1" in names and "layer2.0.shortcut.0" in names and "layer2.0.shortcut.1" in names
    assert "conv1" not in names and "layer1.0.conv1" not in names and len(names) == 17 + 3 + 3
    assert patching.transplant_modules({"params": {"features_0": {"kernel": np.zeros((3, 3, 3, 4))}}}) == []
    shift = lambda t, c: jax.tree.map(lambda x: x + c, t)  # noqa: E731
    a, b = shift(v, 1.0), shift(v, 3.0)
    out = patching.transplant_mean(v, [a, b], names)
    np.testing.assert_allclose(out["params"]["bn1"]["scale"], v["params"]["bn1"]["scale"] + 2.0, rtol=1e-6)
    np.testing.assert_allclose(out["batch_stats"]["layer2_0"]["shortcut_1"]["var"],
                               v["batch_stats"]["layer2_0"]["shortcut_1"]["var"] + 2.0, rtol=1e-6)
    np.testing.assert_allclose(out["params"]["layer2_0"]["shortcut_0"]["kernel"],
                               v["params"]["layer2_0"]["shortcut_0"]["kernel"] + 2.0, rtol=1e-6)
    assert out["params"]["conv1"] is v["params"]["conv1"]
    with pytest.raises(ValueError, match="not in the target"):
        patching.transplant_mean(v, [a], ["layer9.0.bn1"])
    blended = patching.blend_batch_stats(b, v, 0.25)  # (1 − 0.25)·v + 0.25·(v + 3) = v + 0.75
    np.testing.assert_allclose(blended["batch_stats"]["bn1"]["mean"], v["batch_stats"]["bn1"]["mean"] + 0.75,
                               rtol=1e-6, atol=1e-6)
    assert blended["params"] is b["params"]
    convs = sg.conv_modules(v["params"], call_order(model, v, np.zeros((1, 32, 32, 3), np.float32)))
    assert sg.count_blocks(convs) == 9
    assert sg.select_blocks(convs, 4) == ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1",
                                          "layer1.1.conv2", "layer2.0.conv1", "layer2.0.conv2", "layer2.0.shortcut.0"]
    assert sg.select_blocks(convs, 4, shortcuts=False)[-1] == "layer2.0.conv2"
