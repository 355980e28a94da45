"""ask: validation, safety, retry with the error, the fast-path rule, and the CLI with a tiny real model."""

from __future__ import annotations

import hashlib
import json

import pytest
from typer.testing import CliRunner

from learnat_commands.main import app
from learnat_cli.stages.ask import AskConfig, answer, complexity, decide_decompose, repair_hint, validate_sql
from learnat_cli.db import load_schema

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


def test_repair_hint_points_at_the_right_table(sample_db):
    schema = load_schema(sample_db)
    # a real column on the wrong table: name the tables that have it, and what the named table has
    hint = repair_hint("SELECT name FROM books WHERE city = 'Oslo'", schema)
    assert "books has no column name; name is a column of authors, genres, customers (join it)" in hint
    assert "books has no column city; city is a column of customers (join it)" in hint
    assert "books has: book_id, title, author_id, genre_id, published_year, price, pages" in hint
    assert repair_hint("SELECT title FROM book", schema) == "- there is no table book; did you mean books?"
    assert "closest: books.published_year" in repair_hint("SELECT publish_year FROM authors JOIN books", schema)
    assert repair_hint("SELECT title FROM books", schema) == ""
    assert repair_hint("SELEC nonsense (", schema) == "" and repair_hint(None, schema) == ""


def test_ask_cli_with_tiny_model_single_and_batch(tiny_model_dir, sample_db, samples_dir, tmp_path):
    before = hashlib.sha256(sample_db.read_bytes()).hexdigest()
    res = runner.invoke(app, ["ask", "--db", str(sample_db), "--model", str(tiny_model_dir), "--max-new-tokens", "8",
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
    res = runner.invoke(app, ["ask", "--db", str(sample_db), "--backend", "llamacpp", "How many books are there?"])
    assert res.exit_code == 0, res.output
    rec = json.loads([ln for ln in res.stdout.splitlines() if ln.startswith("{")][0])
    assert rec["rows"] == [[32]]
