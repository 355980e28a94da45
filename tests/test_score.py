"""score: similarity, parse flag and execution match added to rows that keep their other keys."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from learnat_commands.main import app

runner = CliRunner()


def test_score_rows_with_db(sample_db, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "p": "SELECT count(*) FROM books", "g": "SELECT COUNT(*) FROM books", "keep": 1},
        {"id": "b", "p": "SELECT title FROM books WHERE", "g": "SELECT title FROM books"},
        {"id": "c", "p": "SELECT COUNT(book_id) FROM books", "g": "SELECT COUNT(*) FROM books"},
    ]) + "\n")
    out = tmp_path / "scored.jsonl"
    res = runner.invoke(app, ["score", str(rows), "--pred-field", "p", "--gold-field", "g", "--db", str(sample_db),
                              "-o", str(out)])
    assert res.exit_code == 0, res.output
    a, b, c = [json.loads(line) for line in out.read_text().splitlines()]
    assert a["ast_similarity"] == 1.0 and a["parses"] and a["exec_match"] and a["keep"] == 1
    assert b["parses"] is False and b["ast_similarity"] == 0.0 and b["exec_match"] is False
    assert 0 < c["ast_similarity"] < 1 and c["exec_match"] is True


def test_gold_that_does_not_parse_is_an_error(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"pred": "SELECT 1", "gold": "SELECT 1"}\n{"pred": "SELECT 1", "gold": "SELEC x FRM"}\n')
    out = tmp_path / "o.jsonl"
    res = runner.invoke(app, ["score", str(rows), "-o", str(out)])
    assert res.exit_code == 2
    assert f"{rows}:2: field 'gold'" in res.output
    assert not out.exists()  # no partial output left looking complete
