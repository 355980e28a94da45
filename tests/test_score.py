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
    res = runner.invoke(app, ["score", str(rows), "--pred-field", "p", "--gold-field", "g",
                              "--db", str(sample_db),
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


def test_score_stage_api_streams_in_order_and_reports(sample_db):
    from learnat_cli.stages.score import ScoreConfig, score

    rows = [{"id": str(i), "pred": f"SELECT {i}", "gold": "SELECT 1"} for i in range(3)]
    out, rep = score(rows, ScoreConfig(db=str(sample_db)))
    assert rep.rows == 0  # lazy: nothing is scored before the rows are read
    got = list(out)
    assert [r["id"] for r in got] == ["0", "1", "2"]
    assert [r["exec_match"] for r in got] == [False, True, False]
    assert rep.rows == 3 and rep.exec_correct == 1 and rep.metric == "bird"
    assert got[1]["exec_metric"] == "bird"


def test_score_bad_gold_and_output_folder(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"pred": "SELECT 1", "gold": 42}\n')
    res = runner.invoke(app, ["score", str(rows)])
    assert res.exit_code == 2 and f"{rows}:1: field 'gold': expected the gold SQL" in res.stderr
    rows.write_text('{"pred": "SELECT 1", "gold": "SELECT 1"}\n')
    folder = tmp_path / "out"
    folder.mkdir()
    res = runner.invoke(app, ["score", str(rows), "-o", str(folder)])
    assert res.exit_code == 2 and not (tmp_path / "out.partial").exists()


def test_score_spider_metric_uses_official_rules(sample_db, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"pred": "SELECT genre_id FROM books",
                                "gold": "SELECT DISTINCT genre_id FROM books",
                                "query_toks": []}) + "\n")  # a Spider row: spider by default
    res = runner.invoke(app, ["score", str(rows), "--db", str(sample_db)])
    row = json.loads(res.stdout)
    assert res.exit_code == 0 and row["exec_metric"] == "spider" and row["exec_match"] is True
    res = runner.invoke(app, ["score", str(rows), "--db", str(sample_db), "--keep-distinct"])
    assert json.loads(res.stdout)["exec_match"] is False
