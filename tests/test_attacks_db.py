"""Attacks on the executor, `score` and `eval` (issue 12): result-size bombs, deep nesting, every SQLite value
type, hostile paths, WAL-mode databases, Ctrl-C during a query. Small and fast, on copies of the sample
database or databases made here."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from learnat_cli.db import (
    DEFAULT_MAX_BYTES,
    ResultTooLarge,
    WriteRefused,
    connect_ro,
    execute,
    json_value,
    sqlite_uri,
)
from learnat_cli.metrics import EvalConfig, EvalItem, evaluate, exec_match
from learnat_commands.main import app

runner = CliRunner()
BOMB = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 60) "
        "SELECT zeroblob({n}) FROM c")


# ------------------------------------------------------------------------------------------------- resources


def test_result_byte_limit_is_an_error_for_that_item(sample_db):
    with pytest.raises(ResultTooLarge, match="--max-bytes"):
        execute(sample_db, BOMB.format(n=10**6), max_bytes=5 * 10**6)  # stops after about 5 rows
    with pytest.raises(ResultTooLarge, match="--max-bytes"):
        execute(sample_db, "SELECT zeroblob(100000000)", max_bytes=10**6)  # one value: refused inside SQLite
    assert len(execute(sample_db, "SELECT * FROM books", max_bytes=10**6).rows) == 32
    ok, err = exec_match(sample_db, BOMB.format(n=10**6), "SELECT 1", "spider", max_bytes=10**6)
    assert ok is False and "larger than the limit" in err
    rep = evaluate([EvalItem(id="a", db_path=str(sample_db), pred=BOMB.format(n=10**6), gold="SELECT 1",
                             difficulty="simple")], EvalConfig(workers=1, max_bytes=10**6))
    assert rep["by_difficulty"]["all"]["count"] == 1 and rep["by_difficulty"]["all"]["errors"] == 1


def test_sixty_100mb_blobs_stay_bounded_in_memory(sample_db):
    """The attack of the issue with the default limit: 60 rows of zeroblob(1e8) (6 GB) in a fresh process."""
    code = (f"import resource, json\nfrom learnat_cli.metrics import exec_match\n"
            f"ok, err = exec_match({str(sample_db)!r}, {BOMB.format(n=10**8)!r}, 'SELECT 1', 'bird')\n"
            f"print(json.dumps([ok, err, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    ok, err, rss_kb = json.loads(out.stdout)
    assert ok is False and "larger than the limit" in err
    assert rss_kb * 1024 < 4 * DEFAULT_MAX_BYTES  # about the limit plus one value, never the 6 GB


def test_deep_nesting_is_an_error_for_that_row_in_score(tmp_path, sample_db):
    rows = [{"id": "parens", "pred": "SELECT " + "(" * 3000 + "1" + ")" * 3000, "gold": "SELECT 1"},
            {"id": "union", "pred": " UNION ".join(["SELECT 1"] * 2000), "gold": "SELECT 1"},
            {"id": "ands", "pred": "SELECT 1 WHERE " + " AND ".join(["1 = 1"] * 3000), "gold": "SELECT 1"},
            {"id": "deep_gold", "pred": "SELECT 1", "gold": "SELECT " + "(" * 3000 + "1" + ")" * 3000},
            {"id": "fine", "pred": "SELECT 1", "gold": "SELECT 1"}]
    path = tmp_path / "deep.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = runner.invoke(app, ["score", str(path), "--db", str(sample_db)])
    assert res.exit_code == 0, res.output
    out = {r["id"]: r for r in map(json.loads, res.stdout.splitlines())}
    for rid in ("parens", "union", "ands", "deep_gold"):
        assert out[rid]["score_error"] == "SQL nested too deeply to parse (RecursionError)"
        assert out[rid]["exec_match"] is False and out[rid]["exec_error"]  # SQLite's own limits hold too
    assert out["fine"]["ast_similarity"] == 1.0 and out["fine"]["exec_match"] is True


def test_every_sqlite_value_type_serialises(tmp_path):
    db = tmp_path / "v.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE v (a)")
    conn.executemany("INSERT INTO v VALUES (?)", [(None,), (2**62,), (1.5,), ("tëxt",), (b"\x00\xffA",)])
    conn.execute("INSERT INTO v VALUES (CAST(X'FF61' AS TEXT))")  # text that is not UTF-8
    conn.execute("INSERT INTO v VALUES (1e999)")  # +inf
    conn.commit()
    conn.close()
    got = [json_value(r[0]) for r in execute(db, "SELECT a FROM v ORDER BY rowid").rows]
    assert got == [None, 2**62, 1.5, "tëxt", "X'00FF41'", "\ufffda", "inf"]
    json.dumps(got, allow_nan=False)
    rows = tmp_path / "p.jsonl"
    rows.write_text(json.dumps({"id": "a", "pred": "SELECT a FROM v", "gold": "SELECT a FROM v WHERE 1",
                                "db_path": str(db)}) + "\n")
    for cmd in (["eval", str(rows), "--metric", "spider"], ["score", str(rows), "--metric", "spider"]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 0, res.output
        rec = json.loads(res.stdout.splitlines()[0])
        assert rec.get("correct", rec.get("exec_match")) is True


# ------------------------------------------------------------------------------------------ paths, databases


@pytest.mark.parametrize("folder", ["we#ird", "what?mode=rw", "100%25 sure", "spaced out", "ünï cödé",
                                    "a#b?c%d e"])
def test_uri_from_escaped_absolute_path(tmp_path, sample_db, folder):
    d = tmp_path / folder
    d.mkdir()
    db = d / "bookshop.sqlite"
    shutil.copy(sample_db, db)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert "mode=ro" in sqlite_uri(db) and "#" not in sqlite_uri(db)
    assert execute(db, "SELECT count(*) FROM books").rows == [(32,)]  # the real database is read
    with pytest.raises(WriteRefused):
        execute(db, "DELETE FROM books")
    conn = connect_ro(db)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):  # mode=ro kept, authorizer aside
        conn.set_authorizer(None)
        conn.execute("DELETE FROM books")
    conn.close()
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no stray file at a truncated path
    assert sqlite3.connect(db).execute("SELECT count(*) FROM books").fetchone() == (32,)


def _wal_copy(sample_db, folder):
    folder.mkdir()
    db = folder / "w.sqlite"
    shutil.copy(sample_db, db)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    conn.close()  # the last connection checkpoints and removes -wal/-shm
    assert sorted(os.listdir(folder)) == ["w.sqlite"]
    return db


def test_wal_database_is_read_without_leaving_files(tmp_path, sample_db):
    db = _wal_copy(sample_db, tmp_path / "wal")
    data = db.read_bytes()
    assert execute(db, "SELECT count(*) FROM books").rows == [(32,)]
    ok, err = exec_match(db, "SELECT title FROM books", "SELECT title FROM books", "spider")
    assert ok and err is None
    assert sorted(os.listdir(db.parent)) == ["w.sqlite"]  # no -wal / -shm left behind
    assert db.read_bytes() == data


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_wal_database_on_a_read_only_folder(tmp_path, sample_db):
    db = _wal_copy(sample_db, tmp_path / "ro")
    os.chmod(db.parent, 0o555)
    try:
        assert execute(db, "SELECT count(*) FROM books").rows == [(32,)]
    finally:
        os.chmod(db.parent, 0o755)


def test_not_a_database_is_one_line_error(tmp_path):
    bad = tmp_path / "x.sqlite"
    bad.write_text("hello, not sqlite\n" * 100)
    rows = tmp_path / "p.jsonl"
    rows.write_text(json.dumps({"id": "a", "pred": "SELECT 1", "gold": "SELECT 1"}) + "\n")
    res = runner.invoke(app, ["eval", str(rows), "--db", str(bad)])
    assert res.exit_code == 0  # the gold fails on it: reported, left out of the denominator
    assert "not a SQLite database" in json.loads(res.stdout)["gold_error"]


# ------------------------------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_during_a_query_exits_130_keeping_finished_items(tmp_path, sample_db):
    slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    rows = tmp_path / "p.jsonl"
    rows.write_text(json.dumps({"id": "fast", "pred": "SELECT 1", "gold": "SELECT 1"}) + "\n"
                    + json.dumps({"id": "slow", "pred": slow, "gold": "SELECT 1"}) + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "learnat_commands.main", "eval", str(rows), "--db",
                             str(sample_db), "--workers", "1", "--timeout", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    assert json.loads(first)["id"] == "fast"
    time.sleep(0.5)  # the slow query is running now
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err and out == ""  # not scored wrong, not continued
