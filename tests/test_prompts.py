"""The shared student answer format round-trips, and templates can be overridden from a folder."""

from __future__ import annotations

from learnat_cli.prompts import (Demo, format_answer, parse_answer, student_messages, template)


def test_answer_round_trip():
    steps = [("Which books are in print?", "SELECT id FROM books WHERE in_print = 1"),
             ("How many are there?", "SELECT COUNT(*) FROM books WHERE in_print = 1")]
    text = format_answer(steps, "SELECT COUNT(*) FROM books WHERE in_print = 1")
    got_steps, final = parse_answer(text)
    assert got_steps == steps
    assert final == "SELECT COUNT(*) FROM books WHERE in_print = 1"


def test_parse_tolerates_fences_multiline_and_bare_sql():
    assert parse_answer("Final SQL: ```sql\nSELECT a\nFROM t;\n```")[1] == "SELECT a FROM t"
    assert parse_answer("```sql\nSELECT name FROM authors;\n```") == ([], "SELECT name FROM authors")
    assert parse_answer("Step 1: x\nSQL: SELECT 1\n")[1] == "SELECT 1"
    assert parse_answer("I cannot answer.") == ([], None)


def test_messages_include_schema_evidence_and_demos():
    demo = Demo(question="How many authors?", sql="SELECT COUNT(*) FROM authors")
    msgs = student_messages("How many books?", "CREATE TABLE books (id INTEGER)", evidence="books = titles",
                            demos=[demo])
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    assert "CREATE TABLE books" in user and "Evidence: books = titles" in user
    assert "How many authors?" in user and user.rstrip().endswith("Question: How many books?")
    direct = student_messages("q", "s", decompose=False)
    assert "Step 1" not in direct[0]["content"] and "Final SQL" in direct[0]["content"]


def test_template_override(tmp_path):
    (tmp_path / "student_system.txt").write_text("CUSTOM SYSTEM")
    assert template("student_system", tmp_path) == "CUSTOM SYSTEM"
    assert template("student_user", tmp_path).startswith("{demonstrations}")
