"""Kernels: inline lists, ``.npy`` files and named kernels; normalisation; separability.

A kernel source in a spec is one of

- an inline nested list (``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]``),
- a path to a ``.npy`` file (relative to the spec's folder),
- a named kernel ``{name: gaussian, sigma: 2}`` (see :data:`NAMED`).

Kernels are returned as C-contiguous float64 arrays: dask's tokenize once gave a kernel and its transposed
view the same key, so nothing here hands out views.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .limits import MAX_HALO, MAX_KERNEL_TAPS, taps_ok

# --------------------------------------------------------------------------- named kernels


def _grid(radius: int, ndim: int) -> list[np.ndarray]:
    r = np.arange(-radius, radius + 1, dtype=float)
    return list(np.meshgrid(*([r] * ndim), indexing="ij"))


def _gaussian(sigma: float = 1.0, truncate: float = 4.0, ndim: int = 2, radius: int | None = None) -> np.ndarray:
    rad = int(truncate * float(sigma) + 0.5) if radius is None else int(radius)
    g = _grid(rad, ndim)
    k = np.exp(-sum(x * x for x in g) / (2.0 * float(sigma) ** 2))
    return k / k.sum()


def _box(size: int = 3, ndim: int = 2) -> np.ndarray:
    return np.full((int(size),) * ndim, 1.0 / int(size) ** ndim)


def _edge(smooth: list[float]) -> Callable[..., np.ndarray]:
    def make(axis: str | int = "x", ndim: int = 2) -> np.ndarray:
        ax = {"x": ndim - 1, "y": ndim - 2, "z": ndim - 3}.get(axis, axis) if isinstance(axis, str) else axis
        if not isinstance(ax, int) or not 0 <= ax < ndim:
            raise ValueError(f"axis {axis!r} does not fit a {ndim}-D kernel")
        k = np.ones((1,) * ndim)
        for d in range(ndim):
            w = np.array([-1.0, 0.0, 1.0]) if d == ax else np.asarray(smooth, float)
            k = k * w.reshape([-1 if i == d else 1 for i in range(ndim)])
        return k
    return make


def _laplace(ndim: int = 2) -> np.ndarray:
    k = np.zeros((3,) * ndim)
    c = (1,) * ndim
    k[c] = -2.0 * ndim
    for d in range(ndim):
        for s in (0, 2):
            idx = list(c)
            idx[d] = s
            k[tuple(idx)] = 1.0
    return k


def _log(sigma: float = 1.0, truncate: float = 4.0, ndim: int = 2) -> np.ndarray:
    rad = int(truncate * float(sigma) + 0.5)
    g = _grid(rad, ndim)
    r2 = sum(x * x for x in g)
    s2 = float(sigma) ** 2
    k = (r2 - ndim * s2) / (s2 * s2) * np.exp(-r2 / (2 * s2))
    return k - k.mean()  # zero DC, so flat regions give zero


def _gabor(frequency: float = 0.1, theta: float = 0.0, sigma: float | None = None, radius: int | None = None,
           offset: float = 0.0) -> np.ndarray:
    sigma = float(sigma) if sigma is not None else 0.56 / float(frequency)
    rad = int(np.ceil(3 * sigma)) if radius is None else int(radius)
    y, x = _grid(rad, 2)
    xr = x * np.cos(theta) + y * np.sin(theta)
    yr = -x * np.sin(theta) + y * np.cos(theta)
    env = np.exp(-(xr ** 2 + yr ** 2) / (2 * sigma ** 2)) / (2 * np.pi * sigma ** 2)
    return env * np.cos(2 * np.pi * frequency * xr + offset)


def _disk(radius: int = 2, ndim: int = 2) -> np.ndarray:
    g = _grid(int(radius), ndim)
    k = (sum(x * x for x in g) <= int(radius) ** 2).astype(float)
    return k / k.sum()


NAMED: dict[str, Callable[..., np.ndarray]] = {
    "gaussian": _gaussian,
    "box": _box,
    "sobel": _edge([1.0, 2.0, 1.0]),
    "prewitt": _edge([1.0, 1.0, 1.0]),
    "scharr": _edge([3 / 16, 10 / 16, 3 / 16]),
    "laplace": _laplace,
    "log": _log,
    "gabor": _gabor,
    "sharpen": lambda: np.array([[0.0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
    "emboss": lambda: np.array([[-2.0, -1, 0], [-1, 1, 1], [0, 1, 2]]),
    "disk": _disk,
}


# --------------------------------------------------------------------------- loading


#: Named kernels are built from a few numbers in a spec; one that would hold more weights than this is refused
#: before it is allocated (validate and the job service build kernels: a spec must not make them allocate GiBs).
MAX_NAMED_KERNEL = MAX_KERNEL_TAPS


class KernelFile(str):
    """A ``.npy`` kernel path as the spec wrote it, carrying the array :mod:`convpipe.bind` loaded from it.

    A ``str``, so a spec's canonical form, hash and provenance keep the path as written; ops get the array
    through :func:`kernel_from_source` without reading the file again (the file is read once, by bind,
    after the job service checked it against its roots).
    """

    array: np.ndarray
    path: str

    def __new__(cls, value: str, array: np.ndarray, path: str) -> "KernelFile":
        obj = super().__new__(cls, value)
        obj.array = array
        obj.path = path
        return obj

    def __reduce__(self):
        return (KernelFile, (str(self), self.array, self.path))


def is_kernel_file(src: Any) -> bool:
    """Whether a kernel source names a file (a string that is not yet bound to its array)."""
    return isinstance(src, str) and not isinstance(src, KernelFile)


def check_kernel_path(src: str) -> None:
    """The syntactic checks of a kernel file path (parsing reads no file)."""
    if not src.strip():
        raise ValueError("a kernel file path is empty")
    if "\x00" in src:
        raise ValueError("a kernel file path holds a NUL character")
    if not src.endswith(".npy"):
        raise ValueError(f"kernel file {src!r} must be a .npy file")


def kernel_or_none(src: Any) -> np.ndarray | None:
    """The kernel of a source without reading any file: None for a ``.npy`` path not yet bound (its path is
    checked syntactically; :mod:`convpipe.bind` loads and checks it). Raises ValueError with the cause."""
    if is_kernel_file(src):
        check_kernel_path(src)
        return None
    return kernel_from_source(src)


def resolve_kernel_path(src: str, base_dir: Path | None) -> Path:
    path = Path(src).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return path


def load_kernel_file(path: Path, *, relative_to: Path | None = None) -> np.ndarray:
    """Read a ``.npy`` kernel: its header first (shape and dtype within the limits), then the weights.

    ``relative_to``: the folder a relative path was resolved against (named in a not-found message).
    Raises ValueError with the cause.
    """
    from .roots import guard

    guard(str(path), what="kernel file")
    hint = f" (relative paths resolve against the spec's folder, {relative_to})" if relative_to is not None else ""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    except FileNotFoundError:
        raise ValueError(f"kernel file not found: {path}{hint}") from None
    except IsADirectoryError:
        raise ValueError(f"kernel file {path} is a folder, not a .npy file") from None
    except PermissionError:
        raise ValueError(f"kernel file {path} cannot be read (permission denied)") from None
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"kernel file {path} is not a .npy array ({e})") from None
    if dtype.hasobject:
        raise ValueError(f"kernel file {path} holds Python objects, which cannot be read without pickles "
                         "(a kernel must be numeric)")
    if dtype.kind not in "biuf":
        raise ValueError(f"kernel file {path} holds {dtype} values; a kernel must be numeric")
    taps_ok(tuple(shape), f"kernel file {path}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"kernel file {path} cannot be read without pickles: {e}") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"kernel file {path} cannot be read ({e})") from None


def _pow(w: float, n: float) -> float:
    try:
        return float(w) ** n
    except OverflowError:
        return math.inf


def _named_size(name: str, p: dict) -> tuple[float, float]:
    """(weights, widest extent in taps) a named kernel would have (floats: no overflow), from its parameters."""
    ndim = float(p.get("ndim", 2))
    if ndim != int(ndim) or not 1 <= ndim <= 5:
        raise ValueError(f"ndim must be an integer from 1 to 5, got {p.get('ndim')!r}")
    if name in ("gaussian", "log"):
        sigma, truncate = float(p.get("sigma", 1.0)), float(p.get("truncate", 4.0))
        if not (sigma > 0 and math.isfinite(sigma) and truncate > 0 and math.isfinite(truncate)):
            raise ValueError("sigma and truncate must be positive and finite")
        rad = float(p["radius"]) if p.get("radius") is not None else truncate * sigma + 0.5
        w = 2.0 * math.floor(rad) + 1
        return _pow(w, ndim), w
    if name == "box":
        size = float(p.get("size", 3))
        if not (size >= 1 and size == int(size)):
            raise ValueError(f"size must be a positive integer, got {p.get('size')!r}")
        return _pow(size, ndim), size
    if name == "disk":
        r = float(p.get("radius", 2))
        if not (r >= 0 and math.isfinite(r)):
            raise ValueError(f"radius must be >= 0, got {p.get('radius')!r}")
        w = 2.0 * math.floor(r) + 1
        return _pow(w, ndim), w
    if name == "gabor":
        f = float(p.get("frequency", 0.1))
        if not (f > 0 and math.isfinite(f)):
            raise ValueError(f"frequency must be positive, got {p.get('frequency')!r}")
        sigma = float(p["sigma"]) if p.get("sigma") is not None else 0.56 / f
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError("sigma must be positive and finite")
        rad = float(p["radius"]) if p.get("radius") is not None else math.ceil(3 * sigma)
        w = 2.0 * math.floor(rad) + 1
        return _pow(w, 2), w
    return 3.0 ** ndim, 3.0  # sobel, prewitt, scharr, laplace (and the fixed 3x3 ones)


def kernel_from_source(src: Any, base_dir: Path | None = None) -> np.ndarray:
    """Build a float64 C-contiguous kernel from a spec's kernel source. Raises ValueError with the cause.

    A ``.npy`` path is read here only when it was not bound (:class:`KernelFile` carries the loaded array).
    """
    if isinstance(src, KernelFile):
        k = src.array
    elif isinstance(src, dict):
        src = dict(src)
        name = src.pop("name", None)
        if name is not None and not isinstance(name, str):
            raise ValueError(f"a kernel name is a string, got {type(name).__name__}")
        if name is None:
            raise ValueError(f"a named kernel needs 'name' (one of {', '.join(sorted(NAMED))})")
        if name not in NAMED:
            import difflib

            close = difflib.get_close_matches(str(name), list(NAMED), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown kernel {name!r}{hint}; named kernels: {', '.join(sorted(NAMED))}")
        try:
            n, width = _named_size(name, src)
            if n > MAX_NAMED_KERNEL:
                many = f"{n:.3g}" if math.isfinite(n) else "more than 1e308"
                raise ValueError(f"it would hold {many} weights (at most {MAX_NAMED_KERNEL}); "
                                 "use smaller parameters")
            if width > 2 * MAX_HALO + 1:
                raise ValueError(f"it would be {width:.3g} taps wide (at most {2 * MAX_HALO + 1} along an axis)")
            k = NAMED[name](**src)
        except (TypeError, ValueError, ZeroDivisionError, OverflowError, MemoryError) as e:
            raise ValueError(f"kernel {name!r}: {e}") from None
    elif isinstance(src, str):
        check_kernel_path(src)
        path = resolve_kernel_path(src, base_dir)
        rel = base_dir if not Path(src).expanduser().is_absolute() and base_dir is not None else None
        k = load_kernel_file(path, relative_to=rel)
    elif isinstance(src, (list, tuple, np.ndarray)):
        try:
            k = np.array(src, dtype=float)
        except (ValueError, TypeError, OverflowError):
            raise ValueError("kernel is ragged or not numeric: every row must have the same length") from None
        if k.ndim > 5:
            raise ValueError(f"kernel has {k.ndim} dimensions; at most 5")
        taps_ok(k.shape)
    elif isinstance(src, bool):
        raise ValueError("a kernel is a nested list, a .npy path or a named kernel mapping, got a boolean")
    elif isinstance(src, (int, float)):
        k = np.array([float(src)])
    else:
        raise ValueError(f"a kernel is a nested list, a .npy path or a named kernel mapping, got {type(src).__name__}")
    k = np.asarray(k)
    if k.dtype.kind not in "biuf":
        raise ValueError(f"kernel must be numeric, got dtype {k.dtype}")
    if k.size == 0 or 0 in k.shape:
        raise ValueError("kernel is empty")
    if not np.all(np.isfinite(k)):
        raise ValueError("kernel has NaN or infinite weights")
    return np.ascontiguousarray(k, dtype=np.float64)


def normalize(k: np.ndarray, how: str = "none", temperature: float = 1.0) -> np.ndarray:
    """Normalise weights: ``none``, ``sum`` (divide by the sum), ``l1`` (by the sum of |w|), ``softmax``."""
    if how == "none":
        return k
    if how == "sum":
        s = k.sum()
        if abs(s) < 1e-12 * max(1.0, float(np.abs(k).max())):
            raise ValueError("normalize: sum needs weights whose sum is not zero (this kernel sums to 0)")
        return np.ascontiguousarray(k / s)
    if how == "l1":
        s = np.abs(k).sum()
        if s == 0:
            raise ValueError("normalize: l1 needs a kernel with a non-zero weight")
        return np.ascontiguousarray(k / s)
    if how == "softmax":
        if not temperature > 0:
            raise ValueError("softmax temperature must be > 0")
        z = k / float(temperature)
        e = np.exp(z - z.max())
        return np.ascontiguousarray(e / e.sum())
    raise ValueError(f"unknown normalize {how!r}")


def separable_factors(k: np.ndarray, rtol: float = 1e-12) -> list[np.ndarray] | None:
    """1-D factors whose outer product is ``k`` (rank one), or None when ``k`` is not separable."""
    if k.ndim == 1:
        return [k.copy()]
    amax = float(np.abs(k).max())
    if amax == 0:
        return None
    pivot = np.unravel_index(np.argmax(np.abs(k)), k.shape)
    factors = []
    for d in range(k.ndim):
        idx = list(pivot)
        idx[d] = slice(None)
        factors.append(np.array(k[tuple(idx)], dtype=float))
    scale = k[pivot] ** (k.ndim - 1)
    factors[0] = factors[0] / scale
    recon = factors[0]
    for f in factors[1:]:
        recon = np.multiply.outer(recon, f)
    if np.max(np.abs(recon - k)) <= rtol * amax * 10:
        return [np.ascontiguousarray(f) for f in factors]
    return None


def source_name(source: str) -> str:
    """A kernel source as a channel label: a file by its base name (``bank.npy``), a named kernel as written."""
    import os

    return os.path.basename(source.rstrip("/")) or source
