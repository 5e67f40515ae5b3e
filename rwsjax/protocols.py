"""Where rwsjax's protocol differs from the official code, and the switch that gives the official behaviour.

One table per paper. Each `Deviation` names a config field whose default is
``None`` in the packaged configs; `resolve` fills it with rwsjax's value, or,
under ``--config.protocol=official``, with the official code's. A field set on
the command line is left as it is, so single deviations can be switched one by
one (``--config.mrc.split=test``). ``docs/protocols.md`` is this table
(``tests/test_protocols.py`` checks that it lists every row).

References are to the official repositories at the commits read:
RiFT — microsoft/robustlearn ``RiFT/main.py`` (commit 31580cd);
RWS — VITA-Group/Robust_Weight_Signatures ``model_patching.py``, ``tools.py`` (commit 4c796da).
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["Deviation", "PROTOCOLS", "RIFT", "RWS", "Same", "resolve", "table"]

PROTOCOLS = ("rwsjax", "official")


@dataclasses.dataclass(frozen=True)
class Same:
    """A protocol value that is another config field's (``Same("eval.step_size")``)."""

    field: str

    def __str__(self) -> str:
        return f"= {self.field}"


@dataclasses.dataclass(frozen=True)
class Deviation:
    """One difference between rwsjax and the official code.

    Attributes:
      field: the dotted config field that switches it.
      ours / official: its value under each protocol.
      reference: file and line of the official behaviour.
      official_text / ours_text: what each does, in words.
      why: why rwsjax's default differs.
    """

    field: str
    ours: Any
    official: Any
    reference: str
    official_text: str
    ours_text: str
    why: str


RIFT: tuple[Deviation, ...] = (
    Deviation("mrc.split", "train", "test", "RiFT/main.py:28 (`CIFAR10(train=False)` in `generate_adv_dataset`)",
              "MRC's adversarial examples are crafted from the whole test split",
              "from a seeded subset of the training split (`mrc.num_examples`)",
              "module selection must not see the test split that is reported; under `official` the report says "
              "that selection used the test split"),
    Deviation("mrc.attack_step_size", Same("eval.step_size"), 2 / 225, "RiFT/main.py:20 (`torchattacks.PGD(..., alpha=2/225)`)",
              "PGD-10 crafting step 2/225 (a typo of 2/255)", "the evaluation PGD's step (2/255), as the paper states",
              "the paper states PGD-10 with step 2/255"),
    Deviation("mrc.batch_size", 128, 512, "RiFT/main.py:58 (`DataLoader(..., batch_size=512)`)",
              "ascent batches of 512", "128, the training batch", "fits the `cpu` preset's 512 examples into "
              "several ascent steps per epoch"),
    Deviation("mrc.drop_remainder", True, False, "RiFT/main.py:58 (`DataLoader` keeps the last, smaller batch)",
              "the last, smaller batch is an ascent step too", "only full batches are ascent steps (all "
              "examples count in the loss)", "one compiled ascent program per module"),
    Deviation("mrc.project_every", "step", "epoch", "RiFT/main.py:115-122 (projection after the epoch loop)",
              "Δ projected onto the ε-ball once per epoch", "after every ascent step",
              "Algorithm 1 is projected gradient ascent; per step keeps every iterate feasible"),
    Deviation("mrc.floor", True, False, "RiFT/main.py:104, 142 (`max_loss = 0.0`; MRC = max_loss − origin_loss)",
              "MRC = (largest loss after any epoch) − L(θ_AT); negative when no epoch raised the loss",
              "the maximum includes Δ = 0, so MRC ≥ 0 (Definition 3.1: a max over a ball containing 0)",
              "Definition 3.1"),
)


RWS: tuple[Deviation, ...] = (
    Deviation("signature.k", 5, 7, "model_patching.py:189 (`--keep_num`, default 7)",
              "7 units (the stem and six residual blocks on a ResNet)",
              "the 5 shallowest conv layers (ResNet-18: the stem and the first two blocks)",
              "the RWS paper's figures use k = 5 for VGG-16; the k sweep reports the others"),
    Deviation("signature.layers", "convs", "blocks", "tools.py:219-250 (`select_layers`, `arch='resnet50'`)",
              "on ResNets k counts the stem and the residual blocks, a block bringing all its convs; on VGG-16 "
              "every conv layer (the same as `convs`)",
              "k counts conv layers in forward order (every architecture alike)",
              "one rule for every architecture, and the k sweep moves one layer at a time"),
    Deviation("signature.transplant", False, True, "model_patching.py:35-36 (`'bn' in key or 'downsample' in key`)",
              "every BN tensor (scale, bias, running statistics) and every projection-shortcut tensor of the "
              "patched model is the mean over the robust models of the patch",
              "θ_clean's BN and shortcut tensors are kept: a patch changes only the signature's layers",
              "a signature file is the whole patch (it needs no robust model at patch time), and removal is exact"),
    Deviation("signature.bn", "target", "reestimate_corrupted",
              "model_patching.py:131-145 (`bn_update` on the corrupted training loaders, ResNets)",
              "BN running statistics re-estimated on the training images corrupted by the patch's corruptions",
              "the target's running statistics are kept (a pure weight patch); `reestimate_corrupted` and "
              "`reestimate_clean` are options, with a BN-only row in the table",
              "separates what the weights do from what BN re-estimation does (docs/rws.md)"),
    Deviation("signature.bn_weighting", "batch", "sample", "tools.py:65 (`momentum = b / (n + b)`)",
              "re-estimated statistics weight each batch by its size",
              "every batch weighs the same (PyTorch `momentum=None`)",
              "the same with equal batches; rwsjax's batches are equal but the last"),
    Deviation("signature.bn_blend", False, True, "model_patching.py:142-145 (`if args.alpha < 1`)",
              "for λ < 1 the running statistics are (1 − λ)·patched + λ·re-estimated",
              "the re-estimated statistics as they are, for every λ",
              "a λ sweep then measures the weights' λ alone"),
    Deviation("signature.lambda_twice", False, True, "model_patching.py:39-40, 64 (`* weight[idx]`, "
              "`torch.diag(weight).matmul(vectors)`)",
              "λ multiplies θ_c − θ_pre and again the projected vectors: the patch is θ + λ²·RWS",
              "θ + λ·RWS, the paper's equation", "the paper's equation; at λ = 1 the two agree"),
    Deviation("signature.compose", "sum", "mean", "model_patching.py:121-123 (`weight = args.alpha * weight / "
              "len(state_dicts)`)",
              "a composition of C signatures gives each the weight λ/C (then λ twice: (λ/C)²)",
              "θ + λ·Σ_c RWS_c", "each corruption's signature keeps the strength it has alone"),
)


def resolve(config) -> None:
    """Fills every `Deviation` field (of `RIFT` and `RWS`) that is None with ``config.protocol``'s value (in place).

    Raises:
      ValueError: ``config.protocol`` is not one of `PROTOCOLS`.
    """
    protocol = config.get("protocol", "rwsjax")
    if protocol not in PROTOCOLS:
        raise ValueError(f"config.protocol={protocol!r} is not one of {list(PROTOCOLS)}")
    for d in RIFT + RWS:
        block, key = d.field.split(".")
        if block in config and key in config[block] and config[block][key] is None:
            value = d.official if protocol == "official" else d.ours
            if isinstance(value, Same):
                other_block, other_key = value.field.split(".")
                value = config[other_block][other_key]
            config[block][key] = value


def _value(v) -> str:
    if isinstance(v, Same):
        return f"`{v.field}`"
    if isinstance(v, float):
        for num, den in ((2, 255), (2, 225)):
            if abs(v - num / den) < 1e-12:
                return f"{num}/{den}"
    return f"`{v}`"


def table(deviations=RIFT) -> str:
    """The Markdown table of ``docs/protocols.md`` for `deviations`."""
    rows = ["| switch | official (reference) | rwsjax | why |", "|---|---|---|---|"]
    for d in deviations:
        rows.append(f"| `--config.{d.field}` = {_value(d.official)} (official) / {_value(d.ours)} | "
                    f"{d.official_text} — {d.reference} | {d.ours_text} | {d.why} |")
    return "\n".join(rows)
