"""The shared student answer format round-trips, and templates can be overridden from a folder."""

from __future__ import annotations

from learnat_cli.prompts import (
    Demo,
    cut_after_final,
    final_sql_done,
    format_answer,
    parse_answer,
    student_messages,
    template,
)


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


def test_a_looping_answer_ends_at_its_first_repeated_step():
    """A trained student caught in a loop repeats one step until the token limit: generation stops at the
    first step SQL line equal (case, spacing and ``;`` aside) to an earlier one, and the answer reads as if it
    ended there -- the repeated step dropped, the last distinct step's SQL the final one."""
    loop = ("Step 1: Which rows of a join b?\nSQL: SELECT * FROM a JOIN b ON a.id = b.a_id\n"
            "Step 2: Names?\nSQL: SELECT a.name FROM a JOIN b ON a.id = b.a_id\n"
            "Step 3: Names?\nSQL: select a.name  FROM a JOIN b ON a.id = b.a_id;\n"
            "Step 4: Names?\nSQL: SELECT a.name FROM")
    assert not final_sql_done(loop.split("Step 3")[0])  # two distinct steps: keep going
    assert not final_sql_done(loop.split("Step 3")[0] + "Step 3: Names?\nSQL: select a.name  FROM a")
    assert final_sql_done(loop)
    cut = cut_after_final(loop)
    assert cut.endswith("b.a_id;\n") and "Step 4" not in cut
    steps, final = parse_answer(cut)
    assert [q for q, _ in steps] == ["Which rows of a join b?", "Names?"]
    assert final == "SELECT a.name FROM a JOIN b ON a.id = b.a_id"
    # the same step with renumbered aliases is a repeat too
    aliases = ("Step 1: a\nSQL: SELECT T4.name FROM h AS T4 JOIN h AS T5 ON T4.id = T5.id\n"
               "Step 2: a\nSQL: SELECT T5.name FROM h AS T5 JOIN h AS T6 ON T5.id = T6.id\n")
    assert final_sql_done(aliases) and len(parse_answer(aliases)[0]) == 1
    # the last step repeated as the Final SQL line is the normal end, not a loop
    normal = "Step 1: x\nSQL: SELECT 1\nFinal SQL: SELECT 1\nStep 2: y\n"
    assert cut_after_final(normal) == "Step 1: x\nSQL: SELECT 1\nFinal SQL: SELECT 1\n"


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


def test_one_sql_extraction_for_students_and_teachers():
    """Issue 11: one function extracts SQL from model text; the teachers' parser and the student's use it."""
    from learnat_cli.prompts import extract_sql
    from learnat_cli.synthesis.teachers import parse_proposal

    cases = {
        "Sub-question: red?\nSQL: SELECT id FROM cards WHERE color = 'R';":
            "SELECT id FROM cards WHERE color = 'R'",
        "```sql\nSELECT a\nFROM t;\n```\nThis counts rows.": "SELECT a FROM t",
        "The answer is SELECT name FROM singer": "SELECT name FROM singer",
        "WITH x AS (SELECT 1) SELECT * FROM x": "WITH x AS (SELECT 1) SELECT * FROM x",
        "I do not know.": None,
    }
    for text, sql in cases.items():
        assert extract_sql(text) == sql
        p = parse_proposal(text)
        assert (p.sql if p else None) == sql
    assert parse_proposal("Sub-question: red?\nSQL: SELECT 1").question == "red?"
    assert parse_answer("Here:\n```sql\nSELECT a FROM t\n```\nThis counts rows.") == ([], "SELECT a FROM t")


def test_fast_path_rule_reads_schema_objects_and_rendered_text_alike(sample_db):
    from learnat_cli.prompts import complexity
    from learnat_cli.schema import load_schema, render_schema

    schema = load_schema(sample_db)
    for q in ("How many books are there?", "Which authors have written more than three books?",
              "For each city, how many delivered orders did its customers place?"):
        assert complexity(q, schema) == complexity(q, render_schema(schema)) \
            == complexity(q, render_schema(schema, fmt="compact"))
