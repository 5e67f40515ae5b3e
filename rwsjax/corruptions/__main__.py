"""Command line: ``python -m rwsjax.corruptions {generate,gallery} ...``.

generate
  Writes corrupted splits as TFDS datasets (``<dataset>_corrupted/<config>``:
  CIFAR-10-C, CIFAR-100-C, Tiny-ImageNet-C)::

    python -m rwsjax.corruptions generate --dataset cifar10 --corruptions all \\
        --severities 1,2,3,4,5 --out_data_dir DIR [--num_examples N|full] [--split test|train]

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
  ``python -m rwsjax.corruptions gallery --out docs/corruptions_gallery.png``
"""

from __future__ import annotations

import argparse
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
            raise argparse.ArgumentTypeError(
                f"unknown corruption {part!r}; valid: {', '.join(_GROUPS)} or names: {', '.join(CORRUPTIONS)}"
            )
    return list(dict.fromkeys(out))


def _parse_severities(text: str) -> list[int]:
    try:
        sev = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"severities must be integers in {list(SEVERITIES)}, got {text!r}") from None
    bad = [s for s in sev if s not in SEVERITIES]
    if bad or not sev:
        raise argparse.ArgumentTypeError(f"severities must be in {list(SEVERITIES)}, got {text!r}")
    return list(dict.fromkeys(sev))


def _parse_num(text: str):
    if text == "full":
        return None
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--num_examples must be a positive int or 'full', got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"--num_examples must be >= 1, got {n}")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rwsjax.corruptions", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    from rwsjax.corruptions.datasets import CORRUPTED_NAMES

    g = sub.add_parser("generate", help="write corrupted splits (CIFAR-10/100-C, Tiny-ImageNet-C) as TFDS datasets")
    g.add_argument("--dataset", choices=list(CORRUPTED_NAMES), default="cifar10",
                   help="source dataset (prepared in --source_data_dir)")
    g.add_argument("--corruptions", type=_parse_corruptions, default=list(CORRUPTIONS),
                   help="all | benchmark | extra | rift | name,name,...")
    g.add_argument("--severities", type=_parse_severities, default=list(SEVERITIES), help="e.g. 1,2,3,4,5")
    g.add_argument("--out_data_dir", "--out-data-dir", required=True, help="TFDS data dir to write into")
    g.add_argument("--num_examples", "--num-examples", type=_parse_num, default=None,
                   help="N (class-stratified subset) or 'full' (default)")
    g.add_argument("--subset_seed", "--subset-seed", type=int, default=0, help="selects the --num_examples subset")
    g.add_argument("--split", choices=["test", "train"], default="test")
    g.add_argument("--seed", type=int, default=0, help="corruption seed")
    g.add_argument("--source_data_dir", "--source-data-dir", default=None,
                   help="TFDS data dir of the clean dataset (default $TFDS_DATA_DIR)")
    g.add_argument("--overwrite", action="store_true", help="replace splits generated with other arguments")
    g.add_argument("--no_progress", "--no-progress", action="store_true")
    g.set_defaults(func=_cmd_generate)
    q = sub.add_parser("gallery", help="save the 19 x (clean + 5 severities) gallery figure")
    q.add_argument("--out", default="docs/corruptions_gallery.png")
    q.add_argument("--data_dir", "--data-dir", default=None, help="TFDS data dir holding cifar10")
    q.add_argument("--index", type=int, default=4, help="CIFAR-10 test image position")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_cmd_gallery)
    args = parser.parse_args(argv)
    from rwsjax.data.sources import DatasetNotFoundError

    try:
        return args.func(args)
    except (ModuleNotFoundError, DatasetNotFoundError, ValueError, IndexError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
