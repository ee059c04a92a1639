"""``convpipe ingest``: TIFF variants -> OME-Zarr, exactly; bounded memory; precise errors; the CLI."""

from __future__ import annotations

import tracemalloc
import warnings
from pathlib import Path

import dask
import numpy as np
import pytest
import tifffile
import typer
import zarr
from typer.testing import CliRunner

from convpipe.errors import InputError, OutputExistsError
from convpipe.cli.ingest import register
from convpipe.ingest import expand_paths, ingest, parse_chunks
from convpipe.ome import open_level

RNG = np.random.default_rng(7)
STACK = RNG.integers(0, 65535, size=(10, 48, 40), dtype=np.uint16)


def _validate_ngff(url: str, fmt: int) -> None:
    try:
        from ome_zarr_models.v04.image import Image as Image04
        from ome_zarr_models.v05.image import Image as Image05
    except ImportError:  # without the models, check the keys open_level relies on
        attrs = zarr.open_group(url, mode="r").attrs.asdict()
        assert ("multiscales" in attrs) if fmt == 2 else ("multiscales" in attrs["ome"])
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (Image04 if fmt == 2 else Image05).from_zarr(zarr.open_group(url, mode="r"))


@pytest.mark.parametrize("fmt", [2, 3])
@pytest.mark.parametrize(
    ("write_kw", "chunks"),
    [
        ({}, (3, 16, 16)),  # uncompressed, contiguous: read through a memmap
        ({"compression": "zlib"}, (4, 20, 40)),  # compressed strips: tifffile's zarr store
        ({"compression": "zlib", "tile": (16, 16)}, None),  # tiled
        ({"byteorder": ">"}, (10, 48, 40)),  # big-endian on disk
    ],
)
def test_multipage_tiff_roundtrip_exact(tmp_path: Path, fmt: int, write_kw: dict, chunks) -> None:
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, STACK, **write_kw)
    out = str(tmp_path / "out.zarr")
    arr = ingest([str(src)], out, chunks=chunks, zarr_format=fmt)
    expected = tifffile.imread(src)
    assert arr.dtype == expected.dtype and arr.shape == expected.shape
    np.testing.assert_array_equal(arr[...], expected)
    if chunks:
        assert arr.chunks == tuple(chunks)
    level0, axes, info = open_level(out)
    assert axes == "zyx" and info is not None and info.paths == ("0",)
    assert level0.metadata.zarr_format == fmt
    _validate_ngff(out, fmt)
    assert zarr.open_group(out, mode="r").attrs["convpipe"]["complete"] is True


def test_glob_of_planes_natural_order(tmp_path: Path) -> None:
    planes = tmp_path / "planes"
    planes.mkdir()
    for i in range(12):  # p2 must come before p10
        tifffile.imwrite(planes / f"p{i}.tif", STACK[i % 10] + i)
    out = str(tmp_path / "stack.zarr")
    arr = ingest([str(planes / "p*.tif")], out, chunks=(5, 48, 16))
    expected = np.stack([tifffile.imread(planes / f"p{i}.tif") for i in range(12)])
    np.testing.assert_array_equal(arr[...], expected)
    assert open_level(out)[1] == "zyx"

    # a time series: the stack axis named t
    out_t = str(tmp_path / "series.zarr")
    ingest([str(planes / "p*.tif")], out_t, axes="t")
    arr_t, axes_t, _ = open_level(out_t)
    assert axes_t == "tyx"
    np.testing.assert_array_equal(arr_t[...], expected)


def test_ome_tiff_metadata_and_axis_order(tmp_path: Path) -> None:
    data = RNG.integers(0, 255, size=(2, 3, 5, 24, 20), dtype=np.uint8)
    src = tmp_path / "cells.ome.tif"
    tifffile.imwrite(
        src, data, ome=True, compression="zlib",
        metadata={
            "axes": "TCZYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.3, "PhysicalSizeZ": 1.5,
            "PhysicalSizeZUnit": "nm", "TimeIncrement": 2.0, "TimeIncrementUnit": "ms",
        },
    )
    out = str(tmp_path / "cells.zarr")
    ingest([str(src)], out)
    arr, axes, info = open_level(out)
    assert axes == "tczyx"
    np.testing.assert_array_equal(arr[...], data)
    assert info.levels[0].scale == (2.0, 1.0, 1.5, 0.3, 0.25)
    assert info.units == ("millisecond", None, "nanometer", "micrometer", "micrometer")
    _validate_ngff(out, 3)


def test_imagej_calibration_rgb_and_pyramid(tmp_path: Path) -> None:
    src = tmp_path / "ij.tif"
    tifffile.imwrite(
        src, STACK, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
        metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"},
    )
    out = str(tmp_path / "ij.zarr")
    ingest([str(src)], out, pyramid=2, zarr_format=2)
    _, axes, info = open_level(out)
    assert axes == "zyx"
    assert [lv.scale for lv in info.levels] == [(2.0, 0.5, 0.5), (2.0, 1.0, 1.0), (2.0, 2.0, 2.0)]
    assert info.units == ("micrometer",) * 3
    lvl1, _, _ = open_level(out, 1)
    ref = STACK.astype(np.float64).reshape(10, 24, 2, 20, 2).mean(axis=(2, 4))
    np.testing.assert_array_equal(lvl1[...], np.rint(ref).astype(np.uint16))
    assert open_level(out, 2)[0].shape == (10, 12, 10)
    _validate_ngff(out, 2)

    # RGB samples (YXS) become a leading channel axis, as NGFF orders axes
    rgb = RNG.integers(0, 255, size=(24, 20, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb)
    arr = ingest([str(tmp_path / "rgb.tif")], str(tmp_path / "rgb.zarr"))
    assert open_level(str(tmp_path / "rgb.zarr"))[1] == "cyx"
    np.testing.assert_array_equal(arr[...], np.moveaxis(rgb, -1, 0))


def test_bounded_memory_on_input_larger_than_budget(tmp_path: Path) -> None:
    """The copy holds a few blocks per worker, never the input: peak traced memory << input size."""
    data = np.random.default_rng(3).integers(0, 65535, size=(128, 256, 256), dtype=np.uint16)  # 16 MiB
    src = tmp_path / "big.tif"
    tifffile.imwrite(src, data, compression="zlib", compressionargs={"level": 1})
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, data[:2, :64, :64], compression="zlib")
    del data
    # warm up: first use imports codecs and dask modules, which tracemalloc would count
    ingest([str(small)], str(tmp_path / "warm.zarr"), chunks=(1, 32, 32))

    budget = 4 * 2**20  # a quarter of the input
    # peak memory scales with the worker count (each holds ~one block); pin it for a stable bound
    with dask.config.set(num_workers=2):
        tracemalloc.start()
        try:
            ingest([str(src)], str(tmp_path / "big.zarr"), chunks=(2, 128, 128))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < budget, f"peak {peak / 2**20:.1f} MiB for a 16 MiB input"
    out = zarr.open_array(str(tmp_path / "big.zarr" / "0"), mode="r")
    np.testing.assert_array_equal(out[5:7, 100:300, 200:256], tifffile.imread(src)[5:7, 100:300, 200:256])


def test_progress_reaches_one(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "s.tif", STACK)
    seen: list[float] = []
    ingest([str(tmp_path / "s.tif")], str(tmp_path / "o.zarr"), chunks=(1, 16, 16), progress=seen.append)
    assert seen and seen[-1] == 1.0
    assert all(0 <= f <= 1 for f in seen) and seen == sorted(seen)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("write_kw", "frac", "page"),
    [
        ({}, 0.55, "page 5 of 10"),  # contiguous data cut in page 5
        ({"compression": "zlib"}, 0.55, "page 6"),  # IFD chain cut: tifffile would shrink the series
        ({"metadata": None}, 0.55, "page 1"),  # plain multi-page TIFF, chain cut after page 0
        ({"compression": "zlib"}, 0.98, "page 9"),  # last strip cut
    ],
)
def test_truncated_file_names_file_and_page(tmp_path: Path, write_kw, frac, page) -> None:
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, STACK, **write_kw)
    raw = good.read_bytes()
    bad = tmp_path / "cut.tif"
    bad.write_bytes(raw[: int(len(raw) * frac)])
    out = tmp_path / "o.zarr"
    with pytest.raises(InputError) as e:
        ingest([str(bad)], str(out))
    assert str(bad) in str(e.value) and page in str(e.value)
    assert not out.exists()  # validated before anything was written


def test_corrupt_page_is_located(tmp_path: Path) -> None:
    src = tmp_path / "c.tif"
    tifffile.imwrite(src, STACK, compression="zlib")
    raw = bytearray(src.read_bytes())
    with tifffile.TiffFile(src) as tif:
        off = tif.pages[4].dataoffsets[0]
    raw[off + 8 : off + 200] = b"\xff" * 192
    src.write_bytes(bytes(raw))
    out = tmp_path / "o.zarr"
    with pytest.raises(InputError, match=r"c\.tif: page 4: cannot decode"):
        ingest([str(src)], str(out), chunks=(2, 48, 40))
    # the failed copy left an output that says it is incomplete, without OME metadata
    assert zarr.open_group(str(out), mode="r").attrs["convpipe"]["complete"] is False
    with pytest.raises(InputError, match="without OME-Zarr multiscales"):
        open_level(str(out))


def test_input_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff at all" * 10)
    with pytest.raises(InputError, match=r"junk\.tif: page 0: not a readable TIFF"):
        ingest([str(junk)], str(tmp_path / "a.zarr"))
    with pytest.raises(InputError, match="no file matches"):
        ingest([str(tmp_path / "none*.tif")], str(tmp_path / "a.zarr"))
    with pytest.raises(InputError, match="no such file"):
        ingest([str(tmp_path / "missing.tif")], str(tmp_path / "a.zarr"))

    tifffile.imwrite(tmp_path / "a1.tif", STACK[0])
    tifffile.imwrite(tmp_path / "a2.tif", STACK[0, :10])
    with pytest.raises(InputError, match=r"a2\.tif: shape \(10, 40\).*differs from the first file"):
        ingest([str(tmp_path / "a*.tif")], str(tmp_path / "a.zarr"))

    tifffile.imwrite(tmp_path / "s.tif", STACK)
    with pytest.raises(InputError, match="chunks"):
        ingest([str(tmp_path / "s.tif")], str(tmp_path / "b.zarr"), chunks=(1, 2))
    with pytest.raises(InputError, match="need 3 distinct letters"):
        ingest([str(tmp_path / "s.tif")], str(tmp_path / "b.zarr"), axes="zy")
    with pytest.raises(InputError, match="zarr_format"):
        ingest([str(tmp_path / "s.tif")], str(tmp_path / "b.zarr"), zarr_format=4)


def test_existing_output(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "s.tif", STACK)
    out = str(tmp_path / "o.zarr")
    ingest([str(tmp_path / "s.tif")], out)
    with pytest.raises(OutputExistsError, match="already exists"):
        ingest([str(tmp_path / "s.tif")], out)
    arr = ingest([str(tmp_path / "s.tif")], out, overwrite=True, zarr_format=2)
    assert arr.metadata.zarr_format == 2

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    with pytest.raises(OutputExistsError, match="not a zarr store"):
        ingest([str(tmp_path / "s.tif")], str(precious), overwrite=True)
    assert (precious / "thesis.txt").read_text() == "do not delete"


def test_fsspec_outputs(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "s.tif", STACK)
    for url in (f"file://{tmp_path}/nested/f.zarr", "memory://convpipe-test-ingest/m.zarr"):
        ingest([str(tmp_path / "s.tif")], url, storage_options={}, overwrite=True, pyramid=1)
        arr, axes, info = open_level(url, 0, {})
        assert axes == "zyx" and info.paths == ("0", "1")
        np.testing.assert_array_equal(arr[...], STACK)


def test_helpers() -> None:
    assert parse_chunks("16,512,512") == (16, 512, 512)
    assert parse_chunks("z=4,x=8") == {"z": 4, "x": 8}
    with pytest.raises(InputError):
        parse_chunks("16,a")
    with pytest.raises(InputError):
        parse_chunks("0,1")
    with pytest.raises(InputError):
        expand_paths([])


# --------------------------------------------------------------------------- CLI


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """convpipe (test app)."""

    register(app)
    return app


def test_cli_ingest(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "s.tif", STACK)
    out = str(tmp_path / "cli.zarr")
    res = CliRunner().invoke(
        _app(), ["ingest", str(tmp_path / "s.tif"), "--output", out, "--chunks", "5,16,40", "--zarr-format", "2"]
    )
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "[5, 16, 40]" in res.output
    arr, axes, _ = open_level(out)
    assert axes == "zyx"
    np.testing.assert_array_equal(arr[...], STACK)
    assert arr.metadata.zarr_format == 2

    # errors are not caught here: the main CLI turns them into one line
    res = CliRunner().invoke(_app(), ["ingest", str(tmp_path / "s.tif"), "--output", out])
    assert isinstance(res.exception, OutputExistsError)
    res = CliRunner().invoke(
        _app(), ["ingest", str(tmp_path / "s.tif"), "--output", out, "--overwrite", "--chunks", "x"]
    )
    assert isinstance(res.exception, InputError)


# --------------------------------------------------------------------------- tifffile's log


@pytest.mark.parametrize(
    ("write_kw", "frac", "page"),
    [({}, 0.55, "page 5 of 10"), ({"compression": "zlib"}, 0.55, "page 6"), ({"metadata": None}, 0.55, "page 1"),
     ({"compression": "zlib"}, 0.98, "page 9")],
)
def test_truncated_file_gives_one_line_and_nothing_before(tmp_path: Path, capfd, write_kw, frac, page) -> None:
    """tifffile logs the damage it finds ("invalid page offset ..."); none of that reaches the terminal ahead
    of the one error line (the CLI's contract), whatever the kind of truncation."""
    from convpipe.cli import main

    good = tmp_path / "good.tif"
    tifffile.imwrite(good, STACK, **write_kw)
    raw = good.read_bytes()
    bad = tmp_path / "cut.tif"
    bad.write_bytes(raw[: int(len(raw) * frac)])
    capfd.readouterr()
    rc = main(["ingest", str(bad), "--output", str(tmp_path / "o.zarr")])
    out, err = capfd.readouterr()
    assert rc == 1
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and page in lines[0], err
    assert "tifffile" not in out


def test_tifffile_log_is_held_per_thread_and_passed_on(caplog) -> None:
    """Held while a file is checked (this thread only), passed on afterwards when the file is sound."""
    import logging
    import threading

    from convpipe import tiff

    log = logging.getLogger("tifffile")
    caplog.set_level(logging.WARNING, logger="tifffile")
    with tiff._held_tifffile_log() as held:
        log.warning("held note")
        t = threading.Thread(target=lambda: log.warning("other thread"))
        t.start()
        t.join()
        assert [r.getMessage() for r in caplog.records] == ["other thread"]
    assert [r.getMessage() for r in held] == ["held note"]
    assert tiff._hold not in log.filters  # nothing left on tifffile's logger
    tiff._release(held)
    assert [r.getMessage() for r in caplog.records] == ["other thread", "held note"]


def test_corrupt_page_during_the_copy_gives_one_line(tmp_path: Path, capfd, monkeypatch) -> None:
    """A block that fails mid-copy stops the copy with one line; the blocks still reading in other threads
    finish before the file is closed (none reads a closed file), and print nothing."""
    import time

    from convpipe import tiff
    from convpipe.cli import main

    src = tmp_path / "c.tif"
    tifffile.imwrite(src, STACK, compression="zlib")
    raw = bytearray(src.read_bytes())
    with tifffile.TiffFile(src) as tif:
        off = tif.pages[4].dataoffsets[0]
    raw[off + 8 : off + 200] = b"\xff" * 192
    src.write_bytes(bytes(raw))

    read, closed_reads = tiff.TiffSeries.__getitem__, []

    def slow_read(self, region):  # every sound block is still reading when the bad one fails
        if region[0].start != 4:
            time.sleep(0.3)
            closed_reads.extend([region[0].start] if self.tif.filehandle.closed else [])
        return read(self, region)

    monkeypatch.setattr(tiff.TiffSeries, "__getitem__", slow_read)
    capfd.readouterr()
    with dask.config.set(num_workers=4):
        rc = main(["ingest", str(src), "--output", str(tmp_path / "o.zarr"), "--chunks", "1,48,40"])
    time.sleep(0.5)  # a straggler would have read (and printed) by now
    _, err = capfd.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 1 and len(lines) == 1 and "page 4: cannot decode" in lines[0], err
    assert closed_reads == []
