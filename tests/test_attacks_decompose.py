"""decompose under hostile files, options and teacher servers (issue 12), its output contract (issue 13), and
the stage shape (issue 11). Real parts: the sample database, real files, a loopback HTTP server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from learnat_cli.errors import LearnatError
from learnat_cli.records import Example
from learnat_commands.main import app

runner = CliRunner()


def _lines(path_or_text):
    text = path_or_text.read_text() if hasattr(path_or_text, "read_text") else path_or_text
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _base(samples_dir, *extra):
    return ["decompose", str(samples_dir / "questions.jsonl"), "--teacher", "ast",
            "--db-root", str(samples_dir),
            "--no-cache", *extra]


# --- databases that are not there or not SQLite: a recorded failure, the run goes on
# ----------------------------


def test_bad_database_is_a_recorded_failure_and_the_run_goes_on(samples_dir, tmp_path):
    notdb = tmp_path / "notes.sqlite"
    notdb.write_text("this is not a database\n" * 20)
    rows = [
        {"id": "a", "question": "q", "gold": "SELECT COUNT(*) FROM books", "db_path": str(notdb)},
        {"id": "b", "question": "q", "gold": "SELECT COUNT(*) FROM books", "db_id": "no_such_db"},
        {"id": "c", "question": "How many books?", "gold": "SELECT COUNT(*) FROM books", "db_id": "bookshop"},
    ]
    q = tmp_path / "q.jsonl"
    q.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o.jsonl"
    args = ["decompose", str(q), "--db-root", str(samples_dir), "--no-cache", "-o", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    recs = {r["id"]: r for r in _lines(out)}
    assert list(recs) == ["a", "b", "c"]
    assert "SQLite" in recs["a"]["error"] and str(notdb) in recs["a"]["error"]
    assert "database not found" in recs["b"]["error"]
    assert not recs["a"]["steps"] and not recs["a"]["reached_gold"]
    assert "error" not in recs["c"] and recs["c"]["reached_gold"]
    assert "2 failed" in res.output
    # a rerun does not redo them (they are finished, with their failure recorded)
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and len(_lines(out)) == 3


def test_unparseable_gold_is_a_recorded_failure(tmp_path):
    q = tmp_path / "q.jsonl"
    q.write_text('{"id": "x", "question": "q", "gold": "SELEC nothing FRM"}\n'
                 '{"id": "y", "question": "q", "gold": "SELECT a FROM t WHERE b = 1"}\n')
    res = runner.invoke(app, ["decompose", str(q), "--no-cache"])
    assert res.exit_code == 0, res.output
    recs = _lines(res.stdout)
    assert "does not parse" in recs[0]["error"] and recs[1]["reached_gold"]


# --- outputs and resuming
# ----------------------------------------------------------------------------------------


def test_limit_on_a_rerun_means_the_total(samples_dir, tmp_path):
    out = tmp_path / "o.jsonl"
    assert runner.invoke(app, _base(samples_dir, "-o", str(out), "--limit", "3")).exit_code == 0
    res = runner.invoke(app, _base(samples_dir, "-o", str(out), "--limit", "5"))
    assert res.exit_code == 0, res.output
    assert len(_lines(out)) == 5
    assert runner.invoke(app, _base(samples_dir, "-o", str(out), "--limit", "5")).exit_code == 0
    assert len(_lines(out)) == 5


def test_output_and_trees_cannot_diverge_after_a_crash(samples_dir, tmp_path):
    out, trees = tmp_path / "o.jsonl", tmp_path / "t.jsonl"
    args = _base(samples_dir, "-o", str(out), "--trees", str(trees))
    assert runner.invoke(app, args + ["--limit", "3"]).exit_code == 0
    # a crash after the 4th tree was written but before its trajectory, and a torn trajectory line
    fourth = _lines(runner.invoke(app, _base(samples_dir, "--limit", "4")).stdout)[3]
    with open(trees, "a") as fh:
        fh.write(json.dumps(fourth) + "\n")
    with open(out, "a") as fh:
        fh.write('{"id": "bookshop-04", "ques')
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    a, b = _lines(out), _lines(trees)
    ids = [r["id"] for r in a]
    assert ids == [r["id"] for r in b] and len(ids) == len(set(ids)) == 14
    # input order, resumed run included
    inp = [json.loads(x)["id"] for x in (samples_dir / "questions.jsonl").read_text().splitlines()]
    assert ids == inp


def test_trees_hold_the_search_trees_and_output_the_trajectories(samples_dir, tmp_path):
    out, trees = tmp_path / "o.jsonl", tmp_path / "t.jsonl"
    res = runner.invoke(app, _base(samples_dir, "-o", str(out), "--trees", str(trees), "--limit", "4"))
    assert res.exit_code == 0, res.output
    traj, full = _lines(out), _lines(trees)
    assert all("nodes" not in r and r["steps"] for r in traj)
    assert all(len(r["nodes"]) > len(r["steps"]) for r in full)
    node = next(n for r in full for n in r["nodes"] if n["step"])
    assert node["step"]["question"] and node["step"]["sql"] and "visits" in node


def test_same_seed_same_output_across_processes(samples_dir, tmp_path):
    outs = []
    for hashseed in ("1", "2"):
        o = tmp_path / f"o{hashseed}.jsonl"
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        cmd = [sys.executable, "-m", "learnat_commands.main",
               *_base(samples_dir, "--seed", "7", "--workers", "4", "-o", str(o))]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        outs.append(o.read_bytes())
    assert outs[0] == outs[1]


def test_rows_are_written_in_input_order_whatever_finishes_first():
    from learnat_cli.stages.decompose import DecomposeConfig, run
    from learnat_cli.synthesis.ast_teacher import AstTeacher

    class Slow(AstTeacher):
        async def propose(self, state, k):
            await asyncio.sleep(0.05 if "first" in state.question else 0.0)
            return await super().propose(state, k)

    exs = [Example(id=str(i), question="first" if i == 0 else f"q{i}",
                   gold=f"SELECT a FROM t JOIN u ON t.id = u.tid WHERE b = {i} ORDER BY a" if i % 2 else
                   f"SELECT a FROM t WHERE b = {i}") for i in range(6)]
    records, report = run(exs, DecomposeConfig(teacher=Slow(), workers=4))
    recs = list(records)
    assert [r.id for r in recs] == [str(i) for i in range(6)]
    assert report.examples == 6 and report.reached_gold == 6 and report.failed == 0
    # per-example counts, never mixed between concurrent examples: the same as one at a time
    alone = list(run(exs, DecomposeConfig(teacher=AstTeacher(), workers=1))[0])
    assert [r.teacher_calls for r in recs] == [r.teacher_calls for r in alone] == [1, 3, 1, 3, 1, 3]
    assert report.teacher_calls == 12


# --- options and inputs: one line, exit 2
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["dialect", "outdir", "tables-missing", "tables-notjson", "limit0", "shard"])
def test_bad_options_are_one_line_errors(samples_dir, tmp_path, case):
    notjson = tmp_path / "tables.json"
    notjson.write_text("{not json")
    extra = {"dialect": ["--dialect", "foo"], "outdir": ["-o", str(tmp_path)],
             "tables-missing": ["--tables", str(tmp_path / "nope.json")],
             "tables-notjson": ["--tables", str(notjson)],
             "limit0": ["--limit", "0"], "shard": ["--shard", "3/2"]}[case]
    res = runner.invoke(app, _base(samples_dir, *extra))
    assert res.exit_code == 2, res.output
    errs = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errs) == 1, res.output
    want = {"dialect": "foo", "outdir": "directory", "tables-missing": "nope.json",
            "tables-notjson": "invalid JSON",
            "limit0": "--limit", "shard": "--shard"}[case]
    assert want in errs[0]


# --- hostile teacher servers
# ---------------------------------------------------------------------------------------


class _Server:
    def __init__(self, handler_body):
        outer = self
        self.requests = 0

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                outer.requests += 1
                self.rfile.read(int(self.headers.get("content-length") or 0))
                handler_body(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _reply(body: bytes, ctype: str):
    def h(req):
        req.send_response(200)
        req.send_header("content-type", ctype)
        req.send_header("content-length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)
    return h


@pytest.mark.parametrize("body,ctype,want", [
    (b'{"choices": [', "application/json", "not JSON"),
    (b"<html><body>Bad gateway</body></html>", "text/html", "text/html"),
    (b"[1, 2, 3]", "application/json", "JSON list"),
    (b'{"choices": "nope"}', "application/json", "no choices"),
])
def test_teacher_answering_200_with_garbage_is_a_recorded_failure(tmp_path, body, ctype, want):
    srv = _Server(_reply(body, ctype))
    try:
        q = tmp_path / "q.jsonl"
        q.write_text('{"id": "1", "question": "q", "gold": "SELECT a FROM t WHERE b = 1"}\n'
                     '{"id": "2", "question": "q", "gold": "SELECT a FROM t"}\n')
        res = runner.invoke(app, ["decompose", str(q), "--teacher", "m", "--teacher-url", srv.url,
                                  "--no-cache"])
    finally:
        srv.close()
    assert res.exit_code == 0, res.output
    recs = _lines(res.stdout)
    assert len(recs) == 2 and all(want in r["error"] and "HTTP 200" in r["error"] for r in recs)
    assert "2 failed" in res.output


def test_teacher_rejecting_the_key_stops_the_run(tmp_path):
    def h(req):
        req.send_response(401)
        req.send_header("content-length", "0")
        req.end_headers()
    srv = _Server(h)
    try:
        q = tmp_path / "q.jsonl"
        q.write_text('{"id": "1", "question": "q", "gold": "SELECT a FROM t"}\n')
        res = runner.invoke(app, ["decompose", str(q), "--teacher", "m", "--teacher-url", srv.url,
                                  "--no-cache"])
    finally:
        srv.close()
    assert res.exit_code == 2 and "HTTP 401" in res.output


def test_dripping_teacher_hits_the_total_deadline_and_budget():
    from learnat_cli.synthesis.teachers import OpenAITeacher

    stop = threading.Event()

    def drip(req):
        req.send_response(200)
        req.send_header("content-type", "application/json")
        req.send_header("content-length", "1000")
        req.end_headers()
        for _ in range(50):  # one byte every 0.2 s: each read is "on time", the whole never arrives
            if stop.is_set():
                return
            try:
                req.wfile.write(b" ")
                req.wfile.flush()
            except OSError:
                return
            time.sleep(0.2)

    srv = _Server(drip)
    t = OpenAITeacher(srv.url, "m", timeout_s=0.6, budget_s=2.0, max_retries=50, backoff_s=0.05)

    async def go():
        try:
            return await t.chat([{"role": "user", "content": "hi"}], 1)
        finally:
            await t.aclose()

    t0 = time.monotonic()
    try:
        with pytest.raises(LearnatError, match="giving up after .* attempts in 2 s"):
            asyncio.run(go())
    finally:
        stop.set()
        srv.close()
    took = time.monotonic() - t0
    assert took < 3.0, took
    assert 2 <= srv.requests <= 5  # retried, within the budget


# --- layout (issue 11) and the terminal (issue 13)
# -----------------------------------------------------------------


def test_stage_is_the_python_api_and_imports_no_other_stage():
    code = ("import sys, learnat_cli; f = learnat_cli.decompose; "
            "import learnat_cli.stages.decompose as d; assert f is d.run; "
            "import learnat_cli.synthesis.ast_teacher; "
            "bad = [m for m in sys.modules if m.startswith('learnat_cli.stages.') "
            "and m != 'learnat_cli.stages.decompose']; "
            "assert not bad, bad; assert 'learnat_cli.synthesis.teachers' not in sys.modules; "
            "assert not {'typer', 'rich', 'torch'} & set(sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_show_tree_has_a_legend_and_the_sub_questions(samples_dir):
    res = runner.invoke(app, _base(samples_dir, "--limit", "6", "--show-tree", "--slim"))
    assert res.exit_code == 0, res.output
    assert "legend:" in res.output and "★ terminal" in res.output and "• on the best path" in res.output
    assert "Which authors rows satisfy" in res.output or "What is" in res.output
