"""RWS extraction, quantization and patching against a PyTorch transliteration of the official code.

Reference (VITA-Group/Robust_Weight_Signatures, commit 4c796da), transliterated line by line in
`official_decompose` (CUDA calls dropped): ``model_patching.py`` ``decompose`` (lines 23-72) with
``tools.py`` ``select_layers`` (206-255: on VGG-16 the first ``keep_num`` conv layers' weight and bias, on
ResNet-50 the stem and the first ``keep_num`` − 1 bottleneck blocks) and ``get_projection`` (74-85), and
``quantize_utils/func.py`` ``linear_quant`` (11-32: ``n_nums`` levels, ``clamp=False``) with
``quant_utils.py`` ``AffineQuantize`` (round).  The official patch for corruptions c with weights λ_c is
θ_patched + Σ_c λ_c · proj⊥((θ_c − θ_pre)·λ_c): λ enters twice (docs/protocols.md); on ResNets every BN and
downsample tensor is the robust models' mean.

rwsjax: `extract` (projection per tensor) + `quantize` / `dequantize` (``bits`` = log2 of the official
``--quantization`` levels) + `patch` with λ_c² for the official λ_c, and, for the ResNet-50 of the official
code, `select_blocks` + `patch(..., lambda_twice=True, transplant_from=...)` (``protocol=official``).  The
state dicts are those of rwsjax's VGG-16 (×0.25) and torchvision-layout ResNet-50 (×0.125): θ_pre at
initialization, θ_clean and θ_c as θ_pre plus correlated random updates (the arithmetic does not depend on
how the models were trained).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

K = 3  # keep_num


def select_layers(state_dict, keep_num):
    """``tools.py:206-218`` (``arch='vgg16'``)."""
    num = 0
    key_list = []
    for key in state_dict.keys():
        if len(state_dict[key].shape) == 4:
            num += 1
            key_list.append('features.' + key.split('.')[1] + '.weight')
            key_list.append('features.' + key.split('.')[1] + '.bias')
            if num == keep_num:
                break
    return key_list


def get_projection(a, param):
    """``tools.py:74-85`` (the matrix branch)."""
    assert len(a.shape) == 1
    a = a.reshape(1, -1)
    projection_matrix = (a.T.matmul(a)) / (a.matmul(a.T))
    projections = projection_matrix.matmul(param.T).T
    return param - projections


def linear_quant(x, n_nums, min=0., max=1.):
    """``quantize_utils/func.py:11-32`` with ``clamp=False, inplace=False``."""
    scale = n_nums - 1
    x = (x - min) / (max - min)
    x = torch.round(x * scale - 0) / scale
    x = x * (max - min) + min
    return x


def official_decompose(state_dicts, pretrained_weight, patched_weight, base_weight, weight, keep_num,
                       quantization=None, select=None):
    """``model_patching.py:23-72`` (``only_backbone=True``, ``quantization_method='linear'``); ``select``: the
    ``select_layers`` branch (VGG-16's by default, `select_layers_resnet50` for the ResNet)."""
    key_list = (select or select_layers)(state_dicts[0], keep_num)
    new_dict = {}
    for key in state_dicts[0].keys():
        if ('bn' in key or 'downsample' in key) and 'num' not in key:
            new_dict[key] = torch.mean(torch.stack([state[key] for state in state_dicts], dim=0), dim=0)
        elif key in key_list:
            param = torch.stack([(state[key] - pretrained_weight[key]) * weight[idx]
                                 for idx, state in enumerate(state_dicts)], dim=0)
            param = param.reshape(len(state_dicts), -1)
            vectors = get_projection((base_weight[key] - pretrained_weight[key]).flatten(), param)
            if quantization:
                vectors = linear_quant(vectors, quantization, min=torch.min(vectors).detach().item(),
                                       max=torch.max(vectors).detach().item())
            vector_combinations = torch.sum(torch.diag(weight).matmul(vectors), dim=0)
            new_dict[key] = vector_combinations.reshape_as(pretrained_weight[key]) + patched_weight[key]
        else:
            new_dict[key] = patched_weight[key]
    return new_dict


@pytest.fixture(scope="module")
def models():
    """θ_pre, θ_clean, θ_c (params trees of VGG-16 ×0.25) and rwsjax's conv layers in forward order."""
    import jax
    import jax.numpy as jnp

    from rwsjax.models.registry import create_model
    from rwsjax.rws.signatures import conv_modules
    from rwsjax.weights.modules import call_order

    model = create_model("vgg16", num_classes=10, width_multiplier=0.25)
    pre = jax.device_get(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False))
    rng = np.random.default_rng(0)
    shared = jax.tree.map(lambda p: 0.02 * rng.standard_normal(p.shape).astype(np.float32), pre)
    clean = jax.tree.map(lambda p, s: p + s, pre, shared)
    robust = jax.tree.map(lambda p, s: p + 0.7 * s + 0.01 * rng.standard_normal(p.shape).astype(np.float32),
                          pre, shared)
    layers = conv_modules(pre["params"], call_order(model, pre, np.zeros((1, 32, 32, 3), np.float32)))
    return pre, clean, robust, layers


def _torch_state(variables):
    """The PyTorch twin's ``state_dict`` (its order is the forward order ``select_layers`` walks)."""
    import torch_models
    from rwsjax.models import pytorch_io
    twin = torch_models.vgg16(width=0.25)
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in pytorch_io.export_state_dict(variables).items()},
                         strict=True)
    return {k: v.clone() for k, v in twin.state_dict().items()}


@pytest.mark.parametrize("lam,levels", [(1.0, None), (0.6, None), (1.0, 16), (0.6, 256)])
def test_patch_equals_the_official_decompose(models, lam, levels):
    """One corruption, keep_num = 3: the official patched state dict equals θ_clean + λ²·RWS from rwsjax
    (λ² because the official code applies λ twice; at λ = 1 the two conventions agree), float32 and
    quantized to 16 / 256 levels (rwsjax 4 / 8 bits) — every tensor, to float32 rounding."""
    from rwsjax.rws.patching import patch
    from rwsjax.rws.signatures import dequantize, extract, make_signature, quantize, select_shallowest

    pre, clean, robust, layers = models
    modules = select_shallowest(layers, K)
    tensors = extract(robust["params"], pre["params"], clean["params"], modules=modules)
    if levels:
        bits = int(np.log2(levels))
        tensors = {k: dequantize(quantize(v, bits)) for k, v in tensors.items()}
    sig = make_signature(tensors, architecture="vgg16", width_multiplier=0.25, num_classes=10, base=pre["params"])
    ours = _torch_state(patch(clean, [(sig, lam * lam)]))

    official = official_decompose([_torch_state(robust)], _torch_state(pre), _torch_state(clean),
                                  _torch_state(clean), torch.tensor([lam]), K, quantization=levels)
    patched = select_layers(_torch_state(pre), K)
    clean_state = _torch_state(clean)
    assert sorted(patched) == sorted(f"{m}.{leaf}" for m in modules for leaf in ("weight", "bias"))
    for key, value in official.items():
        theirs, mine, base = value.numpy(), ours[key].numpy(), clean_state[key].numpy()
        if key not in patched:
            np.testing.assert_array_equal(mine, base, err_msg=key)  # unpatched tensors kept bit for bit
            continue
        change = np.abs(theirs - base).max()
        assert change > 1e-4, key
        diff = np.abs(mine - theirs)
        if levels:  # a value on a rounding tie can land one level apart (other float order): rare
            step = float(np.abs(theirs - base).max()) / (levels - 1)
            assert (diff > 1e-5 * change + 1e-7).mean() < 1e-3 and diff.max() <= 2.1 * step, key
        else:
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5 * change + 1e-7, err_msg=key)


def test_projection_is_the_official_matrix_form(models):
    """`project_out` (dot-product form) equals ``get_projection`` (the D×D projection matrix) per tensor."""
    from rwsjax.rws.signatures import project_out

    pre, clean, robust, _ = models
    kernel = lambda t: np.asarray(t["params"]["features_0"]["kernel"], np.float64)  # noqa: E731
    v, a = kernel(robust) - kernel(pre), kernel(clean) - kernel(pre)
    ref = get_projection(torch.from_numpy(a.ravel()), torch.from_numpy(v.reshape(1, -1))).numpy()[0]
    np.testing.assert_allclose(project_out(v, a).ravel(), ref, rtol=1e-5, atol=1e-8)
    assert abs(float(np.dot(project_out(v, a).ravel(), a.ravel()))) < 1e-6 * np.linalg.norm(a) * np.linalg.norm(v)


# --------------------------------------------------------------------------- ResNet (protocol=official)

def select_layers_resnet50(state_dict, keep_num):
    """``tools.py:206-255`` (``arch='resnet50'``): the stem and the first keep_num − 1 bottleneck blocks."""
    num = 0
    key_list = []
    for key in state_dict.keys():
        if 'layer' in key and 'conv1' in key:
            num += 1
            identifier = key[:9]
            key_list.append(identifier + 'conv1.weight')
            key_list.append(identifier + 'bn1.weight')
            key_list.append(identifier + 'bn1.bias')
            key_list.append(identifier + 'conv2.weight')
            key_list.append(identifier + 'bn2.weight')
            key_list.append(identifier + 'bn2.bias')
            key_list.append(identifier + 'conv3.weight')
            key_list.append(identifier + 'bn3.weight')
            key_list.append(identifier + 'bn3.bias')
            key_list.append(identifier + 'downsample.0.weight')
            key_list.append(identifier + 'downsample.1.weight')
            key_list.append(identifier + 'downsample.1.bias')
        elif 'conv1' in key:
            num += 1
            key_list.append('conv1.weight')
            key_list.append('bn1.weight')
            key_list.append('bn1.bias')
        if num == keep_num:
            break
    return key_list


@pytest.fixture(scope="module")
def resnet50_zoo():
    """θ_pre, θ_clean and two θ_c of rwsjax's torchvision-layout ResNet-50 at width ×0.125, BN running
    statistics included (every model has its own), and its conv layers in forward order."""
    import jax
    import jax.numpy as jnp

    from rwsjax.models.registry import create_model
    from rwsjax.rws.signatures import conv_modules
    from rwsjax.weights.modules import call_order

    model = create_model("resnet50_imagenet", num_classes=10, width_multiplier=0.125)
    x = np.zeros((1, 64, 64, 3), np.float32)
    pre = jax.device_get(model.init(jax.random.PRNGKey(0), jnp.asarray(x), train=False))
    rng = np.random.default_rng(1)
    noise = lambda p, s: (s * rng.standard_normal(p.shape)).astype(np.float32)  # noqa: E731
    shared = jax.tree.map(lambda p: noise(p, 0.02), pre)
    clean = jax.tree.map(lambda p, d: p + d, pre, shared)
    robust = [jax.tree.map(lambda p, d: p + 0.6 * d + noise(p, 0.01) + 0.1 * abs(noise(p, 1.0)), pre, shared)
              for _ in range(2)]  # "+ |noise|": running variances stay positive
    layers = conv_modules(pre["params"], call_order(model, pre, x))
    return pre, clean, robust, layers


def _tv_state(variables):
    import torch_models
    from rwsjax.models import pytorch_io
    twin = torch_models.tv_resnet50(width=0.125, num_classes=10)
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in pytorch_io.export_state_dict(variables).items()},
                         strict=False)
    return {k: v.clone() for k, v in twin.state_dict().items()}


@pytest.mark.parametrize("lams,mode", [((0.6,), "sum"), ((1.0, 1.0), "mean"), ((0.8, 0.8), "mean")])
def test_official_protocol_patch_equals_the_official_decompose_on_resnet50(resnet50_zoo, lams, mode):
    """``protocol=official`` on the official code's own ResNet: keep_num = 3 units (the stem and two bottleneck
    blocks, `select_blocks`), λ applied twice (the mean's λ/C squared), every BN tensor — running statistics
    included — and every downsample tensor the mean over the robust models; all other tensors θ_clean's."""
    from rwsjax.rws.patching import patch, transplant_modules
    from rwsjax.rws.signatures import extract, make_signature, select_blocks

    pre, clean, robust, layers = resnet50_zoo
    robust = robust[: len(lams)]
    modules = select_blocks(layers, 3, shortcuts=False)
    assert modules == ["conv1"] + [f"layer1.{b}.conv{i}" for b in (0, 1) for i in (1, 2, 3)]
    sigs = [make_signature(extract(r["params"], pre["params"], clean["params"], modules=modules),
                           architecture="resnet50_imagenet", width_multiplier=0.125, num_classes=10,
                           base=pre["params"], corruption=f"c{i}") for i, r in enumerate(robust)]
    ours = _tv_state(patch(clean, list(zip(sigs, lams)), mode=mode, lambda_twice=True, transplant_from=robust))

    weight = torch.tensor(lams) / (len(lams) if mode == "mean" else 1)
    official = official_decompose([_tv_state(r) for r in robust], _tv_state(pre), _tv_state(clean),
                                  _tv_state(clean), weight, 3, select=select_layers_resnet50)
    clean_state = _tv_state(clean)
    transplanted = [k for k in official if ("bn" in k or "downsample" in k) and "num" not in k]
    assert {k.rsplit(".", 1)[0] for k in transplanted} == set(transplant_modules(clean))
    assert len(transplanted) > 100
    for key, value in official.items():
        if "num_batches_tracked" in key:
            continue
        theirs, mine, base = value.numpy(), ours[key].numpy(), clean_state[key].numpy()
        if key in transplanted or key.rsplit(".", 1)[0] in modules:
            change = np.abs(theirs - base).max()
            assert change > 1e-4, key
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5 * change + 1e-7, err_msg=key)
        else:
            np.testing.assert_array_equal(mine, base, err_msg=key)


def test_blocks_count_units_and_equal_layers_on_vgg(models, resnet50_zoo):
    """`select_blocks` on VGG-16 is `select_shallowest` (every conv a unit), as ``select_layers`` there; on
    ResNet-50 a unit is the stem or a whole block, with its shortcut unless left out."""
    from rwsjax.rws.signatures import count_blocks, select_blocks, select_shallowest
    *_, vgg_layers = models
    assert select_blocks(vgg_layers, 5) == select_shallowest(vgg_layers, 5)
    *_, layers = resnet50_zoo
    assert count_blocks(layers) == 1 + 3 + 4 + 6 + 3
    assert select_blocks(layers, 2) == ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.0.conv3",
                                        "layer1.0.downsample.0"]
    assert select_blocks(layers, 17) == layers
    with pytest.raises(ValueError, match="k must be in 1..17"):
        select_blocks(layers, 18)
