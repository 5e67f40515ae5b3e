"""Per-convolution times of ResNet-18's shapes (batch 128): forward, input gradient, weight gradient, in
milliseconds (median of ``repeats``) — XLA:CPU (``lax.conv_general_dilated``, NHWC) next to PyTorch eager
(oneDNN, NCHW) in a separate process where PyTorch is installed.  Where an AT step's time goes, per kernel.

    python benchmarks/convolutions.py --width=0.25 --repeats=20

One AT step runs every convolution 11 times forward and 11 times backward to the input (10 PGD steps + the
training forward/backward), and once backward to the weights.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

# (spatial size, in channels, out channels at width 64, stride) of ResNet-18's 3×3 convolutions; the
# channels scale with the width multiplier, the stem's 3 input channels do not.
SHAPES = ((32, 3, 64, 1), (32, 64, 64, 1), (32, 64, 128, 2), (16, 128, 128, 1), (16, 128, 256, 2),
          (8, 256, 256, 1), (8, 256, 512, 2), (4, 512, 512, 1))


def shapes(width: float):
    for h, cin, cout, s in SHAPES:
        yield h, cin if cin == 3 else round(cin * width), round(cout * width), s


def timed(fn, repeats: int) -> float:
    """Median ms of ``repeats`` calls after one warm-up (``fn`` returns when its work is done)."""
    return 1e3 * common.measure(fn, repeats, block=lambda r: r)["median_s"]


def jax_rows(width: float, batch: int, repeats: int) -> list[tuple[float, float, float]]:
    import jax
    from jax import lax

    rows = []
    for h, cin, cout, s in shapes(width):
        k = jax.random.split(jax.random.PRNGKey(0), 3)
        x = jax.random.normal(k[0], (batch, h, h, cin))
        w = jax.random.normal(k[1], (3, 3, cin, cout))

        def conv(x, w, s=s):
            return lax.conv_general_dilated(x, w, (s, s), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
        g = jax.random.normal(k[2], conv(x, w).shape)
        fwd = jax.jit(conv)
        dx = jax.jit(lambda x, w, conv=conv, g=g: jax.vjp(lambda z: conv(z, w), x)[1](g)[0])
        dw = jax.jit(lambda x, w, conv=conv, g=g: jax.vjp(lambda v: conv(x, v), w)[1](g)[0])
        rows.append(tuple(timed(lambda f=f: jax.block_until_ready(f(x, w)), repeats) for f in (fwd, dx, dw)))
    return rows


def torch_rows(width: float, batch: int, repeats: int) -> list[tuple[float, float, float]]:
    import torch
    import torch.nn.functional as F

    rows = []
    for h, cin, cout, s in shapes(width):
        x = torch.randn(batch, cin, h, h, requires_grad=True)
        w = torch.randn(cout, cin, 3, 3, requires_grad=True)
        g = torch.randn_like(F.conv2d(x, w, stride=s, padding=1))
        with torch.no_grad():
            fwd = timed(lambda: F.conv2d(x, w, stride=s, padding=1), repeats)
        # autograd.grad runs the forward too: subtract it
        dx = timed(lambda: torch.autograd.grad(F.conv2d(x, w, stride=s, padding=1), x, g), repeats) - fwd
        dw = timed(lambda: torch.autograd.grad(F.conv2d(x, w, stride=s, padding=1), w, g), repeats) - fwd
        rows.append((fwd, dx, dw))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=float, default=0.25, help="width multiplier (0.25 = width 16)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--torch_only", action="store_true", help=argparse.SUPPRESS)  # the PyTorch subprocess
    a = ap.parse_args()
    if a.torch_only:
        print(json.dumps(torch_rows(a.width, a.batch, a.repeats)))
        return
    theirs = None
    if importlib.util.find_spec("torch") is not None:  # first, and in its own process
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--torch_only", f"--width={a.width}",
                              f"--batch={a.batch}", f"--repeats={a.repeats}"], capture_output=True, text=True)
        theirs = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
    ours = jax_rows(a.width, a.batch, a.repeats)
    print(f"3×3 convolutions of ResNet-18 width ×{a.width}, batch {a.batch}: ms, median of {a.repeats}")
    print(f"{'H×W  C_in→C_out stride':24s} {'XLA:CPU fwd':>11s} {'d input':>8s} {'d weight':>9s}   "
          f"{'PyTorch fwd':>11s} {'d input':>8s} {'d weight':>9s}")
    for i, (h, cin, cout, s) in enumerate(shapes(a.width)):
        mine = " ".join(f"{v:{n}.2f}" for v, n in zip(ours[i], (11, 8, 9)))
        other = " ".join(f"{v:{n}.2f}" for v, n in zip(theirs[i], (11, 8, 9))) if theirs else "   (PyTorch not installed)"
        print(f"{f'{h}×{h}  {cin}→{cout}  s{s}':24s} {mine}   {other}")


if __name__ == "__main__":
    main()
