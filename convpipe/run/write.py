"""What a run writes besides tiles: the output it creates or reopens, its pyramid, tables and provenance.

Order matters for "nothing is ever half-written": the output is created (or reopened for a resume) only
after the cluster answered; the completeness mark is the last write of a run, after the input was found
unchanged and every table was merged.
"""

from __future__ import annotations

import time
from typing import Any

from ..channels import ChannelLabels, follow, with_channel_column
from ..errors import ExecutionError
from ..io import create_output, data_digest
from ..ome.labels import add_label_name, ensure_labels_group, write_image_label
from ..outputs import create_ome_output, finish_ome_output, open_sink, provenance_node
from ..outputs import pyramid_method as pyramid_method_for
from ..version import __version__
from .events import EventBus
from .prepare import Prepared, table_name

__all__ = ["build_pyramid", "check_input_unchanged", "finish", "open_output", "withdraw_output"]


def open_output(p: Prepared) -> Any:
    """The array the tiles are written into: reopened for a resume, else created (replacing what was there,
    when the decision says so) with its provenance marked incomplete, and the manifest and tables cleared."""
    so = p.storage_options
    if p.decision.action == "resume":
        return open_sink(p.out_url, so)
    spec, plan = p.spec, p.plan
    if p.label_image == "under":  # IMAGE/labels first (when missing): nothing of the image itself is touched
        ensure_labels_group(spec.resolve(spec.output.labels_of), so)
    make = create_ome_output if p.want_ome else create_output
    extra = ({"axes": plan.output.axes, "input_ome": p.physical[0], "input_level": p.physical[1],
              "name": spec.name} if p.want_ome else {})
    sink = make(p.out_url, shape=plan.output.shape, chunks=plan.output.chunks, dtype=plan.output.dtype,
                zarr_format=spec.output.zarr_format, attrs={"convpipe": p.prov},
                overwrite=p.decision.action == "replace", storage_options=so, **extra)
    p.manifest.clear()
    for _, ts in p.tables.values():
        ts.clear()
    return sink


def withdraw_output(p: Prepared, bus: EventBus) -> None:
    """Remove the output this run created when the run is refused (a spec or input error found on the data,
    such as a label count beyond the dtype) before any tile reached it: a refusal leaves the location as a
    refusal before the output would have (empty), not an incomplete output that the fixed spec's run refuses.

    Only the node this run made is removed (its own tables were cleared when it was made); with a tile
    written, the output stays incomplete and says so, as for any failure.
    """
    import fsspec

    if p.manifest.done():
        return
    try:
        fs, path = fsspec.core.url_to_fs(p.out_url, **(p.storage_options or {}))
        fs.rm(path, recursive=True)
    except (FileNotFoundError, OSError) as e:  # the refusal is the message; this only tidies up
        bus.warn(f"could not remove the empty output {p.out_url} after the refusal ({e})")


def channel_labels(p: Prepared) -> ChannelLabels:
    """The names of the channels, from the input's OME ``omero`` labels and the ops that make channels."""
    ome = p.physical[0]
    return follow(p.plan, ome.channel_labels if ome is not None else None)


def pyramid_method(p: Prepared) -> str:
    return pyramid_method_for(p.plan.output.dtype)


def build_pyramid(p: Prepared, compute: Any, bus: EventBus) -> None:
    """The OME-Zarr output's lower levels (and its NGFF metadata), computed on the run's cluster."""
    spec = p.spec
    method = pyramid_method(p)
    if p.pyramid:
        bus.log(f"building {p.pyramid} pyramid level(s) ({method})")
    finish_ome_output(p.out_url, levels=p.pyramid, method=method, axes=p.plan.output.axes,
                      input_ome=p.physical[0], input_level=p.physical[1], storage_options=p.storage_options,
                      compute=compute, name=spec.name, channel_labels=channel_labels(p).output)
    if p.label_image is not None:  # levels by nearest (an integer output), then the image-label metadata
        write_image_label(p.out_url, under_image=p.label_image == "under", storage_options=p.storage_options)


def check_input_unchanged(p: Prepared) -> None:
    """The input must hold the same data at the end of the run as at its start, or nothing is marked done."""
    started = p.prov["input_data"]
    now = data_digest(p.arr, p.in_url, p.spec.input.storage_options)
    if now.get("digest") != started.get("digest"):
        raise ExecutionError(f"the input {p.in_url} changed while the run read it (its chunk objects were "
                             f"rewritten, added or deleted); output {p.out_url} is left incomplete: run again "
                             "with --overwrite once the input is settled")


def finish(p: Prepared, sink: Any, t0: float) -> tuple[dict, float]:
    """Merge the tables, then mark the output complete (the last write).

    Returns ``RunResult.outputs`` and the run's seconds since ``t0`` (``time.perf_counter``) at the moment
    of marking, as the provenance records them.
    """
    spec, prov = p.spec, p.prov
    check_input_unchanged(p)
    outputs: dict[str, Any] = {"image": p.out_url}
    if p.want_ome:
        outputs["ome"] = {"levels": 1 + p.pyramid, "method": pyramid_method(p),
                          "ngff": "0.4" if spec.output.zarr_format == 2 else "0.5"}
    labels = channel_labels(p).op_inputs
    for place, (op, ts) in p.tables.items():
        names = labels.get(place)
        rows = ts.finalize({"spec": prov["spec"], "input_fingerprint": p.fingerprint, "version": __version__,
                            "step": table_name(op)}, merge=getattr(op, "merge_rows", None),
                           columns=lambda t, names=names: with_channel_column(t, names))
        outputs[table_name(op)] = {"table": ts.url, "rows": rows}
    if p.label_image == "under":  # listed in IMAGE/labels once whole, just before the completeness mark
        add_label_name(spec.resolve(spec.output.labels_of), spec.output.label_name, p.storage_options)
        outputs["labels_of"] = spec.resolve(spec.output.labels_of)
    if p.label_image is not None:
        outputs.setdefault("ome", {})["image-label"] = True
    elapsed = time.perf_counter() - t0
    prov["complete"] = True
    prov["outputs"] = outputs
    prov["elapsed_s"] = round(elapsed, 3)
    # the completeness mark is the last write (on the group of an OME output, else on the array)
    (provenance_node(p.out_url, p.storage_options) if p.want_ome else sink).attrs.update({"convpipe": prov})
    if p.want_ome:
        # a complete OME group keeps only NGFF members: zarr warns about the foreign ".convpipe" folder
        # whenever a viewer lists the group, and a complete output never needs its manifest again
        p.manifest.clear()
    return outputs, elapsed
