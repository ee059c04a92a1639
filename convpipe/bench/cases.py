"""The benchmark's cases: each pipeline with its whole-array scipy oracle and its dask-image equivalent.

The oracles follow SPEC semantics: an op with ``axes: yx`` is the 2-D op of every plane.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .registry import Case, add_case

__all__ = ["FFT_LOWPASS", "fft_lowpass_mask", "fft_lowpass_planes"]


def _radius(sigma: float, truncate: float = 4.0) -> int:
    """scipy.ndimage's Gaussian kernel radius."""
    return int(truncate * float(sigma) + 0.5)


def _per_plane(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Apply a 2-D function to every plane of a (..., y, x) stack (the op's `axes: yx`)."""

    def apply(a: np.ndarray) -> np.ndarray:
        out = None
        for idx in np.ndindex(*a.shape[:-2]):
            r = fn(a[idx])
            if out is None:
                out = np.empty(a.shape[:-2] + r.shape, dtype=r.dtype)
            out[idx] = r
        return out

    return apply


def _sobel_magnitude_2d(p: np.ndarray) -> np.ndarray:
    import scipy.ndimage as ndi

    dy = ndi.sobel(p, axis=0)
    dx = ndi.sobel(p, axis=1)
    return np.sqrt(dy * dy + dx * dx)


def _light_oracle(a: np.ndarray) -> np.ndarray:
    import scipy.ndimage as ndi

    return _per_plane(lambda p: _sobel_magnitude_2d(ndi.gaussian_filter(p, 2.0)))(a)


def _heavy_oracle(a: np.ndarray) -> np.ndarray:
    import scipy.ndimage as ndi

    g = ndi.gaussian_filter(a, (1.0, 3.0, 3.0))
    return _per_plane(lambda p: ndi.uniform_filter(ndi.gaussian_laplace(p, 2.0), 5))(g)


def _sobel_kernels() -> tuple[np.ndarray, np.ndarray]:
    """(1, 3, 3) correlation kernels of scipy.ndimage.sobel(plane, axis=0) and axis=1.

    Contiguous copies on purpose: dask's tokenize gives a (1, 3, 3) kernel and its transposed *view* the
    same token, so dask-image would give both correlations one graph key and hypot(dy, dx) comes out wrong.
    """
    d = np.array([-1.0, 0.0, 1.0])
    s = np.array([1.0, 2.0, 1.0])
    ky = np.ascontiguousarray(np.outer(d, s)[None])
    kx = np.ascontiguousarray(np.outer(s, d)[None])
    return ky, kx


def _light_dask_image(x: Any) -> Any:
    import dask.array as da
    import dask_image.ndfilters as nf

    g = nf.gaussian_filter(x, sigma=(0, 2, 2))
    ky, kx = _sobel_kernels()
    if type(x._meta).__module__.split(".")[0] == "cupy":  # pragma: no cover - GPU machines only
        import cupy

        ky, kx = cupy.asarray(ky), cupy.asarray(kx)
    # dask_image.ndfilters.sobel on a 3-D array smooths along z as well; per-plane Sobel is a (1, 3, 3) correlation
    dy = nf.correlate(g, ky)
    dx = nf.correlate(g, kx)
    return da.sqrt(dy * dy + dx * dx)


def _heavy_dask_image(x: Any) -> Any:
    import dask_image.ndfilters as nf

    g = nf.gaussian_filter(x, sigma=(1, 3, 3))
    # NOT gaussian_laplace(g, sigma=(0, 2, 2)): scipy (so dask-image) adds d²/dz² of a sigma-0 Gaussian,
    # which is the plain yx-smoothed image, to the sum, i.e. LoG + G. The per-plane LoG is d²/dy² + d²/dx².
    lap = nf.gaussian_filter(g, sigma=(0, 2, 2), order=(0, 2, 0)) + nf.gaussian_filter(g, sigma=(0, 2, 2), order=(0, 0, 2))
    return nf.uniform_filter(lap, size=(1, 5, 5))


add_case(Case(
    name="io",
    title="I/O: read, cast to float32, write",
    steps=[],
    oracle=lambda a: a.astype(np.float32) if a.dtype != np.float64 else a,
    halo=(0, 0, 0),
    impls={},
    scipy_temporaries=1.0,
))

add_case(Case(
    name="light",
    title="gaussian σ=2 (yx) → Sobel magnitude (yx)",
    steps=[{"gaussian": {"sigma": {"y": 2, "x": 2}}}, {"sobel": {"axes": "yx"}}],
    oracle=_light_oracle,
    halo=(0, _radius(2) + 1, _radius(2) + 1),
    impls={"dask-image": _light_dask_image},
    scipy_temporaries=3.0,
))

add_case(Case(
    name="heavy",
    title="gaussian σ=(1,3,3) → gaussian_laplace σ=2 (yx) → uniform 5 (yx)",
    steps=[{"gaussian": {"sigma": {"z": 1, "y": 3, "x": 3}}},
           {"gaussian_laplace": {"sigma": {"y": 2, "x": 2}}},
           {"uniform": {"size": {"y": 5, "x": 5}}}],
    oracle=_heavy_oracle,
    halo=(_radius(1), _radius(3) + _radius(2) + 2, _radius(3) + _radius(2) + 2),
    impls={"dask-image": _heavy_dask_image},
    scipy_temporaries=4.0,
))


# Issue 4: FFT methods. A random (not separable) 41×41 kernel, so nothing can fold it into 1-D passes.
_K41 = np.random.default_rng(41).random((41, 41))
_K41 /= _K41.sum()


def _conv41_oracle(a: np.ndarray) -> np.ndarray:
    import scipy.ndimage as ndi

    return ndi.correlate(a, _K41[None], mode="reflect")  # direct, per plane (a (1, 41, 41) kernel)


FFT_LOWPASS = {"kind": "lowpass", "cutoff": 0.25, "shape": "butterworth", "order": 4}


def fft_lowpass_mask(ny: int, nx: int, cutoff: float = 0.25, order: float = 4.0) -> np.ndarray:
    """The Butterworth low-pass on the rfft2 grid of a (ny, nx) plane, written out plainly (float64):
    r = |f| / Nyquist, mask = 1 / (1 + (r / cutoff)^(2 order))."""
    fy = np.fft.fftfreq(ny)[:, None] / 0.5
    fx = np.fft.rfftfreq(nx)[None, :] / 0.5
    r = np.sqrt(fy * fy + fx * fx)
    return 1.0 / (1.0 + (r / cutoff) ** (2.0 * order))


def fft_lowpass_planes(a: np.ndarray, workers: int = 1) -> np.ndarray:
    """The plain whole-plane loop: rfft2 × mask → irfft2 for every (y, x) plane, in a's float dtype."""
    import scipy.fft

    ny, nx = a.shape[-2:]
    m = fft_lowpass_mask(ny, nx, FFT_LOWPASS["cutoff"], FFT_LOWPASS["order"]).astype(a.dtype)
    out = np.empty(a.shape, a.dtype)
    for idx in np.ndindex(*a.shape[:-2]):
        spec = scipy.fft.rfft2(a[idx], workers=workers)
        spec *= m
        out[idx] = scipy.fft.irfft2(spec, s=(ny, nx), workers=workers)
    return out


add_case(Case(
    name="conv41",
    title="correlate, random 41×41 kernel (yx), method fft (scipy: direct)",
    steps=[{"correlate": {"kernel": _K41.tolist(), "axes": "yx", "mode": "reflect", "method": "fft"}}],
    oracle=_conv41_oracle,
    halo=(0, 20, 20),
    impls={},
    scipy_temporaries=2.0,
))

add_case(Case(
    name="fft_lowpass",
    title="fft_filter lowpass butterworth cutoff 0.25 order 4 (yx)",
    steps=[{"fft_filter": dict(FFT_LOWPASS)}],
    oracle=lambda a: fft_lowpass_planes(a),
    halo=(0, None, None),
    impls={"numpy-fft": fft_lowpass_planes},
    scipy_temporaries=3.0,
))

