"""The shipped JSON Schema document: current, equal to the live schema, and never printed once stale."""

from __future__ import annotations

import json

from convpipe import schema_doc
from convpipe.spec import json_schema


def test_shipped_schema_is_current():
    assert schema_doc.is_current(), "convpipe/spec.schema.json is stale: run `python -m convpipe.schema_doc`"


def test_shipped_schema_is_the_live_schema():
    assert schema_doc.DOC.read_text().rstrip("\n") == json.dumps(json_schema(), indent=2)
    assert schema_doc.schema_text() == json.dumps(json_schema(), indent=2)


def test_an_edited_source_makes_the_schema_live(tmp_path, monkeypatch):
    recorded = json.loads(schema_doc.SOURCES.read_text())
    assert "spec_model.py" in recorded and any(f.startswith("params/") for f in recorded)
    edited = dict(recorded, **{"spec_model.py": "0" * 64})
    (tmp_path / "sources.json").write_text(json.dumps(edited))
    (tmp_path / "doc.json").write_text('{"stale": true}\n')
    monkeypatch.setattr(schema_doc, "SOURCES", tmp_path / "sources.json")
    monkeypatch.setattr(schema_doc, "DOC", tmp_path / "doc.json")
    assert not schema_doc.is_current()
    assert json.loads(schema_doc.schema_text()) == json_schema()


def test_a_missing_source_or_record_makes_the_schema_live(tmp_path, monkeypatch):
    (tmp_path / "doc.json").write_text('{"stale": true}\n')
    monkeypatch.setattr(schema_doc, "DOC", tmp_path / "doc.json")
    for record in ({"no_such_module.py": "0" * 64}, {}, "not json"):
        (tmp_path / "sources.json").write_text(record if isinstance(record, str) else json.dumps(record))
        monkeypatch.setattr(schema_doc, "SOURCES", tmp_path / "sources.json")
        assert not schema_doc.is_current()
    assert json.loads(schema_doc.schema_text()) == json_schema()
