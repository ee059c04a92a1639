"""Offset data in float32: each op's error against the oracle with and without the tile engine's centring
(convpipe/centring.py), and what centring costs on a light job's tile.

    PYTHONPATH=. python benchmarks/offset_centring.py [--repeat 5]

"before" runs the same code with ``centring.centre`` switched off (the tile is never centred), which is what
the engine did before. Errors are max|out - oracle| / max(1, max|oracle|), SPEC.md's float32 bound is 1e-5
(1e-4 for FFT methods). The timing is ``tiles.run_chain`` alone on one (16, 512, 1024) tile of a uint16 image
near 30 000: as uint16 (the chain casts it: centring fuses the cast and the subtraction), and as float32 input
(an assembled block the chain may centre in place, or a view of a chunk, centred into a new block), best of
``--repeat``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import convpipe.centring as centring  # noqa: E402

_CENTRE = centring.centre


def _off(u, compute, xp=np, **kw):
    return u, 0.0


def errors(steps, x, chunks):
    from harness import run

    from convpipe.oracles import oracle

    ref, _ = oracle(steps, x, "yx")
    out = {}
    for name, fn in (("before", _off), ("after", _CENTRE)):
        centring.centre = fn
        got = run(steps, x, "yx", chunks=chunks, precision="float32")
        out[name] = float(np.abs(got - ref).max() / max(1.0, np.abs(ref).max()))
    centring.centre = _CENTRE
    return out


CHAINS = [
    [{"sobel": {}}], [{"laplace": {}}], [{"gaussian_laplace": {"sigma": 2}}], [{"gaussian": {"sigma": 2}}, {"sobel": {}}],
    [{"gaussian_gradient_magnitude": {"sigma": 1.5}}], [{"gaussian": {"sigma": 1}}, {"laplace": {}}],
    [{"gaussian": {"sigma": 2, "order": 2}}], [{"difference_of_gaussians": {"low_sigma": 1}}],
    [{"median": {"size": 3}}, {"scharr": {}}],
    [{"correlate": {"kernel": [[0.1, -0.3, 0.05], [0.2, 0.0, -0.15], [0.3, -0.1, -0.1]]}}],
    [{"correlate": {"kernel": [[0.1, -0.3, 0.05], [0.2, 0.0, -0.15], [0.3, -0.1, -0.1]], "method": "fft"}}],
    [{"fft_filter": {"kind": "highpass", "cutoff": 0.2}}], [{"uniform": {"size": 5}}], [{"gaussian": {"sigma": 2}}],
]


def timing(steps, block, repeat, owned=False):
    from convpipe.plan import ArrayInfo, make_plan
    from convpipe.spec import load_spec
    from convpipe.tiles import backward, run_chain

    spec = load_spec({"convpipe": 1, "input": {"url": "unused.zarr"}, "steps": list(steps)})
    axes = "zyx"
    info = ArrayInfo(tuple(block.shape), block.dtype, tuple(block.shape), axes)
    plan = make_plan(spec.steps, info, tile=dict(zip(axes, block.shape)), out_chunks=dict(zip(axes, block.shape)),
                     memory_per_worker=1 << 50)
    (pp,) = plan.passes
    core = {a: ((0, pp.extents[-1][a]),) for a in pp.out_axes}
    targets = backward(pp.ops, core, pp.extents)
    res = {"before": float("inf"), "after": float("inf")}
    for _ in range(repeat):  # interleaved, best of each: the machine's load drifts
        for name, fn in (("before", _off), ("after", _CENTRE)):
            centring.centre = fn
            b = block.copy()  # as an assembled block: the task's own
            t0 = time.perf_counter()
            run_chain(b, pp.ops, targets, pp.extents, plan.compute_dtype, owned=owned)
            res[name] = min(res[name], time.perf_counter() - t0)
    centring.centre = _CENTRE
    return res


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    print("load:", os.getloadavg())
    rng = np.random.default_rng(0)
    noise = (30000 + rng.integers(0, 200, (96, 96))).astype(np.uint16)
    import skimage.data

    cam = (skimage.data.camera().astype(np.float64) + 30000).astype(np.uint16)
    print(f"{'chain':52s} {'noise before':>12s} {'after':>9s} {'camera before':>14s} {'after':>9s}")
    for steps in CHAINS:
        e1 = errors(steps, noise, (48, 40))
        e2 = errors(steps, cam, (160, 200))
        name = " -> ".join(f"{k}({','.join(f'{p}={v}' for p, v in d.items() if p != 'kernel')})"
                           for s in steps for k, d in s.items())
        print(f"{name[:52]:52s} {e1['before']:12.2e} {e1['after']:9.2e} {e2['before']:14.2e} {e2['after']:9.2e}")
    u16 = (30000 + rng.integers(0, 200, (16, 512, 1024))).astype(np.uint16)
    for blk, owned, what in ((u16, False, "uint16 tile (cast by the chain)"),
                             (u16.astype(np.float32), True, "float32 tile, assembled (owned)"),
                             (u16.astype(np.float32), False, "float32 tile, a view of a chunk")):
        print(f"\nrun_chain on a (16, 512, 1024) {what}, best of {a.repeat} (load {os.getloadavg()[0]:.2f})")
        for steps in ([{"gaussian": {"sigma": 1}}], [{"gaussian": {"sigma": 1}}, {"sobel": {}}],
                      [{"gaussian_laplace": {"sigma": 1.5}}], [{"median": {"size": 3}}, {"laplace": {}}]):
            t = timing(steps, blk, a.repeat, owned)
            name = " -> ".join(k for s in steps for k in s)
            print(f"{name:40s} before {t['before'] * 1e3:7.1f} ms  after {t['after'] * 1e3:7.1f} ms  "
                  f"({(t['after'] / t['before'] - 1) * 100:+.1f}%)")
    print("load:", os.getloadavg())


if __name__ == "__main__":
    main()
