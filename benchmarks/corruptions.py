"""Generation time of the 19 corruptions on real CIFAR-10 test images, and the full CIFAR-10-C estimate.

    TFDS_DATA_DIR=../shared/tensorflow_datasets python benchmarks/corruptions.py [--num_images 1000]

For each corruption prints the seconds to corrupt ``num_images`` real CIFAR-10
test images at each severity (single process, `corrupt_batch`), then the cost
of writing 1,000 images into the TFDS layout (PNG encoding + ArrayRecord,
measured with `generate` on a small subset, corruption time subtracted) and
the extrapolated time of the full 19 corruptions x 5 severities x 10,000
images with ``python -m rwsjax.corruptions generate``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from rwsjax.corruptions import CORRUPTIONS, SEVERITIES, corrupt_batch
from rwsjax.data.sources import load_split


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num_images", type=int, default=1000)
    p.add_argument("--data_dir", default=None, help="TFDS data dir with cifar10 (default $TFDS_DATA_DIR)")
    p.add_argument("--write_images", type=int, default=2000, help="images written to measure the TFDS write cost")
    args = p.parse_args()

    n = args.num_images
    clean = load_split("cifar10", "test", args.data_dir, np.arange(n), progress=False)
    idx = clean.source_indices
    corrupt_batch(clean.images[:8], "gaussian_noise", 1, seed=0, indices=idx[:8])  # warm imports
    print(f"cpu cores: {os.cpu_count()}; {n} real CIFAR-10 test images per (corruption, severity); single process\n")
    print(f"{'corruption':<18}" + "".join(f"{'sev ' + str(s):>8}" for s in SEVERITIES) + f"{'mean s/1k':>11}{'img/s':>8}")
    total_per_1k = 0.0
    for name in CORRUPTIONS:
        times = []
        for s in SEVERITIES:
            corrupt_batch(clean.images[:4], name, s, seed=0, indices=idx[:4])  # caches (frost textures, kernels)
            t = time.perf_counter()
            corrupt_batch(clean.images, name, s, seed=0, indices=idx)
            times.append((time.perf_counter() - t) * 1000.0 / n)  # seconds per 1000 images
        mean = float(np.mean(times))
        total_per_1k += sum(times)
        print(f"{name:<18}" + "".join(f"{t:8.2f}" for t in times) + f"{mean:11.2f}{1000.0 / mean:8.0f}")

    # TFDS write cost (PNG + serialization + ArrayRecord), corruption time subtracted.
    from rwsjax.corruptions.datasets import generate

    m = args.write_images
    with tempfile.TemporaryDirectory() as tmp:
        sub = np.arange(m)
        t0 = time.perf_counter()
        imgs = load_split("cifar10", "test", args.data_dir, sub, progress=False).images
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        corrupt_batch(imgs, "contrast", 3, seed=0, indices=sub)
        t_corr = time.perf_counter() - t0
        t0 = time.perf_counter()
        generate("cifar10", "contrast", 3, out_data_dir=tmp, indices=sub, source_data_dir=args.data_dir, progress=False)
        t_gen = time.perf_counter() - t0
    write_per_1k = max(t_gen - t_corr - t_load, 0.0) * 1000.0 / m
    load_per_1k = t_load * 1000.0 / m

    full_corrupt = total_per_1k * 10.0  # 10,000 images per (corruption, severity)
    full_write = write_per_1k * 10.0 * len(CORRUPTIONS) * len(SEVERITIES)
    full_load = load_per_1k * 10.0  # the CLI reads the source split once per process
    full = full_corrupt + full_write + full_load
    n_img = 10_000 * len(CORRUPTIONS) * len(SEVERITIES)
    print(f"\nTFDS write (PNG + ArrayRecord): {write_per_1k:.2f} s per 1,000 images; source read: {load_per_1k:.2f} s per 1,000")
    print(f"all 19 corruptions x 5 severities, per 1,000 images each: {total_per_1k:.1f} s corrupting")
    print(f"extrapolated full CIFAR-10-C (19 x 5 x 10,000 = {n_img:,} images), one process: "
          f"{full_corrupt / 60:.1f} min corrupting + {full_write / 60:.1f} min writing + {full_load:.0f} s reading "
          f"= {full / 60:.1f} min ({n_img / full:.0f} img/s)")


if __name__ == "__main__":
    main()
