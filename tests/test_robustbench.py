"""RobustBench models by name against the ``robustbench`` package itself (``pip install --no-deps robustbench``).

The package's architecture files (``model_zoo/architectures/{dm_wide_resnet,wide_resnet,resnet}.py``, which
import only torch) are loaded by path, and its model table (``model_zoo/cifar10.py``, ``cifar100.py``, which
import timm and more) is read as source: every entry of :data:`rwsjax.models.robustbench.MODELS` is built from
the package's own ``'model'`` expression and compared with the rwsjax model — parameter names and shapes, input
normalization, activation — and each architecture family gives the same logits for random weights.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
_spec = importlib.util.find_spec("robustbench")
pytestmark = pytest.mark.skipif(_spec is None, reason="needs the robustbench package (pip install --no-deps robustbench)")

from rwsjax.models import pytorch_io as pio  # noqa: E402
from rwsjax.models import robustbench as rb  # noqa: E402
from rwsjax.models.registry import create_model  # noqa: E402

ZOO = os.path.join(list(_spec.submodule_search_locations)[0], "model_zoo") if _spec else ""


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"rb_{name}", os.path.join(ZOO, "architectures", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=None)
def _namespace() -> dict:
    dm, wrn, res = _load("dm_wide_resnet"), _load("wide_resnet"), _load("resnet")
    ns = {"torch": torch, "nn": torch.nn, "F": torch.nn.functional}
    for module in (res, wrn, dm):  # dm last: its constants
        ns.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
    return ns


@functools.lru_cache(maxsize=None)
def _table(dataset: str) -> dict:
    """``{threat: {name: model expression source}}`` and the class definitions of the package's table file."""
    tree = ast.parse(open(os.path.join(ZOO, f"{dataset}.py")).read())
    threats = {"linf": "Linf", "l2": "L2", "common_corruptions": "corruptions"}
    table, classes = {}, {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            classes[node.name] = node
        elif (isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) in threats
              and isinstance(node.value, ast.Call) and node.value.args):
            for item in node.value.args[0].elts:
                name, fields = item.elts
                model = [v for k, v in zip(fields.keys, fields.values) if getattr(k, "value", None) == "model"][0]
                table.setdefault(threats[node.targets[0].id], {})[name.value] = model
    return table, classes


def _build(dataset: str, threat: str, name: str):
    """The package's network for an entry, its parameters allocated but not initialized (a WRN-106-16 in ms)."""
    table, classes = _table(dataset)
    ns = dict(_namespace())
    expr = table[threat][name]
    for used in {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)} & set(classes):
        exec(compile(ast.Module([classes[used]], []), dataset, "exec"), ns)
    make = eval(compile(ast.Expression(expr), dataset, "eval"), ns)
    keep = (torch.nn.Conv2d.reset_parameters, torch.nn.Linear.reset_parameters, torch.Tensor.normal_)
    torch.nn.Conv2d.reset_parameters = torch.nn.Linear.reset_parameters = lambda self: None
    torch.Tensor.normal_ = lambda self, *a, **k: self
    try:
        return make()
    finally:
        torch.nn.Conv2d.reset_parameters, torch.nn.Linear.reset_parameters, torch.Tensor.normal_ = keep


@functools.lru_cache(maxsize=None)
def _ours(arch: str, num_classes: int) -> dict:
    model = create_model(arch, num_classes=num_classes)
    like = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False))
    return {e.torch_name: e.torch_shape for e in pio._entries(like)[0]}


ENTRIES = [(d, t, n) for (d, t), names in rb.MODELS.items() for n in names]


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_every_entry_is_the_packages_model(dataset):
    """Per entry: the package's network has exactly our parameter/statistic names and shapes (TRADES'
    unused ``sub_block1`` aside), our normalization constants and our activation (Swish/SiLU or ReLU)."""
    num_classes = {"cifar10": 10, "cifar100": 100}[dataset]
    table, _ = _table(dataset)
    checked = 0
    for d, threat, name in ENTRIES:
        if d != dataset:
            continue
        assert name in table[threat], (threat, name)
        net = _build(dataset, threat, name)
        arch, (mean, std) = rb.MODELS[(d, threat)][name]
        theirs = {k: tuple(v.shape) for k, v in net.state_dict().items()
                  if not k.endswith("num_batches_tracked") and k not in ("mu", "sigma")
                  and not k.startswith("sub_block1.")}
        assert theirs == _ours(arch, num_classes), (threat, name, arch)
        buffers = dict(net.named_buffers())
        if "mu" in buffers:
            have = (buffers["mu"].flatten().tolist(), buffers["sigma"].flatten().tolist())
        elif isinstance(getattr(net, "mean", None), torch.Tensor):
            have = (net.mean.flatten().tolist(), net.std.flatten().tolist())
        else:
            have = ([0.0] * 3, [1.0] * 3)
        np.testing.assert_allclose(have, (mean, std), rtol=0, atol=1e-7, err_msg=f"{threat} {name}")
        swish = any(type(m).__name__ in ("Swish", "SiLU") for m in net.modules())
        assert swish == arch.endswith("_swish"), (threat, name, arch)
        checked += 1
    assert checked == sum(1 for d, _, _ in ENTRIES if d == dataset) > 20


def _randomized(net, images):
    import torch_models
    return torch_models.randomize(net, torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), seed=3)


FAMILIES = {  # rwsjax name: the package's class, with the arguments that make it the same network
    "dm_wrn16_2_swish": lambda ns: ns["DMWideResNet"](depth=16, width=2, activation_fn=ns["Swish"]),
    "dm_wrn16_2_relu": lambda ns: ns["DMWideResNet"](depth=16, width=2, activation_fn=torch.nn.ReLU),
    "dm_preact_resnet18_swish": lambda ns: ns["DMPreActResNet"](depth=18, activation_fn=ns["Swish"]),
    "wrn16_2": lambda ns: ns["WideResNet"](depth=16, widen_factor=2, sub_block1=True),
    "preact_resnet18_rb": lambda ns: ns["PreActResNet"](ns["PreActBlock"], [2, 2, 2, 2]),
    "preact_resnet18": lambda ns: ns["PreActResNet"](ns["PreActBlockV2"], [2, 2, 2, 2], bn_before_fc=True),
    "resnet50": lambda ns: ns["ResNet"](ns["Bottleneck"], [3, 4, 6, 3]),
}
DM_NORM = {"dm_wrn16_2_swish", "dm_wrn16_2_relu", "dm_preact_resnet18_swish"}  # normalize inside (CIFAR-10)


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_same_logits_as_the_packages_class(arch, cifar_test_batch):
    """Random weights and BN statistics in the package's class, imported into ours: the same logits on 16
    real images (eval mode)."""
    x = np.asarray(cifar_test_batch[0][:16], np.float32) / 255.0
    net = _randomized(FAMILIES[arch](_namespace()), x)
    mean, std = rb.C10 if arch in DM_NORM else rb.NONE
    model = create_model(arch, num_classes=10, mean=mean, std=std)
    like = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False))
    result = pio.import_variables({k: v.numpy() for k, v in net.state_dict().items()}, like)
    assert all(i.startswith("sub_block1.") for i in result.ignored)
    with torch.no_grad():
        theirs = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    ours = np.asarray(jax.jit(lambda v, xx: model.apply(v, xx, train=False))(result.variables, x))
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())
    assert np.abs(theirs).max() > 0.1


def test_robustbench_checkpoint_by_name(tmp_path, cifar_test_batch, capsys):
    """``--config.checkpoint=robustbench:Wong2020Fast`` with ``--config.model_dir``: the file RobustBench keeps
    (``{"state_dict": {"module." + key: ...}}`` under ``cifar10/Linf/``) is found, the architecture and
    normalization are set from the name, and the loaded model gives the package model's logits."""
    from rwsjax.config_validation import resolve_defaults
    from rwsjax.configs import evaluate
    from rwsjax.workflows.common import build_model, init_variables, load_model

    x = np.asarray(cifar_test_batch[0][:8], np.float32) / 255.0
    net = _randomized(_build("cifar10", "Linf", "Wong2020Fast"), x)
    folder = tmp_path / "models" / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    torch.save({"state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, folder / "Wong2020Fast.pt")

    config = evaluate.get_config("cpu")
    config.checkpoint, config.model_dir = "robustbench:Wong2020Fast", str(tmp_path / "models")
    resolve_defaults(config)
    assert config.model.name == "preact_resnet18_rb" and tuple(config.model.mean) == rb.C10[0]
    assert config.checkpoint == str(folder / "Wong2020Fast.pt")
    assert "[robustbench] robustbench:Wong2020Fast: preact_resnet18_rb" in capsys.readouterr().out
    model, example = build_model(config, "cifar10")
    variables = load_model(config.checkpoint, init_variables(model, example, 0), model)
    assert "does not state its input normalization" not in capsys.readouterr().out
    with torch.no_grad():
        theirs = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    ours = np.asarray(jax.jit(lambda v, xx: model.apply(v, xx, train=False))(variables, x))
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())

    import rwsjax  # the same file through the library
    model, variables = rwsjax.load("robustbench:Wong2020Fast", model_dir=str(tmp_path / "models"))
    again = np.asarray(jax.jit(lambda v, xx: model.apply(v, xx, train=False))(variables, x))
    np.testing.assert_allclose(again, ours, rtol=0, atol=1e-6)


def test_unknown_name_and_missing_file_are_one_line(tmp_path):
    from rwsjax import workflows
    from rwsjax.config_validation import ConfigError
    from rwsjax.configs import evaluate

    config = evaluate.get_config("cpu")
    config.model_dir = str(tmp_path)
    config.checkpoint = "robustbench:Carmon2019Unlabele"
    with pytest.raises(ConfigError, match="close: Carmon2019Unlabeled"):
        workflows.validate(config)
    config.checkpoint = "robustbench:Carmon2019Unlabeled"
    with pytest.raises(ConfigError, match=r"cifar10/Linf/Carmon2019Unlabeled.pt does not exist; RobustBench "
                                          r"downloads it there with: python -c \"from robustbench.utils"):
        workflows.validate(config)
    config.checkpoint = "robustbench:Gowal2020Uncovering_extra"  # an L2 model of CIFAR-10, ℓ∞ of CIFAR-100
    with pytest.raises(ConfigError, match="cifar10/L2, cifar100/Linf, not of cifar10/Linf"):
        workflows.validate(config)
