"""Extra row ``conv_layer``: a 16 -> 32 channel 3x3 layer on a 16 x 1024 x 1024 stack (issue 15).

Side by side, each in its own subprocess (peak RSS sampled from outside): convpipe (``convpipe run``, Zarr in
and out, all cores), the plain scipy loop (sum over input channels of scipy.ndimage.correlate per channel
pair, in memory, one thread) and, when torch is importable, ``torch.nn.functional.conv2d`` on the CPU (in
memory, all cores; an optional bench dependency). Targets: convpipe >= 5x the scipy loop, within 2x of torch.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

from .child import _CHILD_TAG, run_sampled
from .extra import ExtraCtx, _cli_elapsed, _spec, extra_row

_SCIPY = """
import json, sys, time, numpy as np, scipy.ndimage as ndi, zarr
job = json.loads(sys.argv[1])
x = zarr.open_array(job["input"], mode="r")[...].astype(np.float32)
w = np.load(job["weights"]).astype(np.float32)
t = time.perf_counter()
out = np.zeros((w.shape[0],) + x.shape[1:], np.float32)
for o in range(w.shape[0]):
    for i in range(w.shape[1]):
        out[o] += ndi.correlate(x[i], w[o, i], mode="reflect")
s = time.perf_counter() - t
np.save(job["out"], out[:, :80, :80])
print(TAG + json.dumps({"seconds": s}), flush=True)
"""

_TORCH = """
import json, os, sys, time, numpy as np, zarr
try:
    import torch
except ImportError:
    print(TAG + json.dumps({"skip": "torch is not installed (optional: pip install torch)"}), flush=True)
    sys.exit(0)
import torch.nn.functional as F
job = json.loads(sys.argv[1])
torch.set_num_threads(job["threads"])
x = zarr.open_array(job["input"], mode="r")[...].astype(np.float32)
w = torch.from_numpy(np.load(job["weights"]).astype(np.float32))
xp = torch.from_numpy(np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="symmetric"))[None]  # scipy's reflect
times = []
for _ in range(job["repeat"]):
    t = time.perf_counter()
    with torch.no_grad():
        y = F.conv2d(xp, w)
    times.append(time.perf_counter() - t)
np.save(job["out"], y[0, :, :80, :80].numpy())
print(TAG + json.dumps({"seconds": min(times), "times": times, "torch": torch.__version__,
                        "threads": torch.get_num_threads()}), flush=True)
"""


def _script(body: str, job: dict) -> list[str]:
    return [sys.executable, "-c", f"TAG = {_CHILD_TAG!r}\n" + body, json.dumps(job)]


def _reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """float64 oracle of the top-left 80 x 80 corner (the reflect boundary included)."""
    import scipy.ndimage as ndi

    sub = x[:, :90, :90].astype(np.float64)
    out = np.zeros((w.shape[0], 80, 80))
    for o in range(w.shape[0]):
        for i in range(w.shape[1]):
            out[o] += ndi.correlate(np.pad(sub[i], ((0, 0), (0, 0)), mode="edge"), w[o, i].astype(np.float64),
                                    mode="reflect")[:80, :80]
    return out


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / max(1.0, float(np.abs(ref).max())))


@extra_row("conv_layer", title="conv_layer 16→32 channels 3×3 on 16×1024×1024 vs the scipy loop and torch conv2d (CPU)",
           target="convpipe ≥ 5× the scipy loop (Σ correlate per channel pair); within 2× of torch on the same cores")
def extra_conv_layer(sx: ExtraCtx) -> dict[str, Any]:
    import yaml
    import zarr

    n = sx.size(1024, 256)
    c_in, c_out = 16, 32
    rng = np.random.default_rng(15)
    x = rng.standard_normal((c_in, n, n)).astype(np.float32)
    w = (rng.standard_normal((c_out, c_in, 3, 3)) / 12).astype(np.float32)
    inp, wpath = sx.path(f"conv-layer-in-{n}.zarr"), sx.path("conv-layer-w.npy")
    zarr.create_array(inp, data=x, chunks=(c_in, 256, 256), overwrite=True)
    np.save(wpath, w)
    ref = _reference(x, w)
    out: dict[str, Any] = {"shape": [c_in, n, n], "out_channels": c_out, "kernel": [3, 3], "rows": {},
                           "loadavg_before": __import__("os").getloadavg()}

    spec_path = sx.workdir / "conv-layer.yaml"
    o_url = sx.path("out-conv-layer.zarr")
    spec = _spec(inp, o_url, [{"conv_layer": {"weights": wpath}}])
    spec["input"]["axes"] = "cyx"
    spec_path.write_text(yaml.safe_dump(spec))
    r = run_sampled([sys.executable, "-m", "convpipe", "run", str(spec_path)], timeout=1800)
    if r["rc"] != 0:
        raise RuntimeError(f"convpipe run failed: {r['stderr_tail'][-800:]}")
    got = zarr.open_array(o_url, mode="r")[:, :80, :80]
    out["rows"]["convpipe"] = {"seconds": _cli_elapsed(r["stdout_tail"]), "wall_s": r["wall_s"],
                               "peak_rss": r["peak_rss"], "rel_err": _rel(got, ref),
                               "note": "convpipe run: zarr in, zarr out, all cores (threads)"}
    for name, body in (("scipy-loop", _SCIPY), ("torch-conv2d", _TORCH)):
        job = {"input": inp, "weights": wpath, "out": sx.path(f"conv-layer-{name}.npy"), "threads": sx.ncpu,
               "repeat": 3}
        rr = run_sampled(_script(body, job), timeout=3600)
        res = rr["result"] or {}
        if rr["rc"] != 0 or not res:
            out["rows"][name] = {"status": "error", "reason": rr["stderr_tail"][-600:]}
            continue
        if "skip" in res:
            out["rows"][name] = {"status": "skipped", "reason": res["skip"]}
            continue
        out["rows"][name] = {"seconds": res["seconds"], "peak_rss": rr["peak_rss"],
                             "rel_err": _rel(np.load(job["out"]), ref), **{k: v for k, v in res.items() if k != "seconds"}}
    cp = out["rows"]["convpipe"]["seconds"]
    sp = out["rows"].get("scipy-loop", {}).get("seconds")
    tp = out["rows"].get("torch-conv2d", {}).get("seconds")
    out["speedup_vs_scipy_loop"] = sp / cp if sp and cp else None
    out["ratio_vs_torch"] = cp / tp if tp and cp else None
    out["loadavg_after"] = __import__("os").getloadavg()
    ok_err = out["rows"]["convpipe"]["rel_err"] <= 1e-5
    out["met"] = bool(ok_err and out["speedup_vs_scipy_loop"] and out["speedup_vs_scipy_loop"] >= 5
                      and (out["ratio_vs_torch"] is None or out["ratio_vs_torch"] <= 2))
    f = lambda v, s=".2f": "n/a" if v is None else format(v, s)  # noqa: E731
    out["summary"] = (f"convpipe {f(cp)} s (peak {out['rows']['convpipe']['peak_rss'] / 2**20:.0f} MiB), scipy loop "
                      f"{f(sp)} s = {f(out['speedup_vs_scipy_loop'], '.1f')}×, torch {f(tp)} s "
                      f"(convpipe/torch {f(out['ratio_vs_torch'])}); rel err {out['rows']['convpipe']['rel_err']:.1e}")
    return out
