"""Command line: ``rwsjax corrupt {generate,gallery} ...`` (also ``python -m rwsjax.corruptions ...``).

generate
  Writes corrupted splits as TFDS datasets (``<dataset>_corrupted/<config>``:
  CIFAR-10-C, CIFAR-100-C, Tiny-ImageNet-C)::

    rwsjax corrupt generate --dataset=cifar10 --corruptions=all \\
        --severities=1,2,3,4,5 --out_data_dir=DIR [--num_examples=N|full] [--split=test|train]

  ``--dataset``: ``cifar10``, ``cifar100`` or ``tiny_imagenet`` (64x64
  constants of ``make_tinyimagenet_c.py``; ``--split test`` corrupts its
  official validation split, the dataset's ``test_split``).

  ``--corruptions``: ``all`` (19), ``benchmark`` (15), ``extra`` (4), ``rift``
  (RiFT's 18) or a comma-separated list of names. ``--num_examples N`` takes a
  class-stratified subset of N source images chosen with ``--subset_seed``
  exactly as `rwsjax.data.splits.load_splits` picks ``test_size`` test images
  (``stratified_sample`` with generator ``SeedSequence([subset_seed, 2])``), so
  ``--num_examples 1000 --subset_seed S`` matches a run with
  ``data.test_size=1000`` and ``seed=S``; for ``--split train`` the stream is 1
  and the pool is the whole training split. (With ``--split test`` the pool is
  the dataset's test split: ``validation`` for ``tiny_imagenet``.) Configs already generated with
  the same arguments are skipped.

gallery
  ``rwsjax corrupt gallery --out=docs/corruptions_gallery.png``
"""

from __future__ import annotations

import sys
import time

import numpy as np

from rwsjax.corruptions.params import (
    BENCHMARK_CORRUPTIONS,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    RIFT_CORRUPTIONS,
    SEVERITIES,
)

_GROUPS = {"all": CORRUPTIONS, "benchmark": BENCHMARK_CORRUPTIONS, "extra": EXTRA_CORRUPTIONS, "rift": RIFT_CORRUPTIONS}
_SUBSET_STREAMS = {"test": 2, "train": 1}


def _parse_corruptions(text: str) -> list[str]:
    out = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        if part in _GROUPS:
            out.extend(_GROUPS[part])
        elif part in CORRUPTIONS:
            out.append(part)
        else:
            raise ValueError(
                f"unknown corruption {part!r}; valid: {', '.join(_GROUPS)} or names: {', '.join(CORRUPTIONS)}"
            )
    return list(dict.fromkeys(out))


def _parse_severities(text: str) -> list[int]:
    try:
        sev = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"severities must be integers in {list(SEVERITIES)}, got {text!r}") from None
    bad = [s for s in sev if s not in SEVERITIES]
    if bad or not sev:
        raise ValueError(f"severities must be in {list(SEVERITIES)}, got {text!r}")
    return list(dict.fromkeys(sev))


def _parse_num(text: str):
    if text == "full":
        return None
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"--num_examples must be a positive int or 'full', got {text!r}") from None
    if n < 1:
        raise ValueError(f"--num_examples must be >= 1, got {n}")
    return n


def subset_indices(dataset: str, split: str, num_examples: int | None, subset_seed: int, data_dir=None):
    """Source positions the CLI uses for ``--num_examples`` (None = the full split)."""
    if num_examples is None:
        return None
    from rwsjax.data.sources import dataset_info, load_labels
    from rwsjax.data.splits import stratified_sample

    labels = load_labels(dataset, split, data_dir)
    rng = np.random.default_rng(np.random.SeedSequence([int(subset_seed), _SUBSET_STREAMS[split]]))
    return stratified_sample(labels, np.arange(labels.shape[0], dtype=np.int64), num_examples,
                             dataset_info(dataset).num_classes, rng, field="--num_examples")


def _cmd_generate(args) -> int:
    from rwsjax.corruptions.datasets import generate, is_generated

    idx = subset_indices(args.dataset, args.split, args.num_examples, args.subset_seed, args.source_data_dir)
    jobs = [(c, s) for c in args.corruptions for s in args.severities]
    t_all = time.time()
    made = 0
    for k, (c, s) in enumerate(jobs, 1):
        kw = dict(out_data_dir=args.out_data_dir, split=args.split, indices=idx, seed=args.seed,
                  source_data_dir=args.source_data_dir)
        if not args.overwrite and is_generated(args.dataset, c, s, **kw):
            print(f"[{k}/{len(jobs)}] {c} {s}: already generated, skipped", flush=True)
            continue
        t = time.time()
        path = generate(args.dataset, c, s, overwrite=args.overwrite, progress=not args.no_progress, **kw)
        made += 1
        print(f"[{k}/{len(jobs)}] {c} {s}: {time.time() - t:.1f}s -> {path}", flush=True)
    print(f"done: {made} generated, {len(jobs) - made} cached, {time.time() - t_all:.0f}s total")
    return 0


def _cmd_gallery(args) -> int:
    from rwsjax.corruptions.gallery import save_gallery

    out = save_gallery(args.out, data_dir=args.data_dir, index=args.index, seed=args.seed)
    print(f"wrote {out}")
    return 0


def _define(command: str):
    def define(fv) -> None:
        from absl import flags

        from rwsjax.corruptions.datasets import CORRUPTED_NAMES

        if command == "generate":
            flags.DEFINE_enum("dataset", "cifar10", list(CORRUPTED_NAMES), "source dataset (prepared in "
                              "--source_data_dir)", flag_values=fv)
            flags.DEFINE_string("corruptions", "all", "all | benchmark | extra | rift | name,name,...", flag_values=fv)
            flags.DEFINE_string("severities", "1,2,3,4,5", "e.g. 1,2,3,4,5", flag_values=fv)
            flags.DEFINE_string("out_data_dir", None, "TFDS data dir to write into (required)", flag_values=fv)
            flags.DEFINE_string("num_examples", "full", "N (class-stratified subset) or 'full'", flag_values=fv)
            flags.DEFINE_integer("subset_seed", 0, "selects the --num_examples subset", flag_values=fv)
            flags.DEFINE_enum("split", "test", ["test", "train"], "source split", flag_values=fv)
            flags.DEFINE_integer("seed", 0, "corruption seed", flag_values=fv)
            flags.DEFINE_string("source_data_dir", None, "TFDS data dir of the clean dataset (default "
                                "$TFDS_DATA_DIR)", flag_values=fv)
            flags.DEFINE_boolean("overwrite", False, "replace splits generated with other arguments", flag_values=fv)
            flags.DEFINE_boolean("no_progress", False, "no progress bars", flag_values=fv)
        else:
            flags.DEFINE_string("out", "docs/corruptions_gallery.png", "PNG to write", flag_values=fv)
            flags.DEFINE_string("data_dir", None, "TFDS data dir holding cifar10", flag_values=fv)
            flags.DEFINE_integer("index", 4, "CIFAR-10 test image position", flag_values=fv)
            flags.DEFINE_integer("seed", 0, "corruption seed", flag_values=fv)
    return define


def main(argv: list[str] | None = None, prog: str = "python -m rwsjax.corruptions") -> int:
    from rwsjax.cli import fail, parse

    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"generate": _cmd_generate, "gallery": _cmd_gallery}
    if not argv or argv[0] not in commands:
        if argv and argv[0] in ("-h", "--help"):
            print(f"usage: {prog} {{generate,gallery}} [flags]   ({prog} COMMAND --help for its flags)")
            print(__doc__)
            return 0
        return fail(f"{prog} needs a command, generate or gallery (got {argv[0] if argv else 'none'!r}; "
                    f"see {prog} --help)")
    command = argv[0]
    summaries = {"generate": "Write corrupted splits (CIFAR-10/100-C, Tiny-ImageNet-C) as TFDS datasets.",
                 "gallery": "Save the 19 corruptions x (clean + 5 severities) gallery figure."}
    parsed = parse(argv[1:], f"{prog} {command}", summaries[command], _define(command))
    if isinstance(parsed, int):
        return parsed
    args, _ = parsed
    from rwsjax.data.sources import DatasetNotFoundError

    try:
        if command == "generate":
            if not args.out_data_dir:
                return fail(f"{prog} generate needs --out_data_dir=DIR (where the corrupted datasets are written)")
            args = _Args(args, corruptions=_parse_corruptions(args.corruptions),
                         severities=_parse_severities(args.severities), num_examples=_parse_num(args.num_examples))
        return commands[command](args)
    except (ModuleNotFoundError, DatasetNotFoundError, ValueError, IndexError) as e:
        return fail(e)


class _Args:
    """absl flag values with some replaced by their parsed form."""

    def __init__(self, fv, **parsed):
        self._fv, self._parsed = fv, parsed

    def __getattr__(self, name):
        return self._parsed[name] if name in self._parsed else getattr(self._fv, name)


if __name__ == "__main__":
    sys.exit(main())
