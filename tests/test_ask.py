"""ask: validation, safety, retry with the error, the fast-path rule, and the CLI with a tiny real model."""

from __future__ import annotations

import hashlib
import json

import pytest
from typer.testing import CliRunner

from learnat_cli.datasets import load_examples
from learnat_cli.jsonl import JsonlSink, done_ids
from learnat_cli.schema import load_schema
from learnat_cli.stages.ask import (
    AskConfig,
    AskReport,
    answer,
    ask,
    complexity,
    decide_decompose,
    repair_hint,
    select,
    validate_sql,
)
from learnat_commands.main import app

runner = CliRunner()


def test_validate_sql_against_schema(sample_db):
    schema = load_schema(sample_db)
    assert validate_sql("SELECT T1.title FROM books AS T1 JOIN authors AS T2 ON T1.author_id = T2.author_id",
                        schema) is None
    assert validate_sql("SELECT title FROM bookz", schema) == "unknown table(s): bookz"
    assert validate_sql("SELECT colour FROM books", schema) == "unknown column(s): books.colour"
    assert "parse" in validate_sql("SELECT FROM WHERE", schema)
    assert validate_sql(None, schema) == "no SQL in the answer"
    # SQLite reads a double-quoted name it cannot resolve as a string (Spider's gold SQL relies on this)
    assert validate_sql('SELECT title FROM books WHERE title = "Beloved"', schema) is None
    # a projection alias used in ORDER BY/HAVING is not an unknown column
    assert validate_sql("SELECT author_id, COUNT(*) AS n FROM books GROUP BY author_id HAVING n > 1 "
                        "ORDER BY n DESC LIMIT 1", schema) is None


def test_fast_path_rule(sample_db):
    schema = load_schema(sample_db)
    assert complexity("How many books are there?", schema) == 0
    assert not decide_decompose("How many books are there?", schema)
    hard = "For each city, how many delivered orders did its customers place, largest first?"
    assert complexity(hard, schema) >= 2 and decide_decompose(hard, schema)
    assert decide_decompose("How many books are there?", schema, mode="always")
    assert not decide_decompose(hard, schema, mode="never")


class Replies:
    """Model outputs replayed in order, to drive the pipeline's validation and safety paths."""

    def __init__(self, *texts):
        self.texts = list(texts)
        self.prompts = []

    def __call__(self, messages, max_new_tokens, temperature):
        self.prompts.append(messages)
        return self.texts.pop(0)


def test_a_generated_write_cannot_touch_the_database(sample_db):
    before = hashlib.sha256(sample_db.read_bytes()).hexdigest()
    gen = Replies("Final SQL: DROP TABLE books", "Final SQL: UPDATE books SET price = 0")
    ans = answer("Delete everything", sample_db, gen, AskConfig(decompose="never"))
    assert ans.attempts == 2 and ans.error and ans.pred.startswith("UPDATE")
    assert hashlib.sha256(sample_db.read_bytes()).hexdigest() == before


def test_retry_carries_the_error(sample_db):
    gen = Replies("Step 1: Which books?\nSQL: SELECT title FROM books\nFinal SQL: SELECT colour FROM books",
                  "Step 1: Which books?\nSQL: SELECT title FROM books\nFinal SQL: SELECT COUNT(*) FROM books")
    ans = answer("How many books are there?", sample_db, gen, AskConfig(decompose="always"))
    assert ans.error is None and ans.rows == [(32,)] and ans.attempts == 2
    assert ans.steps == [("Which books?", "SELECT title FROM books")]
    retry_prompt = gen.prompts[1][-1]["content"]
    assert "unknown column(s): books.colour" in retry_prompt
    assert "books has: book_id, title, author_id" in retry_prompt  # the repair hint rides along


def test_a_column_on_the_wrong_joined_table_is_rebound_without_a_retry(sample_db):
    wrong = ("SELECT T1.name, T1.title FROM books AS T1 JOIN authors AS T2 ON T1.author_id = T2.author_id "
             "WHERE T1.country = 'Italy'")
    gen = Replies(f"Final SQL: {wrong}")
    ans = answer("Which Italian authors wrote which books?", sample_db, gen, AskConfig(decompose="never"))
    assert ans.error is None and ans.attempts == 1 and ans.rebound_from == wrong
    assert ans.pred == ("SELECT T2.name, T1.title FROM books AS T1 JOIN authors AS T2 ON T1.author_id = "
                        "T2.author_id WHERE T2.country = 'Italy'")
    assert ans.columns == ["name", "title"] and ans.rows
    rec = ans.record({"id": "q1", "question": "?"}, show_rows=5).model_dump(exclude_none=True)
    assert rec["rebound_from"] == wrong
    # off: the student's SQL fails and the retry carries the error; a record without a rebind has no key
    gen = Replies(f"Final SQL: {wrong}", "Final SQL: SELECT COUNT(*) FROM books")
    ans = answer("?", sample_db, gen, AskConfig(decompose="never", rebind=False))
    assert ans.attempts == 2 and ans.rebound_from is None and ans.rows == [(32,)]
    assert "rebound_from" not in ans.record({"id": "q2", "question": "?"}, show_rows=5).model_dump()


def test_repair_hint_points_at_the_right_table(sample_db):
    schema = load_schema(sample_db)
    # a real column on the wrong table: name the tables that have it, and what the named table has
    hint = repair_hint("SELECT name FROM books WHERE city = 'Oslo'", schema)
    assert "books has no column name; name is a column of authors, genres, customers (join it)" in hint
    assert "books has no column city; city is a column of customers (join it)" in hint
    assert "books has: book_id, title, author_id, genre_id, published_year, price, pages" in hint
    assert repair_hint("SELECT title FROM book", schema) == "- there is no table book; did you mean books?"
    hint = repair_hint("SELECT publish_year FROM authors JOIN books", schema)
    assert "closest: books.published_year" in hint
    assert repair_hint("SELECT title FROM books", schema) == ""
    assert repair_hint("SELEC nonsense (", schema) == "" and repair_hint(None, schema) == ""


def test_ask_cli_with_tiny_model_single_and_batch(tiny_model_dir, sample_db, samples_dir, tmp_path):
    before = hashlib.sha256(sample_db.read_bytes()).hexdigest()
    res = runner.invoke(app, ["ask", "--db", str(sample_db), "--model", str(tiny_model_dir),
                              "--max-new-tokens", "8",
                              "How many books are there?"])
    rec = json.loads([ln for ln in res.stdout.splitlines() if ln.startswith("{")][0])
    # a random tiny model cannot answer: the record says so, after one retry, and the exit code is 1
    assert res.exit_code == 1 and rec["error"] and rec["attempts"] == 2 and rec["decomposed"] is False
    out = tmp_path / "preds.jsonl"
    rows = tmp_path / "q.jsonl"
    rows.write_text("".join((samples_dir / "questions.jsonl").read_text().splitlines(keepends=True)[:3]))
    args = ["ask", "--input", str(rows), "--db", str(sample_db), "--model", str(tiny_model_dir),
            "--max-new-tokens", "8", "--retries", "0", "-o", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    recs = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [r["id"] for r in recs] == ["bookshop-01", "bookshop-02", "bookshop-03"]
    assert all("gold" in r and "pred" in r for r in recs)  # ready for `learnat eval`
    # issue 13: the resolved database travels with the record, so eval/score find it without --db-root
    assert {r["db_path"] for r in recs} == {str(sample_db.resolve())}
    res = runner.invoke(app, args)  # resumable: nothing left to do
    assert len(out.read_text().splitlines()) == 3
    assert hashlib.sha256(sample_db.read_bytes()).hexdigest() == before


def test_ask_needs_a_question(sample_db):
    res = runner.invoke(app, ["ask", "--db", str(sample_db)])
    assert res.exit_code == 2 and "give a question" in res.output


@pytest.mark.slow
def test_embedded_model_answers_a_sample_question(sample_db):
    """The real embedded Qwen2.5-Coder-0.5B (converted on first use) on the sample database."""
    res = runner.invoke(app, ["ask", "--db", str(sample_db), "How many books are there?"])
    rec = json.loads([ln for ln in res.stdout.splitlines() if ln.startswith("{")][0])
    assert res.exit_code == 0, res.output
    assert rec["rows"] == [[32]]


@pytest.mark.slow
def test_llamacpp_backend_answers_a_sample_question(sample_db):
    """The same embedded GGUF through llama.cpp (needs the `llamacpp` extra, which compiles llama.cpp)."""
    pytest.importorskip("llama_cpp")
    res = runner.invoke(app, ["ask", "--db", str(sample_db), "--backend", "llamacpp",
                              "How many books are there?"])
    assert res.exit_code == 0, res.output
    rec = json.loads([ln for ln in res.stdout.splitlines() if ln.startswith("{")][0])
    assert rec["rows"] == [[32]]


def examples(samples_dir, n=None):
    return list(load_examples(samples_dir / "questions.jsonl"))[:n]


def test_a_blob_result_serialises_and_the_batch_resumes(sample_db, samples_dir, tmp_path):
    """Regression (issue 12): bytes in a result crashed batch ask (not JSON), and again on every resume."""
    out = tmp_path / "preds.jsonl"
    gen = Replies("Final SQL: SELECT X'00FF1A' AS b, 1e999 AS big, title FROM books LIMIT 1")
    with JsonlSink(out, append=True) as sink:
        for rec in ask(examples(samples_dir, 1), gen, AskConfig(decompose="never"), AskReport(),
                       db=str(sample_db)):
            sink.write(rec)
    (rec,) = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert rec["error"] is None and rec["rows"][0][:2] == ["X'00FF1A'", "inf"]
    report = AskReport()
    assert list(ask(examples(samples_dir, 1), Replies(), AskConfig(), report, db=str(sample_db),
                    skip=done_ids(out))) == []
    assert report.skipped == 1 and report.answered == 0


def test_recursion_and_memory_errors_are_recorded_per_question(sample_db, samples_dir, monkeypatch):
    """Regression (issue 12): a RecursionError/MemoryError ended the whole batch with a traceback."""
    deep = "SELECT " + "(" * 3000 + "1" + ")" * 3000 + " FROM books"
    ans = answer("deep?", sample_db, Replies("Final SQL: " + deep), AskConfig(decompose="never", retries=0))
    assert ans.error == "too deeply nested to process (RecursionError)"
    import learnat_cli.stages.ask as stage

    def oom(*a, **k):
        raise MemoryError

    monkeypatch.setattr(stage, "execute", oom)
    report = AskReport()
    recs = list(ask(examples(samples_dir, 2), Replies("Final SQL: SELECT 1", "Final SQL: SELECT 2"),
                    AskConfig(decompose="never", retries=0), report, db=str(sample_db)))
    assert [r.error for r in recs] == ["out of memory while answering (MemoryError)"] * 2
    assert report.answered == 2 and report.ok == 0


def test_status_phases_and_panel_title(sample_db):
    """Issue 13: the phases reach a status callback; the steps are printed and the title matches the
    record."""
    from rich.console import Console

    import learnat_commands.ask_view as view

    phases = []
    gen = Replies("Step 1: Which books?\nSQL: SELECT title FROM books\n"
                  "Final SQL: SELECT COUNT(*) FROM books\n")
    ans = answer("How many books?", sample_db, gen, AskConfig(decompose="always"), status=phases.append)
    assert phases == ["generating", "executing"]
    rec = ans.record({"id": "ask-0", "question": "How many books?"}, 20)
    assert view.panel_title(rec) == "SQL (decomposed, 1 step)"
    cap = Console(record=True, width=100)
    view.console = cap
    try:
        view.show_answer(rec)
    finally:
        from learnat_commands.common import console

        view.console = console
    text = cap.export_text()
    assert "Step 1: Which books?" in text and "SQL (decomposed, 1 step)" in text and "32" in text
    no_steps = rec.model_copy(update={"steps": []})
    assert view.panel_title(no_steps) == "SQL (decomposition prompt, no steps)"
    assert view.panel_title(rec.model_copy(update={"decomposed": False, "steps": []})) == "SQL (direct)"
    assert view.panel_title(rec.model_copy(update={"decomposed": False, "steps": [], "rebound_from": "x"})) \
        == "SQL (direct, columns rebound)"


def test_limit_and_sample_select_the_same_questions_on_resume(samples_dir):
    rows = examples(samples_dir)
    assert [e.id for e in select(rows, limit=2)] == ["bookshop-01", "bookshop-02"]
    picked = [e.id for e in select(rows, sample=4, seed=7)]
    assert picked == [e.id for e in select(rows, sample=4, seed=7)] and len(picked) == 4
    assert picked == sorted(picked)  # input order kept
    assert picked != [e.id for e in select(rows, sample=4, seed=8)]
    assert len(select(rows, sample=4, seed=7, limit=2)) == 2
    with pytest.raises(Exception, match="--limit must be at least 1"):
        select(rows, limit=0)


def test_ask_cli_limit_sample_batch_size_and_device(tiny_model_dir, sample_db, samples_dir, tmp_path):
    """Issue 13: --limit N (in all, a rerun included), --sample N --seed S; issue 14: --batch-size gives the
    same records as one at a time; --device is checked before anything loads."""
    out = tmp_path / "p.jsonl"
    base = ["ask", "--input", str(samples_dir / "questions.jsonl"), "--db", str(sample_db), "--model",
            str(tiny_model_dir), "--max-new-tokens", "6", "--device", "cpu"]
    assert runner.invoke(app, base + ["--limit", "2", "-o", str(out)]).exit_code == 0
    assert runner.invoke(app, base + ["--limit", "3", "-o", str(out)]).exit_code == 0
    ids = [json.loads(ln)["id"] for ln in out.read_text().splitlines()]
    assert ids == [f"bookshop-0{i}" for i in (1, 2, 3)]
    one, many = tmp_path / "one.jsonl", tmp_path / "many.jsonl"
    assert runner.invoke(app, base + ["--sample", "4", "--seed", "3", "-o", str(one)]).exit_code == 0
    res = runner.invoke(app, base + ["--sample", "4", "--seed", "3", "--batch-size", "3", "-o", str(many)])
    assert res.exit_code == 0, res.output

    def strip(path):
        return [{k: v for k, v in json.loads(ln).items() if k != "latency_s"}
                for ln in path.read_text().splitlines()]

    assert strip(one) == strip(many) and len(strip(one)) == 4
    res = runner.invoke(app, ["ask", "--db", str(sample_db), "--device", "tpu", "How many books?"])
    assert res.exit_code == 2 and "unknown device 'tpu'" in res.output


def test_llamacpp_install_hint_prints_intact(sample_db):
    """Regression (issue 13): Rich markup ate `[llamacpp]` from the install hint."""
    pytest.importorskip("typer")
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        res = runner.invoke(app, ["ask", "--db", str(sample_db), "--backend", "llamacpp", "How many books?"])
        assert res.exit_code == 2 and "pip install 'learnat[llamacpp]'" in res.output
    else:
        pytest.skip("llama-cpp-python is installed")


def test_max_new_tokens_default_covers_the_training_answers():
    """Regression (issue 10.12): the default 320 was shorter than 173 of 1,528 BIRD dev training answers; 560
    covers their 99th percentile (531 student tokens) and the longest of 1,500 Spider train ones (551)."""
    import inspect

    from learnat_commands.ask import ask_cmd

    default = inspect.signature(ask_cmd).parameters["max_new_tokens"].default
    assert default == AskConfig().max_new_tokens == 560
