"""SQL core: golden fixtures (normalisation, containment, similarity bounds) and properties."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from learnat_cli.sql import GoldAst, SqlParseError, normalize, parse, similarity, tables_and_columns

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "sql_golden.json").read_text())

CORPUS = [
    "SELECT name FROM singer WHERE age > 30",
    "SELECT count(*) FROM singer",
    "SELECT T1.name, T2.title FROM author AS T1 JOIN book AS T2 ON T1.id = T2.author_id",
    "SELECT country, avg(age) FROM singer GROUP BY country HAVING count(*) > 2",
    "SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer) ORDER BY name LIMIT 3",
    "SELECT id FROM a UNION SELECT id FROM b",
    "SELECT DISTINCT city FROM customers WHERE name LIKE '%a%' OR id BETWEEN 1 AND 9",
]


@pytest.mark.parametrize("sql,expected", GOLDEN["normalize"])
def test_normalize_golden(sql, expected):
    assert normalize(sql).sql() == expected


@pytest.mark.parametrize("case", GOLDEN["contains"], ids=lambda c: c["why"])
def test_contains_golden(case):
    assert GoldAst(case["gold"]).contains(case["step"]) is case["expect"]


@pytest.mark.parametrize("case", GOLDEN["similarity"], ids=lambda c: c["a"][:30])
def test_similarity_golden(case):
    s = similarity(case["a"], case["b"])
    assert case["min"] - 1e-9 <= s <= case["max"] + 1e-9


def test_similarity_properties():
    rng = random.Random(0)
    for _ in range(60):
        a, b = rng.choice(CORPUS), rng.choice(CORPUS)
        s = similarity(a, b)
        assert 0.0 <= s <= 1.0
        assert s == pytest.approx(similarity(b, a))
    for q in CORPUS:
        assert similarity(q, q) == 1.0


def test_parse_errors():
    with pytest.raises(SqlParseError):
        parse("SELEC name FRM singer")
    with pytest.raises(SqlParseError):
        parse("")
    with pytest.raises(SqlParseError):
        parse("SELECT 1; SELECT 2")


def test_coverage_and_redundancy():
    gold = GoldAst("SELECT name FROM singer WHERE age > (SELECT AVG(age) FROM singer) ORDER BY name")
    inner = gold.covered("SELECT AVG(age) FROM singer")
    mid = gold.covered("SELECT name FROM singer WHERE age > (SELECT AVG(age) FROM singer)")
    full = gold.covered(gold.gold)
    assert inner and inner < mid < full
    assert len(full) == gold.n_nodes
    assert gold.covered("SELECT AVG(age) FROM singer") <= mid  # a repeat adds nothing: redundant
    assert gold.covered("SELECT x FROM nowhere") == frozenset()
    r_inner = gold.reward(inner, "SELECT AVG(age) FROM singer")
    r_mid = gold.reward(mid, "SELECT name FROM singer WHERE age > (SELECT AVG(age) FROM singer)")
    assert 0 < r_inner < r_mid < gold.reward(full, gold.gold) == pytest.approx(1.0)
    assert gold.matches("select name from singer where age > (select avg(age) from singer) order by name;")


def test_tables_and_columns_resolve_aliases():
    tables, cols = tables_and_columns("SELECT T1.name, T2.x FROM a AS T1 JOIN b AS T2 ON T1.id = T2.aid")
    assert tables == {"a", "b"}
    assert cols == {("a", "name"), ("b", "x"), ("a", "id"), ("b", "aid")}
    tables, cols = tables_and_columns("WITH t AS (SELECT id FROM x) SELECT t.id FROM t")
    assert tables == {"x"} and ("x", "id") in cols
