"""CPU time of one tile of a spec's chain, with the tile engine's slab size varied (issue 17).

    PYTHONPATH=. python benchmarks/tile_cost.py SPEC.yaml [--shape 16,512,1024] [--slab-bytes 0,2097152,4194304]
                                                          [--rounds 9] [--values 0,60000] [--profile]

Runs the spec's steps with ``Pipeline.apply`` on one generated uint16 tile (the benchmark's tile: 16 x 512 x 1024,
a whole array, so every face is an array edge), in this thread on dask's synchronous scheduler, and reports the
least and the median process CPU time per tile for each ``convpipe.tiles.SLAB_BYTES`` (0: the whole tile at
once), round-robin. CPU time of one thread is steadier than a whole run's wall time on a shared machine; what
the whole run adds (reads, zarr's codecs, scheduling) is the profile of ``profile_run.py``. ``--profile``
prints a cProfile of the default slab size instead.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("--shape", default="16,512,1024")
    ap.add_argument("--slab-bytes", default=f"0,{1 << 20},{2 << 20},{4 << 20},{8 << 20}")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--values", default="0,60000", help="lo,hi of the uniform uint16 values (a narrow range far "
                    "from 0, like a camera's offset, makes float32 chains centre their blocks)")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args(argv)

    import dask.array as da
    import numpy as np

    import convpipe
    import convpipe.tiles as tiles
    from convpipe.apply_tables import apply_array

    spec = convpipe.load(a.spec).spec
    shape = tuple(int(v) for v in a.shape.split(","))
    x = np.random.default_rng(0).integers(*(int(v) for v in a.values.split(",")), shape).astype(np.uint16)
    d = da.from_array(x, chunks=x.shape, name=False)  # no sha1 of the array: a run from Zarr computes none
    axes = "tczyx"[-len(shape):]

    def one() -> None:
        apply_array(spec, d, axes=axes, tile=list(shape)).compute(scheduler="sync")

    one()  # imports, kernel tables
    if a.profile:
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(a.rounds):
            one()
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(30)
        return 0
    default = tiles.SLAB_BYTES
    sizes = [int(v) for v in a.slab_bytes.split(",")]
    times: dict[int, list[float]] = {s: [] for s in sizes}
    try:
        for _ in range(a.rounds):
            for s in sizes:
                tiles.SLAB_BYTES = s if s > 0 else 1 << 62
                t = time.process_time()
                one()
                times[s].append(time.process_time() - t)
    finally:
        tiles.SLAB_BYTES = default
    print(f"{a.spec}: one {'x'.join(map(str, shape))} uint16 tile, CPU ms per tile over {a.rounds} rounds")
    for s, v in times.items():
        v = sorted(v)
        name = "whole tile" if s == 0 else f"slabs of {s / (1 << 20):g} MiB"
        print(f"  {name:>20}: least {v[0] * 1e3:7.1f}  median {v[len(v) // 2] * 1e3:7.1f}"
              + ("  (default)" if s == default else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
