"""The ``rwsjax`` command: one entry point, one flag style (absl ``--name=value``), one error style.

    rwsjax run --config=rift:smoke --workdir=/tmp/smoke        # a workflow (rift | rws | evaluate)
    rwsjax evaluate --config.checkpoint=runs/x/at/final --workdir=runs/x_eval
    rwsjax prepare cifar10 [--manual_dir=PATH/cifar-10-python.tar.gz] [--data_dir=DIR]
    rwsjax corrupt generate --dataset=cifar10 --corruptions=fog --severities=3 --out_data_dir=DIR
    rwsjax export runs/x/at/final at.pt [--normalization]
    rwsjax regimes runs/rift_pgd_at runs/rift_trades --out=table.md

Each subcommand is also ``python -m`` of its module (``rwsjax.main``,
``rwsjax.data.prepare``, ``rwsjax.corruptions``, ``rwsjax.models.export_pytorch``,
``rwsjax.report.regimes``). ``rwsjax COMMAND --help`` lists its flags. A user
error is one line ``error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from absl import flags

__all__ = ["COMMANDS", "fail", "main", "parse"]

#: subcommand -> (module whose ``main(argv) -> int`` runs it, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("rwsjax.main", "run or resume a workflow: --config=rift|rws|evaluate[:preset] --workdir=DIR"),
    "evaluate": ("rwsjax.main", "evaluate a checkpoint (the evaluate workflow): --config.checkpoint=PATH"),
    "prepare": ("rwsjax.data.prepare", "prepare cifar10 | cifar100 | tiny_imagenet as TFDS ArrayRecord"),
    "corrupt": ("rwsjax.corruptions.__main__", "generate CIFAR-10/100-C, Tiny-ImageNet-C; the gallery figure"),
    "export": ("rwsjax.models.export_pytorch", "write a variables directory as a PyTorch state_dict"),
    "regimes": ("rwsjax.report.regimes", "the regimes table of several RiFT workdirs"),
}


def fail(message: str, status: int = 2) -> int:
    """Prints ``error: message`` (one line) on stderr and returns `status` (for ``return fail(...)``)."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return status


def parse(argv: Sequence[str], prog: str, summary: str, define: Callable[[flags.FlagValues], None],
          positionals: str = "", nargs: tuple[int, int] = (0, 0)) -> tuple[flags.FlagValues, list[str]] | int:
    """Parses `argv` (without the program name) with absl flags defined by `define` on a fresh `FlagValues`.

    Returns ``(flag values, positional arguments)``, or an exit status: 0 after
    printing the help (``--help`` / ``-h``), 2 after a one-line error (an
    unknown or malformed flag, a wrong number of positional arguments).
    """
    fv = flags.FlagValues()
    define(fv)
    argv = list(argv)
    if argv[:1] == ["help"] or any(a in ("--help", "-h", "--helpfull") for a in argv):
        print(f"usage: {prog} {positionals}[flags]\n\n{summary}\n\nflags:")
        for flag in sorted({f for fl in fv.flags_by_module_dict().values() for f in fl}, key=lambda f: f.name):
            kind = "[no]" if isinstance(flag, flags.BooleanFlag) else ""
            print(f"  --{kind}{flag.name}: {flag.help} (default: {flag.default!r})")
        return 0
    try:
        rest = fv([prog, *argv])[1:]
    except flags.Error as e:
        return fail(f"{e} (see {prog} --help)")
    lo, hi = nargs
    if not lo <= len(rest) <= hi:
        want = positionals.strip() or "no positional arguments"
        return fail(f"{prog} takes {want}; got {rest or 'none'} (see {prog} --help)")
    return fv, rest


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: rwsjax COMMAND [flags]   (rwsjax COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    from rwsjax.configs import describe_presets

    lines += ["", "workflows and presets (--config=NAME:PRESET; a config file path works too):", describe_presets()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``rwsjax`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return fail(f"unknown command {command!r}; the commands are {', '.join(COMMANDS)} (rwsjax --help)")
    module = importlib.import_module(COMMANDS[command][0])
    if command == "evaluate" and not any(a.startswith("--config=") or a == "--config" for a in rest):
        rest = ["--config=evaluate", *rest]
    return module.main(rest, prog=f"rwsjax {command}") or 0


if __name__ == "__main__":
    sys.exit(main())
