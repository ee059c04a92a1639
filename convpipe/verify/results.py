"""What :func:`convpipe.verify.verify` reports: tiles and tables checked, and the verdict."""

from __future__ import annotations

from dataclasses import dataclass, field


from ..errors import ConvpipeError


class VerificationFailed(ConvpipeError):
    """``convpipe verify`` found tiles that differ, or could not verify the output (exit 1)."""

    exit_code = 1


@dataclass
class TileCheck:
    """One recomputed tile."""

    key: str  # the manifest key of the tile, e.g. ``p0.1.0.3``
    index: tuple[int, ...]
    region: tuple[tuple[int, int], ...]  # output coordinates per output axis, [start, stop)
    max_error: float  # over voxels finite in both (after excusing quantization steps)
    max_ref: float  # max |oracle| over the tile's finite oracle values
    nonfinite_mismatch: int  # voxels where NaN / inf differ from the oracle
    worst: tuple[int, ...] | None = None  # global output coordinates of the largest error
    worst_out: float | None = None
    worst_ref: float | None = None
    tolerance: float = 0.0  # set once every tile is in

    @property
    def ok(self) -> bool:
        return self.nonfinite_mismatch == 0 and self.max_error <= self.tolerance

    def describe(self, axes: str) -> str:
        where = " ".join(f"{a}[{s}:{e}]" for a, (s, e) in zip(axes, self.region))
        if self.ok:
            return f"tile {self.key} {where}: ok (max error {self.max_error:.3g} <= {self.tolerance:.3g})"
        parts = []
        if self.nonfinite_mismatch:
            parts.append(f"{self.nonfinite_mismatch} voxel(s) with NaN/inf where the oracle differs")
        if self.max_error > self.tolerance:
            parts.append(f"max|out - oracle| = {self.max_error:.3g} > {self.tolerance:.3g}")
        if self.worst is not None:
            parts.append(f"worst at {self.worst}: out {self.worst_out!r} vs oracle {self.worst_ref!r}")
        return f"tile {self.key} {where}: DIFFERS: " + "; ".join(parts)


@dataclass
class TableCheck:
    """One table the run wrote, compared with the oracle's."""

    step: str  # e.g. ``steps[1].peaks``
    url: str
    rows: int  # rows in the written table
    missing: list = field(default_factory=list)  # key tuples the oracle has and the table lacks
    extra: list = field(default_factory=list)  # key tuples the table has and the oracle lacks
    columns: str = ""  # a column mismatch, described
    max_error: float = 0.0  # over the value columns, relative to max(1, max|column|)
    worst: str = ""
    tolerance: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra and not self.columns and self.max_error <= self.tolerance

    def describe(self) -> str:
        if self.ok:
            return f"table {self.step} ({self.url}): ok ({self.rows} rows, the oracle's set)"
        parts = [self.columns] if self.columns else []
        if self.missing:
            parts.append(f"{len(self.missing)} oracle row(s) missing, e.g. {self.missing[0]}")
        if self.extra:
            parts.append(f"{len(self.extra)} row(s) not in the oracle, e.g. {self.extra[0]}")
        if self.max_error > self.tolerance:
            parts.append(f"values differ by {self.max_error:.3g} (relative) > {self.tolerance:.3g}: {self.worst}")
        return f"table {self.step} ({self.url}): DIFFERS: " + "; ".join(parts)


@dataclass
class VerifyResult:
    """What :func:`verify` found. ``ok`` only when every checked tile and table matches and nothing stood in
    the way."""

    output_url: str
    input_url: str
    axes: str
    shape: tuple[int, ...]
    tile: tuple[int, ...]
    n_tiles: int
    precision: str
    relative_tolerance: float
    complete: bool
    checked: list[TileCheck] = field(default_factory=list)
    tables: list[TableCheck] = field(default_factory=list)
    not_verifiable: list[str] = field(default_factory=list)  # steps without an oracle (and why, when known)
    problems: list[str] = field(default_factory=list)  # anything else that prevents a clean verdict
    notes: list[str] = field(default_factory=list)

    @property
    def differing(self) -> list[TileCheck]:
        return [t for t in self.checked if not t.ok]

    @property
    def verifiable(self) -> bool:
        return not self.not_verifiable

    @property
    def ok(self) -> bool:
        return (bool(self.checked) and not self.differing and not self.not_verifiable and not self.problems
                and all(t.ok for t in self.tables))

    def summary(self) -> str:
        lines = []
        for p in self.problems:
            lines.append(f"problem: {p}")
        unknown = [s for s in self.not_verifiable if " (" not in s]
        if unknown:
            lines.append("not verifiable: no oracle for " + ", ".join(unknown))
        for s in self.not_verifiable:
            if " (" in s:  # a step whose oracle cannot run here, with the reason
                lines.append(f"not verifiable: {s}")
        for t in self.differing:
            lines.append(t.describe(self.axes))
        for t in self.tables:
            lines.append(t.describe())
        for n in self.notes:
            lines.append(f"note: {n}")
        n_ok = len(self.checked) - len(self.differing)
        tol = f"relative tolerance {self.relative_tolerance:g}, {self.precision}"
        if self.ok:
            tables = f" and {len(self.tables)} table(s)" if self.tables else ""
            lines.append(f"ok: all {n_ok} checked tiles (of {self.n_tiles}){tables} recomputed from the input "
                         f"match the oracle ({tol})")
        else:
            bad_tables = sum(not t.ok for t in self.tables)
            verdict = (f"{len(self.differing)} of {len(self.checked)} checked tiles differ from the oracle"
                       if self.checked else "no tile was checked")
            if bad_tables:
                verdict += f", {bad_tables} table(s) differ"
            lines.append(f"FAILED: {verdict} ({tol})")
        return "\n".join(lines)
