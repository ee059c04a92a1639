"""``convpipe demo``: make sample data, run every example pipeline, write a preview PNG.

Everything is local and synthetic (numpy only, no network): a uint16 3-D stack of blurred "nuclei" on a
gradient with noise, and a uint16 2-D image with nuclei, a gradient and a sharp-edged rectangle. The
example specs ship inside the package (``convpipe/pipelines/``; in a source checkout that folder links to
the repository's ``pipelines/``, the one copy). They read ``../demo-out/<name>.zarr``; the demo points them
at its own ``out`` folder instead, so ``convpipe demo --out DIR`` works from anywhere, installed or not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import InputError

#: the sample data the example pipelines read, by file name
STACK_SHAPE = (16, 256, 256)
STACK_CHUNKS = (8, 128, 128)
IMAGE_SHAPE = (512, 512)
IMAGE_CHUNKS = (256, 256)
NUCLEI_SHAPE = (32, 128, 128)
NUCLEI_CHUNKS = (16, 64, 64)
#: the pipeline whose output the preview shows (the first one when it is absent)
PREVIEW_OF = "edges"


def pipelines_dir() -> Path:
    """The example specs: the package's ``pipelines/`` folder (a wheel ships them as package data)."""
    return Path(__file__).resolve().parent / "pipelines"


def _blobs(shape: tuple[int, ...], n: int, rng: np.random.Generator, sigma: tuple[float, float]) -> np.ndarray:
    """Sum of ``n`` anisotropic Gaussian blobs at random places (each drawn only in its own window)."""
    out = np.zeros(shape, dtype=np.float64)
    for _ in range(n):
        center = [rng.uniform(0, s) for s in shape]
        s_xy = rng.uniform(*sigma)
        sig = [max(0.6, s_xy / 3.0) if len(shape) == 3 and d == 0 else s_xy * rng.uniform(0.8, 1.25)
               for d in range(len(shape))]
        amp = rng.uniform(0.5, 1.0)
        lo = [max(0, int(c - 4 * s)) for c, s in zip(center, sig)]
        hi = [min(n_, int(c + 4 * s) + 1) for c, s, n_ in zip(center, sig, shape)]
        grids = np.meshgrid(*[np.arange(a, b, dtype=np.float64) for a, b in zip(lo, hi)], indexing="ij",
                            sparse=True)
        r2 = sum(((g - c) / s) ** 2 for g, c, s in zip(grids, center, sig))
        out[tuple(slice(a, b) for a, b in zip(lo, hi))] += amp * np.exp(-0.5 * r2)
    return out


def make_stack(shape: tuple[int, int, int] = STACK_SHAPE, seed: int = 0) -> np.ndarray:
    """A synthetic uint16 ``zyx`` stack: blurred nuclei + a smooth gradient + Gaussian noise."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    nuclei = _blobs(shape, n=max(1, y * x // 900), rng=rng, sigma=(3.0, 7.0))
    zz, yy, xx = np.meshgrid(np.linspace(0, 1, z), np.linspace(0, 1, y), np.linspace(0, 1, x),
                             indexing="ij", sparse=True)
    background = 0.15 + 0.10 * xx + 0.05 * yy + 0.03 * zz
    img = background + 0.7 * np.clip(nuclei, 0, 1.2) + rng.normal(0.0, 0.02, shape)
    return np.clip(img * 40000, 0, 65535).astype(np.uint16)


def make_image(shape: tuple[int, int] = IMAGE_SHAPE, seed: int = 1) -> np.ndarray:
    """A synthetic uint16 ``yx`` image: nuclei, a diagonal gradient, a few straight edges, noise."""
    rng = np.random.default_rng(seed)
    y, x = shape
    nuclei = _blobs(shape, n=max(1, y * x // 1200), rng=rng, sigma=(3.0, 9.0))
    yy, xx = np.meshgrid(np.linspace(0, 1, y), np.linspace(0, 1, x), indexing="ij", sparse=True)
    img = 0.1 + 0.15 * (xx + yy) / 2 + 0.7 * np.clip(nuclei, 0, 1.2)
    img = img + 0.1 * ((yy > 0.8) & (xx < 0.3))  # a bright rectangle with sharp edges
    img = img + rng.normal(0.0, 0.02, shape)
    return np.clip(img * 40000, 0, 65535).astype(np.uint16)


def make_nuclei(shape: tuple[int, int, int] = NUCLEI_SHAPE, n: int = 30, seed: int = 2
                ) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic uint16 ``zyx`` stack of ``n`` solid balls ("nuclei", radius 3-8 voxels, apart by at least
    4 voxels, some cut by the stack's edge) of uneven brightness on a dim noisy background; also their
    centres (n, 3)."""
    rng = np.random.default_rng(seed)
    centres: list[np.ndarray] = []
    radii: list[float] = []
    while len(centres) < n:  # rejection sampling: a ball keeps 4 voxels away from the others
        c, r = np.array([rng.uniform(0, s) for s in shape]), rng.uniform(3.0, 8.0)
        if all(np.linalg.norm(c - c2) > r + r2 + 4 for c2, r2 in zip(centres, radii)):
            centres.append(c)
            radii.append(r)
    img = np.full(shape, 0.08) + rng.normal(0.0, 0.03, shape)
    for c, r, amp in zip(centres, radii, rng.uniform(0.5, 0.9, n)):
        lo = [max(0, int(ci - r)) for ci in c]
        hi = [min(s, int(ci + r) + 2) for ci, s in zip(c, shape)]
        g = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij", sparse=True)
        inside = sum((gi - ci) ** 2 for gi, ci in zip(g, c)) <= r * r
        img[tuple(slice(a, b) for a, b in zip(lo, hi))] += amp * inside
    return np.clip(img * 40000, 0, 65535).astype(np.uint16), np.array(centres)


def _write(path: Path, data: np.ndarray, chunks: tuple[int, ...]) -> None:
    import zarr

    zarr.create_array(store=str(path), shape=data.shape, chunks=chunks, dtype=data.dtype, zarr_format=3,
                      overwrite=True, attributes={"convpipe_demo": "synthetic sample data"})[...] = data


def _preview(url: str, png: Path) -> None:
    """A PNG of the middle plane of ``url``: convpipe.preview when this build has it, else matplotlib."""
    try:
        from .preview import render_preview
    except ImportError:
        render_preview = None
    import zarr

    arr = zarr.open_array(store=url, mode="r")
    index = {"z": arr.shape[0] // 2} if arr.ndim == 3 else {}
    if render_preview is not None:
        render_preview(url, index=index, png=png)
        return
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plane = np.asarray(arr[arr.shape[0] // 2] if arr.ndim == 3 else arr[...], dtype=np.float64)
    lo, hi = np.percentile(plane, [1, 99.5])
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.imshow(plane, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    ax.set_title(Path(url).name + (f"  z={index['z']}" if index else ""), fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def _real_images(out: Path) -> list[str]:
    """scikit-image's bundled coins and Hubble Deep Field (no network), when scikit-image is installed."""
    try:
        from skimage import color, data
    except ImportError:
        return []
    _write(out / "coins.zarr", data.coins(), (152, 192))
    hubble = color.rgb2gray(data.hubble_deep_field()).astype(np.float32)
    _write(out / "hubble.zarr", hubble, (256, 256))
    return ["coins.zarr", "hubble.zarr"]


def _relocated(path: Path, out: Path) -> dict:
    """The spec at ``path`` with its input, output and table files placed in ``out`` (same file names)."""
    import yaml

    spec = yaml.safe_load(path.read_text())
    spec["input"]["url"] = str((out / Path(spec["input"]["url"]).name).resolve())
    spec["output"]["url"] = str((out / Path(spec["output"]["url"]).name).resolve())
    for step in spec.get("steps", []):
        for params in step.values():
            if isinstance(params, dict) and isinstance(params.get("table"), str):
                params["table"] = str((out / Path(params["table"]).name).resolve())
            for field in ("kernel", "kernels", "weights", "template"):  # .npy files stay beside the spec
                v = params.get(field) if isinstance(params, dict) else None
                if isinstance(v, str) and v.endswith(".npy") and not Path(v).is_absolute():
                    params[field] = str((path.parent / v).resolve())
    return spec


def write_sample_data(out: Path) -> list[str]:
    """The sample data the example pipelines read, written to ``out``; returns the real images written
    (scikit-image's, when it is installed). Shared by the demo and the benchmark's example estimates."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stack = make_stack()
    _write(out / "stack.zarr", stack, STACK_CHUNKS)
    _write(out / "image.zarr", make_image(), IMAGE_CHUNKS)
    _write(out / "plane.zarr", stack[STACK_SHAPE[0] // 2], STACK_CHUNKS[1:])  # a 256 x 256 image
    _write(out / "nuclei.zarr", make_nuclei()[0], NUCLEI_CHUNKS)
    return _real_images(out)


def run_demo(out: Path, *, echo: Callable[[str], None] = print, pipelines: Path | None = None) -> None:
    """Write sample data to ``out``, run every spec in ``pipelines/`` on it, and save ``out/preview.png``.

    Each spec's input and output file names are kept and placed in ``out`` (the specs in the repository
    read ``../demo-out/NAME.zarr``). Existing demo outputs are replaced.

    Raises
    ------
    InputError
        When the ``pipelines/`` folder is absent or holds no spec.
    """
    from . import load

    out = Path(out)
    folder = Path(pipelines) if pipelines is not None else pipelines_dir()
    if not folder.is_dir():
        raise InputError(f"no example pipelines: {folder} does not exist (the package ships them in "
                         "convpipe/pipelines/; reinstall convpipe)")
    specs = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    if not specs:
        raise InputError(f"no example pipelines: {folder} holds no *.yaml spec")
    t0 = time.perf_counter()
    real = write_sample_data(out)
    echo(f"sample data: {out / 'stack.zarr'} {STACK_SHAPE} uint16, {out / 'image.zarr'} {IMAGE_SHAPE} uint16, "
         f"{out / 'nuclei.zarr'} {NUCLEI_SHAPE} uint16"
         + (f", {', '.join(real)} (scikit-image)" if real else "") + f" ({time.perf_counter() - t0:.2f} s)")

    outputs: dict[str, str] = {}
    for path in specs:
        p = load(_relocated(path, out))
        if p.spec.output is None:
            raise InputError(f"{path}: an example pipeline needs an output section")
        if not Path(p.spec.input.url).exists():
            echo(f"{p.spec.name:24s} skipped: {Path(p.spec.input.url).name} needs scikit-image's sample images")
            continue
        res = p.run(overwrite=True)
        outputs[p.spec.name] = res.output_url
        echo(f"{p.spec.name:24s} {res.elapsed:6.2f} s  {res.output_url}")

    png = out / "preview.png"
    _preview(outputs.get(PREVIEW_OF) or next(iter(outputs.values())), png)
    echo(f"preview: {png}")
