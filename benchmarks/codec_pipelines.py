"""zarr-python's default codec pipeline vs zarrs' (Rust): whole-array and per-chunk reads and writes, side by side.

    python benchmarks/codec_pipelines.py 16,1024,1024 8,512,512 uint16

Checks that both decode to the same values and says whether the stored chunk bytes are identical.
"""
import time, numpy as np, zarr, shutil, sys, hashlib, os
rng = np.random.default_rng(0)
shape, chunks = tuple(int(v) for v in sys.argv[1].split(",")), tuple(int(v) for v in sys.argv[2].split(","))
kind = sys.argv[3] if len(sys.argv) > 3 else "float32"
data = rng.standard_normal(shape, dtype=np.float32) if kind == "float32" else rng.integers(0, 4000, shape).astype(np.uint16)
PIPES = {"default": "zarr.core.codec_pipeline.BatchedCodecPipeline", "zarrs": "zarrs.ZarrsCodecPipeline"}
res, digests = {}, {}
def tree_digest(p):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(p)):
        for f in sorted(files):
            if f == "zarr.json": continue
            h.update(os.path.relpath(os.path.join(root, f), p).encode()); h.update(open(os.path.join(root, f), "rb").read())
    return h.hexdigest()[:16]
for rnd in range(3):
    for name, path in PIPES.items():
        with zarr.config.set({"codec_pipeline.path": path}):
            p = f"/tmp/convpipe-codec-{name}.zarr"
            shutil.rmtree(p, ignore_errors=True)
            a = zarr.create_array(p, shape=shape, chunks=chunks, dtype=data.dtype, fill_value=0)
            t = time.perf_counter(); a[...] = data; res[(name, "write")] = min(res.get((name, "write"), 99), time.perf_counter() - t)
            a = zarr.open_array(p, mode="r")
            t = time.perf_counter(); b = a[...]; res[(name, "read")] = min(res.get((name, "read"), 99), time.perf_counter() - t)
            assert np.array_equal(b, data)
            # per-chunk access, as convpipe's tasks do (one region per task, from many threads in a real run)
            t = time.perf_counter()
            for idx in np.ndindex(*[s // c for s, c in zip(shape, chunks)]):
                a[tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, chunks))]
            res[(name, "read by chunk")] = min(res.get((name, "read by chunk"), 99), time.perf_counter() - t)
            digests[name] = tree_digest(p)
mb = data.nbytes / 2**20
print(f"{shape} chunks {chunks} {data.dtype} ({mb:.0f} MiB), load {os.getloadavg()[0]:.1f}")
for op in ("write", "read", "read by chunk"):
    d, z = res[("default", op)], res[("zarrs", op)]
    print(f"  {op:14s} default {d:6.2f} s ({mb/d:5.0f} MiB/s)  zarrs {z:6.2f} s ({mb/z:5.0f} MiB/s)  zarrs/default {z/d:.2f}")
print("  chunk files bit-identical:", digests["default"] == digests["zarrs"], digests)
