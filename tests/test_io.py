"""JSONL I/O: line-numbered errors, JSON-array files, atomic, resumable and locked sinks, pass-through of
unknown keys, hostile files (issue 12)."""

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
    with pytest.raises(RuntimeError), JsonlSink(out) as s:
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


# ---------------------------------------------------------------------------------- hostile files (issue 12)

_HOLD = """
import sys, time
from learnat_cli.jsonl import JsonlSink
with JsonlSink(sys.argv[1], append=True) as s:
    s.write({"id": "held"})
    print("ready", flush=True)
    sys.stdin.readline()
"""


def test_a_second_writer_is_refused_while_the_first_holds_the_output(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        for make in (lambda: JsonlSink(out, append=True), lambda: JsonlSink(out), lambda: done_ids(out)):
            with pytest.raises(LearnatError) as ei:
                make()
            assert str(ei.value).startswith(f"{out}: another process is writing this file")
        assert not (tmp_path / "out.jsonl.partial").exists()
    finally:
        holder.communicate("\n", timeout=30)
    assert holder.returncode == 0
    assert not (tmp_path / "out.jsonl.lock").exists()  # released and removed
    assert done_ids(out) == {"held"}  # the first writer's record is intact, and now we may write
    with JsonlSink(out, append=True) as s:
        s.write({"id": "next"})
    assert done_ids(out) == {"held", "next"}


def test_corrupt_middle_line_stops_resume_and_keeps_every_record(tmp_path):
    out = tmp_path / "res.jsonl"
    text = '{"id": "a"}\n{"id": "b", "x": \n{"id": "c"}\n{"id": "d"}\n'
    out.write_text(text)
    with pytest.raises(LearnatError) as ei:
        done_ids(out)
    assert str(ei.value).startswith(f"{out}:2: corrupt record (not valid JSON)")
    assert out.read_text() == text  # nothing cut


def test_bad_utf8_in_the_middle_of_an_output_is_reported_not_cut(tmp_path):
    out = tmp_path / "res.jsonl"
    data = b'{"id": "a"}\n{"id": "\xff"}\n{"id": "c"}\n'
    out.write_bytes(data)
    with pytest.raises(LearnatError, match=r":2: corrupt record \(not UTF-8\)"):
        done_ids(out)
    assert out.read_bytes() == data


def test_complete_last_record_without_newline_is_kept(tmp_path):
    out = tmp_path / "res.jsonl"
    out.write_text('{"id": "a"}\n{"id": "b"}')
    assert done_ids(out) == {"a", "b"}
    assert out.read_text() == '{"id": "a"}\n{"id": "b"}\n'


def test_deeply_nested_line_is_a_one_line_error(tmp_path):
    p = tmp_path / "deep.jsonl"
    p.write_text('{"id": "a", "question": "q"}\n{"x": ' + "[" * 200_000 + "]" * 200_000 + "}\n")
    with pytest.raises(LearnatError) as ei:
        list(read_jsonl(p))
    assert str(ei.value) == f"{p}:2: JSON nested too deeply"


def test_bad_utf8_names_the_line(tmp_path):
    p = tmp_path / "latin1.jsonl"
    p.write_bytes(b'{"id": "a", "question": "q"}\n\n{"id": "b", "question": "caf\xe9"}\n')
    with pytest.raises(LearnatError) as ei:
        list(read_jsonl(p))
    assert str(ei.value).startswith(f"{p}:3: not UTF-8 text")
    arr = tmp_path / "dev.json"
    arr.write_bytes(b'[\n {"question": "a"},\n {"question": "caf\xe9"}\n]\n')
    with pytest.raises(LearnatError, match=r"dev.json:3: not UTF-8"):
        list(read_jsonl(arr))


def test_utf8_bom_is_accepted(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes('\ufeff{"id": "a", "question": "q"}\n'.encode())
    assert [o["id"] for _, o in read_jsonl(p)] == ["a"]


def test_output_to_a_folder_or_an_unwritable_path_is_a_one_line_error(tmp_path):
    folder = tmp_path / "outdir"
    folder.mkdir()
    for append in (False, True):
        with pytest.raises(LearnatError) as ei:
            JsonlSink(folder, append=append)
        assert str(ei.value) == f"{folder}: is a directory, expected a file to write"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outdir"]  # no outdir.partial, no lock file
    with pytest.raises(LearnatError, match=r"^/proc/x\.jsonl: cannot"):
        JsonlSink("/proc/x.jsonl")


def test_records_refuse_nan_and_non_string_sql():
    from learnat_cli.records import PreferencePair

    with pytest.raises(LearnatError) as ei:
        parse_record(Example, {"id": "a", "question": "q", "difficulty": float("nan")}, "f.jsonl", 3)
    assert str(ei.value).startswith("f.jsonl:3: field 'difficulty': ")
    with pytest.raises(LearnatError) as ei:
        parse_record(Example, {"id": "a", "question": "q", "gold": 42}, "f.jsonl", 4)
    assert str(ei.value) == "f.jsonl:4: field 'gold': Input should be a valid string"
    with pytest.raises(LearnatError, match="field 'margin': "):
        parse_record(PreferencePair, {"id": "p", "prompt": "p", "chosen": "a", "rejected": "b",
                                      "margin": float("nan")})


def test_nan_in_a_file_is_rejected_with_its_line(tmp_path):
    p = tmp_path / "nan.jsonl"
    p.write_text('{"id": "a", "question": "q", "difficulty": "simple"}\n'
                 '{"id": "b", "question": "q", "difficulty": NaN}\n')
    with pytest.raises(LearnatError) as ei:
        list(read_records(Example, p))
    assert str(ei.value).startswith(f"{p}:2: field 'difficulty': ")


def test_dev_null_is_written_directly():
    import os

    with JsonlSink("/dev/null") as s:
        s.write({"id": "x"})
    with JsonlSink("/dev/null", append=True) as s:
        s.write({"id": "y"})
    assert done_ids("/dev/null") == set()
    assert not os.path.exists("/dev/null.partial") and not os.path.exists("/dev/null.lock")
