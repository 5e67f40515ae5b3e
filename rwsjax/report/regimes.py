"""RiFT Table 2: RiFT on top of several adversarial-training regimes, from finished runs.

    python -m rwsjax.report.regimes runs/rift_cpu runs/rift_cpu_trades runs/rift_cpu_mart --out=regimes.md

Reads each workdir's ``results.json`` (written by the RiFT report stage) and prints/writes one row per
run: regime, α*, the fine-tuned module, clean / OOD / PGD adversarial test accuracy of θ_AT and θ_RiFT.
"""

from __future__ import annotations

import argparse
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
                                    "first (python -m rwsjax.main --config=configs/rift.py:... --workdir=...)")
        result = read_json(path)
        config = os.path.join(w, "config.json")
        if "regime" not in result and os.path.exists(config):  # results written before the regime was recorded
            result["regime"] = regime_label(read_json(config).get("at", {}))
        out.append(result)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", help="RiFT workdirs, one per regime")
    parser.add_argument("--out", help="also write the table (Markdown) here")
    a = parser.parse_args(argv)
    try:
        results = load(a.workdirs)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = regimes_table(results)
    print(table)
    if a.out:
        write_text(a.out, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
