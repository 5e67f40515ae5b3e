"""RiFT Table 2: RiFT on top of several adversarial-training regimes, from finished runs.

    rwsjax regimes runs/rift_cpu runs/rift_cpu_trades runs/rift_cpu_mart --out=regimes.md

Reads each workdir's ``results.json`` (written by the RiFT report stage) and prints/writes one row per
run: regime, α*, the fine-tuned module, clean / OOD / PGD adversarial test accuracy of θ_AT and θ_RiFT.
"""

from __future__ import annotations

import os
import sys

from rwsjax.report.tables import regime_label, regimes_table
from rwsjax.report.writers import read_json, write_text


def load(workdirs) -> list[dict]:
    """``results.json`` of each workdir, in order.

    Raises:
      FileNotFoundError: a workdir has no ``results.json`` (its RiFT run has not reached the report stage).
    """
    out = []
    for w in workdirs:
        path = os.path.join(w, "results.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} does not exist: run the RiFT pipeline in {w} to its report stage "
                                    "first (rwsjax run --config=rift:PRESET --workdir=...)")
        result = read_json(path)
        config = os.path.join(w, "config.json")
        if "regime" not in result and os.path.exists(config):  # results.json without the regime field
            result["regime"] = regime_label(read_json(config).get("at", {}))
        out.append(result)
    return out


def _define(fv) -> None:
    from absl import flags
    flags.DEFINE_string("out", None, "also write the table (Markdown) here", flag_values=fv)


def main(argv=None, prog: str = "python -m rwsjax.report.regimes") -> int:
    from rwsjax.cli import parse
    parsed = parse(sys.argv[1:] if argv is None else argv, prog, __doc__.splitlines()[0], _define,
                   positionals="WORKDIR [WORKDIR ...] ", nargs=(1, 1000))
    if isinstance(parsed, int):
        return parsed
    fv, workdirs = parsed
    try:
        results = load(workdirs)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = regimes_table(results)
    print(table)
    if fv.out:
        write_text(fv.out, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
