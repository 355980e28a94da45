"""decompose end to end on the sample database with the AST teacher, resumability, and the pipe to
build-pairs."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from learnat_cli.sql import GoldAst
from learnat_commands.main import app

runner = CliRunner()


def _lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_ast_teacher_reaches_gold_on_samples(samples_dir, tmp_path):
    out, trees = tmp_path / "traj.jsonl", tmp_path / "trees.jsonl"
    res = runner.invoke(app, ["decompose", str(samples_dir / "questions.jsonl"), "--teacher", "ast",
                              "--db-root", str(samples_dir), "--no-cache", "-o", str(out),
                              "--trees", str(trees),
                              "--slim"])
    assert res.exit_code == 0, res.output
    recs = _lines(out.read_text())
    n = len((samples_dir / "questions.jsonl").read_text().splitlines())
    assert len(recs) == n and "nodes" not in recs[0]
    reached = sum(r["reached_gold"] for r in recs)
    assert reached >= 0.8 * n
    for r in recs:
        g = GoldAst(r["gold"])
        assert all(s["status"] == "progressive" for s in r["steps"])
        if r["reached_gold"]:
            assert g.matches(r["steps"][-1]["sql"]) or r["steps"][-1]["reward"] == 1.0
        assert r["teacher_calls"] >= 1 and r["schema_text"].startswith("CREATE TABLE")
    multi = [r for r in recs if len(r["steps"]) >= 3]
    assert multi, "complex questions decompose into several steps"
    full = _lines(trees.read_text())
    assert {r["id"] for r in full} == {r["id"] for r in recs}
    statuses = {n["status"] for r in full for n in r["nodes"]}
    assert {"root", "progressive", "invalid"} <= statuses


def test_fold_joins_teacher_opens_with_a_step_that_reads_the_question(samples_dir, tmp_path):
    """``--teacher ast:fold-joins``: no join-only step (the join enters with the step that says what it is
    for), every join question still reaches its gold, and fewer steps are taken than with the plain ladder."""
    args = lambda teacher, out: ["decompose", str(samples_dir / "questions.jsonl"), "--teacher", teacher,  # noqa: E731
                                 "--db-root", str(samples_dir), "--no-cache", "-o", str(out)]
    plain, folded = tmp_path / "plain.jsonl", tmp_path / "folded.jsonl"
    for teacher, out in (("ast", plain), ("ast:fold-joins", folded)):
        res = runner.invoke(app, args(teacher, out))
        assert res.exit_code == 0, res.output
    a, b = {r["id"]: r for r in _lines(plain.read_text())}, {r["id"]: r for r in _lines(folded.read_text())}
    assert a.keys() == b.keys()
    joins = [i for i, r in a.items() if " JOIN " in r["gold"].upper() and r["reached_gold"]]
    opened = [i for i in joins if "match on their join keys" in a[i]["steps"][0]["question"]]
    assert opened, "the plain ladder opens join questions with a join-only step"
    for i in joins:
        assert b[i]["reached_gold"] and b[i]["teacher"] == "ast:fold-joins"
        assert not any("match on their join keys" in s["question"] for s in b[i]["steps"])
        assert " JOIN " in b[i]["steps"][0]["sql"].upper()  # the join arrives with the first step
    assert all(len(b[i]["steps"]) == len(a[i]["steps"]) - 1 for i in opened)
    assert all(b[i]["steps"] == a[i]["steps"] for i in a if i not in joins and a[i]["reached_gold"])


def test_resume_skips_finished_ids(samples_dir, tmp_path):
    out = tmp_path / "traj.jsonl"
    args = ["decompose", str(samples_dir / "questions.jsonl"), "--teacher", "ast",
            "--db-root", str(samples_dir),
            "--no-cache", "-o", str(out)]
    assert runner.invoke(app, args + ["--limit", "3"]).exit_code == 0
    first = _lines(out.read_text())
    with open(out, "a") as fh:  # a crash mid-record
        fh.write('{"id": "bookshop-99", "que')
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    recs = _lines(out.read_text())
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)) == 14
    assert recs[:3] == first


def test_shard_splits_work(samples_dir):
    ids = []
    for i in range(2):
        res = runner.invoke(app, ["decompose", str(samples_dir / "questions.jsonl"), "--teacher", "ast",
                                  "--slim",
                                  "--db-root", str(samples_dir), "--no-cache", "--shard", f"{i}/2"])
        assert res.exit_code == 0
        ids.append({r["id"] for r in _lines(res.stdout)})
    assert not ids[0] & ids[1] and len(ids[0] | ids[1]) == 14


def test_decompose_pipe_build_pairs(samples_dir, tmp_path):
    cmd = (f"{sys.executable} -m learnat_commands.main decompose {samples_dir / 'questions.jsonl'} "
           "--teacher ast "
           f"--db-root {samples_dir} --no-cache | {sys.executable} -m learnat_commands.main build-pairs")
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    pairs = _lines(proc.stdout)
    assert pairs
    for p in pairs:
        assert 0 < p["margin"] <= 1
        assert p["chosen_reward"] - p["rejected_reward"] == __import__("pytest").approx(p["margin"], abs=1e-5)
        assert [m["role"] for m in p["prompt"]] == ["system", "user"]
        assert p["chosen"] != p["rejected"]


def test_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"id": "1", "question": "q", "gold": "SELECT name FROM t"}\n'
                   '{"id": "2", "question": "q"}\n')
    out = tmp_path / "o.jsonl"
    res = runner.invoke(app, ["decompose", str(bad), "--teacher", "ast", "-o", str(out)])
    assert res.exit_code == 2
    assert f"{bad}:2: field 'gold'" in res.output


def test_schema_format_compact_matches_ask(samples_dir, tmp_path):
    """decompose --schema-format compact writes the schema as ask --schema-format compact shows it, so that
    training rows and inference prompts stay identical; an unknown format is a one-line error."""
    from learnat_cli.schema import load_schema, render_schema

    out = tmp_path / "traj.jsonl"
    res = runner.invoke(app, ["decompose", str(samples_dir / "questions.jsonl"), "--teacher", "ast",
                              "--db-root", str(samples_dir), "--no-cache", "--schema-format", "compact",
                              "--limit", "2", "-o", str(out)])
    assert res.exit_code == 0, res.output
    recs = _lines(out.read_text())
    schema = load_schema(samples_dir / "bookshop.sqlite")
    for r in recs:
        assert r["schema_text"] == render_schema(schema, 1500, r["question"], fmt="compact")
        assert not r["schema_text"].startswith("CREATE TABLE")
    res = runner.invoke(app, ["decompose", str(samples_dir / "questions.jsonl"), "--schema-format", "yaml"])
    assert res.exit_code == 2 and "--schema-format must be one of sql, compact" in res.output


def test_unalias_searches_the_alias_free_gold(samples_dir, tmp_path):
    """``--unalias``: each gold with table aliases is searched (and its steps written) with table names, the
    gold as written kept beside it; the SFT rows built from them carry no T1/T2 alias."""
    out, trees, sft = tmp_path / "traj.jsonl", tmp_path / "trees.jsonl", tmp_path / "sft.jsonl"
    res = runner.invoke(app, ["decompose", str(samples_dir / "questions.jsonl"), "--teacher", "ast",
                              "--db-root", str(samples_dir), "--no-cache", "--unalias", "-o", str(out),
                              "--trees", str(trees)])
    assert res.exit_code == 0, res.output
    recs = {r["id"]: r for r in _lines(out.read_text())}
    rec = recs["bookshop-05"]
    assert rec["gold_as_written"].startswith("SELECT T1.name, COUNT(*) FROM authors AS T1")
    assert rec["gold"] == ("SELECT authors.name, COUNT(*) FROM authors JOIN books ON authors.author_id = "
                           "books.author_id GROUP BY authors.author_id")
    aliased = [r for r in recs.values() if "gold_as_written" in r]
    assert len(aliased) == 6 and all(r["reached_gold"] for r in aliased)
    assert "gold_as_written" not in recs["bookshop-01"]  # no alias: the record is as before
    assert runner.invoke(app, ["build-pairs", str(trees), "--sft", "-o", str(sft)]).exit_code == 0
    text = sft.read_text()
    assert " AS T1" not in text and "T1." not in text and "authors.author_id" in text
