"""``verify()``: recompute sampled tiles (and every table) with the oracle and compare."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import oracles as O
from ..oracles import morphology as OO
from ..axes import canonical
from ..errors import InputError
from .provenance import open_output, read_table, spec_dir, steps_of
from .reach import QUANTIZING, changes_extent, effective_precision, reach, saturate, tail_interval
from .results import TableCheck, TileCheck, VerifyResult


TOL = O.TOL
TOL_FFT = O.TOL_FFT
#: whole-array verification (global ops, tables) reads the input into memory in float64: at most this much
MAX_WHOLE_BYTES = 2 << 30


def _tiles(shape: tuple[int, ...], tile: tuple[int, ...]) -> list[tuple[int, ...]]:
    import itertools

    return list(itertools.product(*[range(max(1, -(-n // t))) for n, t in zip(shape, tile)]))


@dataclass
class _Chain:
    steps: list[tuple[str, dict]]
    margin: dict[str, int]
    whole_axes: set[str]
    fft: bool
    whole_array: str  # why the oracle must run on the whole array ('' when windows do)


def _chain(res: VerifyResult, steps: list[tuple[str, dict]], in_axes: str, base: Path | None) -> _Chain | None:
    """What the oracle needs for ``steps``; None (with the reason in ``res``) when it cannot recompute them."""
    skimage = _have_skimage()
    margin = {a: 0 for a in in_axes}
    whole: set[str] = set()
    fft, why, ok = False, "", True
    for i, (name, p) in enumerate(steps):
        path = f"steps[{i}].{name}"
        if name not in O.OPS:
            res.not_verifiable.append(path)
            ok = False
            continue
        if name in O.NEEDS_SKIMAGE and not skimage:
            res.not_verifiable.append(f"{path} (its reference is scikit-image's, which is not installed: "
                                      "pip install scikit-image)")
            ok = False
            continue
        try:
            r = reach(name, p, in_axes, base)
            fft = fft or O.fft_based(name, p, base)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - a spec we cannot read back is a verdict, not a crash
            res.problems.append(f"{path}: cannot rebuild the op from the provenance: {type(e).__name__}: {e}")
            ok = False
            continue
        for a, v in r.items():
            if v is None or p.get("mode") == "wrap":
                whole.add(a)
            elif a in margin:
                margin[a] += int(v)
        if not why and (name in O.GLOBAL_OPS or OO.whole_array(name, p)):
            why = f"{path} needs statistics of the whole array"
        if not why and changes_extent(name, p):
            why = f"{path} changes the extent of its output"
        if not why and name in O.WHOLE_ARRAY_OPS:
            why = f"{path} numbers components over each whole sub-array"
        if not why and name in O.TABLES and p.get("table"):
            why = f"{path} wrote a table, compared with the oracle's on the whole array"
    return _Chain(steps, margin, whole, fft, why) if ok else None


def _have_skimage() -> bool:
    try:
        import skimage  # noqa: F401
    except ImportError:
        return False
    return True


def _compare_table(step: str, url: str, got: dict, want: dict, rel: float) -> TableCheck:
    """Exactly the oracle's set of rows (keyed by the axis columns); values within ``rel`` of each column's
    scale max(1, max|column|)."""
    keys = [c for c in want if c in O.AXES_ORDER or c.endswith("_stop")]
    if "label" in want:  # regionprops: one row per label per sub-array
        keys.append("label")
    elif any(c.startswith("bbox-") for c in want):
        keys += [c for c in want if c.startswith("bbox-")]
    n_got = len(next(iter(got.values()))) if got else 0
    chk = TableCheck(step, url, n_got, tolerance=rel)
    if set(got) != set(want):
        chk.columns = f"columns {sorted(got)} are not the oracle's {sorted(want)}"
        return chk
    n_want = len(next(iter(want.values()))) if want else 0

    def index(cols, n):
        out: dict[tuple, int] = {}
        dup = []
        for i in range(n):
            k = tuple(int(cols[c][i]) for c in keys)
            (dup.append(k) if k in out else out.__setitem__(k, i))
        return out, dup

    g, dup = index(got, n_got)
    w, _ = index(want, n_want)
    chk.missing = sorted(set(w) - set(g))[:5] + [None] * max(0, len(set(w) - set(g)) - 5)
    chk.extra = (sorted(set(g) - set(w)) + dup)[:5] + [None] * max(0, len(set(g) - set(w)) + len(dup) - 5)
    common = [k for k in w if k in g]
    for c in (c for c in want if c not in keys):
        gv = np.array([got[c][g[k]] for k in common], dtype=np.float64)
        wv = np.array([want[c][w[k]] for k in common], dtype=np.float64)
        if not wv.size:
            continue
        scale = max(1.0, float(np.nanmax(np.abs(wv))) if np.isfinite(wv).any() else 1.0)
        with np.errstate(invalid="ignore"):
            err = np.where(np.isnan(gv) & np.isnan(wv), 0.0, np.abs(gv - wv) / scale)
        err = np.where(np.isnan(err), np.inf, err)
        j = int(np.argmax(err))
        if err[j] > chk.max_error:
            chk.max_error = float(err[j])
            chk.worst = f"{c} at {dict(zip(keys, common[j]))}: table {gv[j]!r} vs oracle {wv[j]!r}"
    return chk


def verify(output_url: str, *, sample: int = 8, all: bool = False, seed: int = 0,
           storage_options: dict | None = None, max_bytes: int = MAX_WHOLE_BYTES) -> VerifyResult:
    """Recompute ``sample`` random tiles of ``output_url`` (every tile with ``all``) from the input with the
    oracle (:mod:`convpipe.oracles`) and compare within SPEC.md's tolerance; compare every table the run
    wrote with the oracle's.

    Raises :class:`~convpipe.errors.InputError` when the output or its input cannot be opened or the output
    carries no convpipe provenance. Everything else (tiles or tables that differ, ops without an oracle, an
    incomplete output, an input that changed since the run, a whole-array check beyond ``max_bytes``) is
    reported in the result.
    """
    from ..io import Manifest, fingerprint, open_input

    out, prov = open_output(output_url, storage_options)
    spec = prov.get("spec") or {}
    in_spec = spec.get("input") or {}
    in_url = str(prov["input_url"])
    out_axes = str(prov["axes"])
    shape = tuple(int(n) for n in out.shape)
    tile = tuple(int(t) for t in prov["tile"])
    if len(out_axes) != len(shape) or len(tile) != len(shape):
        raise InputError(f"{output_url}: provenance axes {out_axes!r} / tile {list(tile)} do not fit the "
                         f"output's shape {shape}")
    out_dtype = np.dtype(out.dtype)
    grid = _tiles(shape, tile)
    in_so = in_spec.get("storage_options") or None
    arr, in_axes, in_ome = open_input(in_url, level=int(in_spec.get("level", 0) or 0), axes=in_spec.get("axes"),
                                      storage_options=in_so)
    # the compute dtype the run resolved and recorded (precision auto depends on the input's dtype)
    eff = effective_precision(str(prov.get("compute") or (spec.get("execution") or {}).get("precision", "auto")),
                              arr.dtype, out_dtype)
    res = VerifyResult(output_url, in_url, out_axes, shape, tile, len(grid), eff, 0.0, bool(prov.get("complete")))
    if prov.get("input_fingerprint") and fingerprint(arr, in_url) != prov["input_fingerprint"]:
        res.problems.append(f"the input {in_url} changed since the output was written (fingerprint differs)")

    base = spec_dir(prov)
    # distance_transform's default sampling is the voxel size of the level read, as the run took it
    steps = OO.with_voxel_sizes(steps_of(prov), in_ome.get("info"), int(in_spec.get("level", 0) or 0))
    chain = _chain(res, steps, in_axes, base)
    if chain is None:
        return res
    rel = (TOL_FFT if chain.fft else TOL)[eff]
    res.relative_tolerance = rel

    # which tiles; manifest keys count tiles in the order the ops computed in (tczyx)
    pass_index = OO.passes_before(steps, in_axes)
    done: set[str] | None = None
    if not res.complete:
        done = Manifest(output_url, storage_options).done()
        res.problems.append(f"the output is incomplete ({len(done)} of {len(grid)} tiles recorded); "
                            "only recorded tiles were checked (`convpipe run --resume` finishes it)")
        prefixes = {k.split(".", 1)[0] for k in done}
        if len(prefixes) == 1:
            pass_index = int(next(iter(prefixes))[1:] or 0)
    order = [out_axes.index(a) for a in canonical(out_axes)]

    def key_of(idx):
        return f"p{pass_index}." + ".".join(str(idx[i]) for i in order)

    cands = [g for g in grid if done is None or key_of(g) in done]
    if not all and sample < len(cands):
        rng = np.random.default_rng(seed)
        pick = sorted(rng.choice(len(cands), size=max(0, int(sample)), replace=False).tolist())
        cands = [cands[j] for j in pick]

    # the trailing point ops (for the quantization allowance)
    n_tail = 0
    for name, _ in reversed(steps):
        if name not in O.POINT_OPS:
            break
        n_tail += 1
    head = [{n: p} for n, p in steps[: len(steps) - n_tail]]
    tail = steps[len(steps) - n_tail:]
    quantizing = out_dtype.kind in "iub" or any(
        name in QUANTIZING or (name == "astype" and np.dtype(p["dtype"]).kind in "iub") for name, p in tail)

    def oracle_of(x: np.ndarray, tables: dict | None = None, offset: dict | None = None):
        nonlocal tail
        # a window's stochastic draws are those of its global coordinates
        steps_ = [{n: dict(p, offset=offset) if n == "stochastic" and offset else p} for s in head
                  for n, p in s.items()]
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            v, d = O.oracle(steps_, x, in_axes, base_dir=base, source=(arr, in_axes), tables=tables,
                            tile=dict(zip(out_axes, tile)))
            # threshold {method} in the tail (whole array here): its value, so that the quantization allowance
            # (tail_interval) moves the values around the whole array's threshold, not a tile's
            tail = OO.resolve_thresholds(tail, v, d)
            ref, d = O.oracle([{n: p} for n, p in tail], v, d)
        ref = np.asarray(ref, dtype=np.float64)
        ref = saturate(ref, out_dtype) if out_dtype.kind in "iub" else ref
        return np.asarray(v, dtype=np.float64), ref, d

    in_shape = dict(zip(in_axes, (int(n) for n in arr.shape)))
    whole_ref = None
    if chain.whole_array:
        need = int(np.prod(arr.shape, dtype=np.int64)) * 8
        if need > max_bytes:
            res.problems.append(f"{chain.whole_array}: that needs the whole input in memory ({need / 2**30:.1f} GiB "
                                f"in float64), more than max_bytes ({max_bytes / 2**30:.1f} GiB)")
            return res
        want: dict = {}
        whole_ref = oracle_of(np.asarray(arr[...]), want)
        res.notes.append(f"{chain.whole_array}: the oracle ran on the whole input")
        if whole_ref[2] != out_axes:
            res.problems.append(f"the oracle's axes {whole_ref[2]!r} are not the output's {out_axes!r}")
            return res
        outputs = prov.get("outputs") or {}
        for i in sorted(want):
            path = f"steps[{i}].{steps[i][0]}"
            rec = outputs.get(path)
            if not res.complete:
                res.notes.append(f"{path}: the table is written when the run completes; not checked")
            elif not rec or "table" not in rec:
                res.problems.append(f"{path}: the output's provenance records no table for this step")
            else:
                got = read_table(str(rec["table"]), spec.get("output", {}).get("storage_options") or None)
                res.tables.append(_compare_table(path, str(rec["table"]), got, want[i], rel))

    for idx in cands:
        region = tuple((j * t, min((j + 1) * t, n)) for j, t, n in zip(idx, tile, shape))
        reg = dict(zip(out_axes, region))
        if whole_ref is not None:
            v, ref, d = whole_ref
            core = tuple(slice(*reg[a]) for a in out_axes)
        else:
            win = {}
            for a in in_axes:
                n = in_shape[a]
                lo, hi = reg.get(a, (0, n))
                m = chain.margin[a] + 1 if chain.margin[a] else 0
                win[a] = (0, n) if a in chain.whole_axes else (max(0, lo - m), min(n, hi + m))
            v, ref, d = oracle_of(np.asarray(arr[tuple(slice(*win[a]) for a in in_axes)]),
                                  offset={a: w[0] for a, w in win.items()})
            if d != out_axes:
                res.problems.append(f"the oracle's axes {d!r} are not the output's {out_axes!r}")
                return res
            core = tuple(slice(reg[a][0] - win.get(a, (0, 0))[0], reg[a][1] - win.get(a, (0, 0))[0])
                         for a in out_axes)
        got = np.asarray(out[tuple(slice(lo, hi) for lo, hi in region)]).astype(np.float64)
        res.checked.append(_compare(key_of(idx), idx, region, got, ref[core], v[core], rel,
                                    _is_orientation(steps), (tail, d, out_dtype) if quantizing else None))

    scale = max([1.0] + [t.max_ref for t in res.checked if math.isfinite(t.max_ref)])
    for t in res.checked:
        t.tolerance = rel * scale
    if quantizing:
        res.notes.append("the output is quantized (threshold / integer dtype): voxels whose oracle value lies "
                         "within the tolerance of a step were accepted on either side of it")
    return res


def _is_orientation(steps: list[tuple[str, dict]]) -> bool:
    """The last op that changes values is an edge orientation: compare angles modulo 2 pi (pi == -pi)."""
    for name, p in reversed(steps):
        if name in O.POINT_OPS or name in ("peaks", "blobs", "stats"):
            continue
        return name in O.EDGE_SMOOTH and p.get("output") == "orientation"
    return False


def _compare(key, idx, region, got, ref, v, rel, circular, quant) -> TileCheck:
    with np.errstate(invalid="ignore"):
        nan_mis = np.isnan(got) != np.isnan(ref)
        inf_mis = (np.isinf(got) | np.isinf(ref)) & ~(got == ref)
        mism = nan_mis | (inf_mis & ~np.isnan(got) & ~np.isnan(ref))
        both = np.isfinite(got) & np.isfinite(ref)
        err = np.where(both, np.abs(got - ref), 0.0)
        if circular:
            err = np.where(both, np.abs(np.angle(np.exp(1j * (got - ref)))), 0.0)
        finite_ref = np.abs(ref[np.isfinite(ref)])
        max_ref = float(finite_ref.max()) if finite_ref.size else 0.0
        if quant is not None:
            tail, d, out_dtype = quant
            fv = np.abs(v[np.isfinite(v)])
            t = rel * max(1.0, float(fv.max()) if fv.size else 0.0)
            lo, hi = tail_interval(v - t, v + t, tail, d, out_dtype)
            excused = (got >= np.minimum(lo, hi)) & (got <= np.maximum(lo, hi))
            err = np.where(excused, 0.0, err)
            mism = mism & ~excused
    worst = None
    wo = wr = None
    bad = err + np.where(mism, np.inf, 0.0)
    if bad.size and (bad.max() > 0):
        i = np.unravel_index(int(np.argmax(bad)), bad.shape)
        worst = tuple(int(s + j) for (s, _), j in zip(region, i))
        wo, wr = float(got[i]), float(ref[i])
    return TileCheck(key, tuple(int(j) for j in idx), tuple(region), float(err.max()) if err.size else 0.0,
                     max_ref, int(mism.sum()), worst, wo, wr)
