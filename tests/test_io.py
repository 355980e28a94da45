"""JSONL I/O: line-numbered errors, JSON-array files, atomic and resumable sinks, pass-through of unknown keys."""

from __future__ import annotations

import json

import pytest

from learnat_cli.errors import LearnatError
from learnat_cli.jsonl import JsonlSink, done_ids, parse_record, read_jsonl, read_records
from learnat_cli.records import Example, Trajectory


def test_read_jsonl_numbers_lines_and_skips_blanks(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_text('{"id": "a", "question": "q1"}\n\n{"id": "b", "question": "q2"}\n')
    assert [(n, o["id"]) for n, o in read_jsonl(p)] == [(1, "a"), (3, "b")]


def test_malformed_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": "a", "question": "q"}\n{"id": "b", "question": \n')
    with pytest.raises(LearnatError) as ei:
        list(read_jsonl(p))
    assert str(ei.value).startswith(f"{p}:2: invalid JSON")


def test_missing_field_names_field(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"id": "a"}\n')
    with pytest.raises(LearnatError) as ei:
        list(read_records(Example, p))
    assert str(ei.value) == f"{p}:1: field 'question': missing required field"


def test_json_array_file_is_accepted(tmp_path):
    p = tmp_path / "dev.json"
    p.write_text(json.dumps([{"id": "1", "question": "a"}, {"id": "2", "question": "b"}], indent=2))
    assert [o["id"] for _, o in read_jsonl(p)] == ["1", "2"]


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(LearnatError, match="no such file"):
        list(read_jsonl(tmp_path / "nope.jsonl"))


def test_unknown_keys_pass_through():
    rec = parse_record(Trajectory, {"id": "x", "question": "q", "my_tag": [1, 2], "steps": []})
    out = json.loads(json.dumps(rec.model_dump(mode="json")))
    assert out["my_tag"] == [1, 2] and out["id"] == "x"


def test_sink_is_atomic_on_failure(tmp_path):
    out = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        with JsonlSink(out) as s:
            s.write({"id": "1"})
            raise RuntimeError("boom")
    assert not out.exists()
    assert not (tmp_path / "out.jsonl.partial").exists()
    with JsonlSink(out) as s:
        s.write({"id": "1"})
    assert out.read_text() == '{"id": "1"}\n'


def test_append_sink_and_done_ids_cut_a_torn_line(tmp_path):
    out = tmp_path / "res.jsonl"
    with JsonlSink(out, append=True) as s:
        s.write({"id": "a"})
        s.write({"id": "b"})
    with open(out, "a") as fh:  # a crash in the middle of a write
        fh.write('{"id": "c", "ste')
    assert done_ids(out) == {"a", "b"}
    assert out.read_text() == '{"id": "a"}\n{"id": "b"}\n'
    with JsonlSink(out, append=True) as s:
        s.write({"id": "c"})
    assert done_ids(out) == {"a", "b", "c"}
