"""Out-of-distribution summary of corruption accuracies (pure Python, no model code).

Conventions (Hendrycks & Dietterich, ICLR 2019; RiFT, Zhu et al., ICCV 2023):

* ``mean_15``: the usual "mean corruption accuracy" of CIFAR-10-C: the mean
  over the 15 benchmark corruptions x 5 severities (75 numbers).
* ``mean_rift18``: what the official RiFT code reports as corruption
  accuracy: the mean over its 18 corruptions (all 19 but glass_blur) of the
  accuracy on each corruption's 5 x 10,000 images, i.e. (equal-size
  severities) the mean over 18 x 5 numbers.

A mean is only computed when every entry it needs is present; otherwise it
is None and the missing (corruption, severity) pairs are reported (or, with
``strict=True``, a ValueError names them). A partial set is never averaged
silently.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

from rwsjax.corruptions.params import (
    BENCHMARK_CORRUPTIONS,
    CORRUPTIONS,
    RIFT_CORRUPTIONS,
    SEVERITIES,
)

__all__ = ["MEANS", "summarize"]

#: Name of each aggregate -> the corruptions it averages over (x all 5 severities).
MEANS: dict[str, tuple[str, ...]] = {
    "mean_15": BENCHMARK_CORRUPTIONS,
    "mean_rift18": RIFT_CORRUPTIONS,
    "mean_19": CORRUPTIONS,
}


def _validate(acc: Mapping) -> dict[tuple[str, int], float]:
    if not isinstance(acc, Mapping):
        raise TypeError(f"acc must be a mapping {{(corruption, severity): accuracy %}}, got {type(acc).__name__}")
    out = {}
    for key, value in acc.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"keys must be (corruption, severity) tuples, got {key!r}")
        name, sev = key
        if name not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {name!r} in key {key!r}; valid names: {', '.join(CORRUPTIONS)}")
        if isinstance(sev, bool) or not isinstance(sev, numbers.Integral) or int(sev) not in SEVERITIES:
            raise ValueError(f"severity must be one of {list(SEVERITIES)}, got {sev!r} in key {key!r}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"accuracy for {key!r} must be a finite number (percent), got {value!r}")
        if not 0.0 <= float(value) <= 100.0:
            raise ValueError(f"accuracy for {key!r} must be a percentage in [0, 100], got {value!r}")
        k = (name, int(sev))
        if k in out:
            raise ValueError(f"duplicate entry for {k!r}")
        out[k] = float(value)
    return out


def summarize(acc: Mapping[tuple[str, int], float], *, strict: bool = False) -> dict:
    """Per-corruption and overall mean accuracies from per-(corruption, severity) accuracies.

    Args:
      acc: ``{(corruption, severity): accuracy in percent}``; corruption in
        `rwsjax.corruptions.CORRUPTIONS`, severity in 1..5. Any subset.
      strict: raise instead of reporting when ``mean_15`` or ``mean_rift18``
        cannot be computed.

    Returns:
      A dict::

        {
          "per_corruption": {name: mean over its 5 severities}  # complete corruptions only, CORRUPTIONS order
          "mean_15": float | None,      # 15 benchmark corruptions x 5 severities
          "mean_rift18": float | None,  # RIFT_CORRUPTIONS x 5 severities
          "mean_19": float | None,      # all 19 x 5
          "missing": {"mean_15": [(name, sev), ...], "mean_rift18": [...], "mean_19": [...]},
          "incomplete_corruptions": {name: [missing severities]},  # present but partial
          "num_entries": int,
        }

      A mean is None exactly when its ``missing`` list is non-empty.

    Raises:
      TypeError / ValueError: malformed keys or values (unknown corruption,
        severity outside 1..5, accuracy not a finite number in [0, 100]).
      ValueError: ``strict=True`` and entries needed by ``mean_15`` or
        ``mean_rift18`` are missing (the message lists them).
    """
    table = _validate(acc)
    per = {}
    incomplete = {}
    for name in CORRUPTIONS:
        have = [s for s in SEVERITIES if (name, s) in table]
        if len(have) == len(SEVERITIES):
            per[name] = sum(table[(name, s)] for s in SEVERITIES) / len(SEVERITIES)
        elif have:
            incomplete[name] = [s for s in SEVERITIES if s not in have]
    means, missing = {}, {}
    for key, names in MEANS.items():
        need = [(n, s) for n in names for s in SEVERITIES]
        miss = [k for k in need if k not in table]
        missing[key] = miss
        means[key] = None if miss else sum(table[k] for k in need) / len(need)
    if strict:
        bad = {k: v for k, v in missing.items() if v and k != "mean_19"}
        if bad:
            lines = [f"{k}: {len(v)} missing, e.g. {v[:6]}" for k, v in bad.items()]
            raise ValueError("cannot average a partial set of corruption accuracies; " + "; ".join(lines))
    return {"per_corruption": per, **means, "missing": missing, "incomplete_corruptions": incomplete,
            "num_entries": len(table)}
