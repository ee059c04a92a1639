"""The spec's JSON Schema as ``convpipe schema`` prints it, from a document shipped beside the code.

Generating the schema builds the pydantic models of every op family: about 0.15 s, more than twice
``python -c "import numpy, yaml, pydantic"`` (issue 17 asks ``schema`` to start within 2x of it). So the text is
generated once, by a developer, into ``spec.schema.json`` in this package, with the SHA-256 of every convpipe
source file the generation imported. :func:`schema_text` prints the shipped text only while those files are
byte for byte the ones it was made from (reading and hashing them costs about a millisecond); any edit, in a
checkout or an installed copy, makes it generate the schema live instead, so the document can be late but never
wrong. ``python -m convpipe.schema_doc`` rewrites it, and a test fails while it is not current.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

__all__ = ["DOC", "generate", "is_current", "schema_text", "write"]

PACKAGE = Path(__file__).resolve().parent
DOC = PACKAGE / "spec.schema.json"
#: the second file: the sources the text was generated from, so that the document itself stays the plain schema
SOURCES = PACKAGE / "spec.schema.sources.json"


def generate() -> tuple[str, list[str]]:
    """The schema's text (what ``convpipe schema`` prints) and the convpipe source files that produced it."""
    from .spec import json_schema

    text = json.dumps(json_schema(), indent=2)
    files = sorted({str(Path(m.__file__).resolve().relative_to(PACKAGE)) for m in list(sys.modules.values())
                    if (getattr(m, "__name__", "") or "").startswith("convpipe") and getattr(m, "__file__", None)
                    and Path(m.__file__).resolve().is_relative_to(PACKAGE)})
    return text, files


def _digests(files: list[str]) -> dict[str, str] | None:
    try:
        return {f: hashlib.sha256((PACKAGE / f).read_bytes()).hexdigest() for f in files}
    except OSError:  # a source gone: the shipped text no longer describes this copy
        return None


def is_current() -> bool:
    """Whether the shipped document was generated from exactly these source files."""
    try:
        recorded = json.loads(SOURCES.read_text())
        DOC.stat()
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and bool(recorded) and _digests(sorted(recorded)) == recorded


def schema_text() -> str:
    """The JSON Schema text: the shipped document while it is current, else generated now."""
    if is_current():
        return DOC.read_text().rstrip("\n")
    return generate()[0]


def write() -> None:
    """Regenerate the shipped document and its sources' digests (a developer's step; a test checks it)."""
    text, files = generate()
    DOC.write_text(text + "\n")
    SOURCES.write_text(json.dumps(_digests(files), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":  # pragma: no cover - a developer's command
    write()
    print(f"wrote {DOC.name} and {SOURCES.name}")
