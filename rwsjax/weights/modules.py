"""Modules addressed by the papers' dotted names (``layer2.1.conv2``, ``linear``).

Flax submodules are named ``layer2_1`` / ``shortcut_0`` so that the PyTorch
dotted name of a module is its Flax path joined with ``.`` where every
``_<digits>`` becomes ``.<digits>``.  This file is the single place that
knows that rule; everything else (MRC, fine-tuning masks, reports, signatures)
speaks dotted names.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any

_INDEX = re.compile(r"_(\d+)(?=$|_)")


def dotted_name(path: Sequence[str]) -> str:
    """Flax module path (``("layer2_1", "conv2")``) → dotted name ``layer2.1.conv2``."""
    return ".".join(_INDEX.sub(lambda m: "." + m.group(1), p) for p in path)


def _flat(tree: Mapping, prefix=()):
    for k, v in tree.items():
        if isinstance(v, Mapping):
            yield from _flat(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def call_order(model: nn.Module, variables: PyTree, example: jax.Array) -> list[str]:
    """Dotted names of all submodules in the order a forward pass calls them.

    Args:
      model: a Flax Linen model.
      variables: its ``{"params", "batch_stats"}``.
      example: one input batch ``[B, H, W, C]`` float32 in [0, 1].

    Returns the forward (call) order, which is what "the k shallowest layers"
    and every report use; it differs from ``jax.tree`` order (alphabetical).
    """
    order: list[str] = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and context.module.path:
            name = dotted_name(context.module.path)
            if name not in order:
                order.append(name)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, example)
    return order


def kernels(params: PyTree, order: Sequence[str] | None = None) -> dict[str, tuple[str, ...]]:
    """All conv/dense kernels: ``{dotted module name: params path}``.

    Biases and BatchNorm scales/offsets are excluded (RiFT's MRC and RWS layer
    selection act on kernels only).  With ``order`` (from :func:`call_order`)
    the dict is in forward order; otherwise in pytree order.
    """
    found = {dotted_name(path[:-1]): path for path, _ in _flat(params) if path[-1] == "kernel"}
    if order is None:
        return found
    rank = {n: i for i, n in enumerate(order)}
    missing = [n for n in found if n not in rank]
    if missing:
        raise ValueError(f"kernels {missing} were never called in the forward pass")
    return dict(sorted(found.items(), key=lambda kv: rank[kv[0]]))


def module_of(path: Sequence[str]) -> str:
    """Dotted name of the module owning a leaf path (``(..., "conv2", "kernel")`` → ``...conv2``)."""
    return dotted_name(path[:-1])


def module_mask(tree: PyTree, modules: Sequence[str], *, kernel_only: bool = False) -> PyTree:
    """Boolean pytree: True on the leaves that belong to one of ``modules``.

    Raises:
      ValueError: a name in ``modules`` matches no leaf (lists valid names).
    """
    modules = list(modules)
    seen: set[str] = set()

    def visit(path, _):
        keys = tuple(getattr(k, "key", str(k)) for k in path)
        owner = module_of(keys)
        hit = owner in modules and (not kernel_only or keys[-1] == "kernel")
        if hit:
            seen.add(owner)
        return hit

    mask = jax.tree_util.tree_map_with_path(visit, tree)
    unknown = [m for m in modules if m not in seen]
    if unknown:
        valid = sorted({module_of(p) for p, _ in _flat(tree)})
        raise ValueError(f"unknown module name(s) {unknown}; valid names: {valid}")
    return mask


def get_leaf(tree: PyTree, path: Sequence[str]):
    for k in path:
        tree = tree[k]
    return tree


def set_leaf(tree: PyTree, path: Sequence[str], value) -> PyTree:
    """Return a copy of nested dict ``tree`` with ``path`` replaced by ``value``."""
    if not path:
        return value
    out = dict(tree)
    out[path[0]] = set_leaf(tree[path[0]], path[1:], value)
    return out


def num_params(tree: PyTree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def global_norm(tree: PyTree) -> jax.Array:
    """Frobenius (ℓ2) norm of all leaves together, float32 scalar."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))
