"""Loaders for Spider, BIRD and learnat rows (small files in the official formats)."""

from __future__ import annotations

import json

import pytest

from learnat_cli.datasets import load_examples
from learnat_cli.errors import LearnatError


def test_spider_bird_and_learnat(tmp_path):
    spider = tmp_path / "dev.json"
    spider.write_text(json.dumps([{"db_id": "concert_singer", "question": "How many singers?",
                                   "query": "SELECT count(*) FROM singer", "question_toks": ["How"]}]))
    bird = tmp_path / "bird.json"
    bird.write_text(json.dumps([{"question_id": 7, "db_id": "card_games", "question": "q", "evidence": "e",
                                 "SQL": "SELECT 1", "difficulty": "simple"}]))
    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"id": "x1", "question": "q", "gold": "SELECT 2", "tag": 5}\n')
    s = next(load_examples(spider))
    assert (s.id, s.gold, s.db_id) == ("dev-0", "SELECT count(*) FROM singer", "concert_singer")
    assert s.extras()["question_toks"] == ["How"]
    b = next(load_examples(bird))
    assert (b.id, b.gold, b.evidence, b.difficulty) == ("bird-7", "SELECT 1", "e", "simple")
    m = next(load_examples(mine))
    assert (m.id, m.gold, m.extras()["tag"]) == ("x1", "SELECT 2", 5)


def test_missing_question_names_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": "1", "question": "ok"}\n{"id": "2"}\n')
    with pytest.raises(LearnatError) as ei:
        list(load_examples(p))
    assert str(ei.value) == f"{p}:2: field 'question': missing required field"


def test_spider_row_without_db_id_is_an_error(tmp_path):
    p = tmp_path / "dev.json"
    p.write_text(json.dumps([{"db_id": "a", "question": "q", "query": "SELECT 1"},
                             {"question": "q2", "query": "SELECT 2"}]))
    with pytest.raises(LearnatError) as ei:
        list(load_examples(p))
    assert str(ei.value).startswith(f"{p}:2: field 'db_id': missing required field")


def test_non_string_gold_is_an_error_not_dropped(tmp_path):
    spider = tmp_path / "dev.json"
    spider.write_text(json.dumps([{"db_id": "a", "question": "q", "query": 42}]))
    with pytest.raises(LearnatError) as ei:
        list(load_examples(spider))
    assert str(ei.value) == f"{spider}:1: field 'query': expected the gold SQL as a string"
    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"id": "x", "question": "q", "gold": 42}\n')
    with pytest.raises(LearnatError, match=r"mine.jsonl:1: field 'gold': "):
        list(load_examples(mine))
