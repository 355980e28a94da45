"""SQL core: golden fixtures (normalisation, containment, similarity bounds) and properties."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from learnat_cli.sql import (
    GoldAst,
    SqlParseError,
    normalize,
    parse,
    rebind_columns,
    similarity,
    tables_and_columns,
    unalias,
)

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
    r_inner = gold.reward(inner)
    r_mid = gold.reward(mid)
    assert 0 < r_inner < r_mid < gold.reward(full) == pytest.approx(1.0)
    assert gold.matches("select name from singer where age > (select avg(age) from singer) order by name;")


def test_tables_and_columns_resolve_aliases():
    tables, cols = tables_and_columns("SELECT T1.name, T2.x FROM a AS T1 JOIN b AS T2 ON T1.id = T2.aid")
    assert tables == {"a", "b"}
    assert cols == {("a", "name"), ("b", "x"), ("a", "id"), ("b", "aid")}
    tables, cols = tables_and_columns("WITH t AS (SELECT id FROM x) SELECT t.id FROM t")
    assert tables == {"x"} and ("x", "id") in cols


# --- issue 10: AND/OR chains, whole predicates, merged-AST reward, projected columns in the schema
# -------------


def test_one_conjunct_of_an_and_filter_is_progress():
    gold = GoldAst("SELECT name FROM singer WHERE age > 30 AND country = 'France'")
    assert gold.contains("SELECT name FROM singer WHERE age > 30")
    assert gold.contains("SELECT name FROM singer WHERE country = 'France'")
    assert gold.contains("SELECT name FROM singer WHERE country = 'France' AND age > 30")  # order is free
    # n-ary chains: any sub-conjunction of a 3-way AND, in golds nested either way
    g3 = GoldAst("SELECT a FROM t WHERE (x = 1 AND y = 2) AND z = 3")
    assert g3.contains("SELECT a FROM t WHERE x = 1 AND z = 3")
    assert g3.contains("SELECT a FROM t WHERE y = 2")
    # ... and in HAVING and JOIN ... ON
    gh = GoldAst("SELECT c FROM t GROUP BY c HAVING COUNT(*) > 2 AND SUM(v) < 9")
    assert gh.contains("SELECT c FROM t GROUP BY c HAVING COUNT(*) > 2")
    gj = GoldAst("SELECT a.x FROM a JOIN b ON a.id = b.aid AND a.k = b.k")
    assert gj.contains("SELECT a.x FROM a JOIN b ON a.id = b.aid")
    # an OR is not narrowed to one of its branches, and a conjunct is not a disjunct
    go = GoldAst("SELECT a FROM t WHERE x = 1 OR y = 2")
    assert not go.contains("SELECT a FROM t WHERE x = 1")
    g_and = GoldAst("SELECT a FROM t WHERE x = 1 AND y = 2")
    assert not g_and.contains("SELECT a FROM t WHERE x = 1 OR y = 2")
    # coverage: the conjunct covers its own predicate node, not the other one
    cov = gold.covered("SELECT name FROM singer WHERE age > 30")
    assert 0 < len(cov) < gold.n_nodes
    assert not gold.covered("SELECT name FROM singer WHERE country = 'France'") <= cov


def test_recombined_literals_are_invalid():
    gold = GoldAst("SELECT name FROM t WHERE a = 1 AND b = 2")
    assert not gold.contains("SELECT name FROM t WHERE a = 2 AND b = 1")
    assert not gold.contains("SELECT name FROM t WHERE a = 2")
    assert not gold.contains("SELECT name FROM t WHERE b < 2")  # same column and literal, other operator
    assert not gold.contains("SELECT name FROM t WHERE a = b")
    assert gold.contains("SELECT name FROM t WHERE a = 1.0")  # the same number written otherwise
    # a predicate around a sub-query: the predicate is whole, the sub-query's tree stays reachable
    gs = GoldAst("SELECT name FROM singer WHERE age > (SELECT AVG(age) FROM singer)")
    assert gs.contains("SELECT AVG(age) FROM singer")
    assert not gs.contains("SELECT name FROM singer WHERE age < (SELECT AVG(age) FROM singer)")
    assert not gs.contains("SELECT name FROM singer WHERE name > (SELECT AVG(age) FROM singer)")
    gi = GoldAst("SELECT name FROM t WHERE id IN (SELECT tid FROM u WHERE v = 3)")
    assert gi.contains("SELECT tid FROM u WHERE v = 3")
    assert not gi.contains("SELECT name FROM t WHERE id NOT IN (SELECT tid FROM u WHERE v = 3)")


def test_projected_columns_must_exist_in_the_schema():
    cols = {"cards": ["id", "name", "color"], "sets": ["code", "name"]}
    gold = GoldAst("SELECT COUNT(*) FROM cards WHERE color = 'R'", columns=cols)
    assert not gold.contains("SELECT no_such_column FROM cards WHERE color = 'R'")
    assert gold.contains("SELECT id FROM cards WHERE color = 'R'")
    assert gold.contains("SELECT ID, Name FROM cards WHERE color = 'R'")  # case-insensitive
    assert not gold.contains("SELECT code FROM cards WHERE color = 'R'")  # a column of another table
    assert gold.contains("SELECT * FROM cards WHERE color = 'R'")
    gj = GoldAst("SELECT COUNT(*) FROM cards AS c JOIN sets AS s ON c.name = s.name", columns=cols)
    assert gj.contains("SELECT c.id, s.code FROM cards AS c JOIN sets AS s ON c.name = s.name")
    assert not gj.contains("SELECT s.id FROM cards AS c JOIN sets AS s ON c.name = s.name")


def test_reward_is_computed_on_the_merged_steps():
    gold = GoldAst("SELECT name FROM singer WHERE age > (SELECT AVG(age) FROM singer) ORDER BY name")
    s1 = "SELECT name FROM singer WHERE age > (SELECT AVG(age) FROM singer)"
    s2 = "SELECT name FROM singer ORDER BY name"  # progressive: adds the ORDER BY, a much smaller tree
    c1 = gold.covered(s1)
    c2 = c1 | gold.covered(s2)
    assert c2 > c1
    # the old structural term (similarity of the last step alone) made this reward fall
    assert similarity(s2, gold.gold) < similarity(s1, gold.gold)
    assert gold.reward(c2) > gold.reward(c1)
    assert gold.merged_similarity(frozenset(range(gold.n_nodes))) == 1.0
    assert gold.merged_similarity(frozenset()) == 0.0
    assert gold.reward(frozenset(range(gold.n_nodes))) == pytest.approx(1.0)


LADDER_GOLDS = CORPUS + [
    "SELECT T1.name, COUNT(*) FROM authors AS T1 JOIN books AS T2 ON T1.author_id = T2.author_id "
    "WHERE T2.year > 2000 AND T2.price < 10 GROUP BY T1.author_id HAVING COUNT(*) > 3 "
    "ORDER BY COUNT(*) DESC LIMIT 5",
    "SELECT name FROM t WHERE id IN (SELECT tid FROM u WHERE v = 3 AND w = 'x') AND k > 2 ORDER BY name",
    "SELECT a FROM t WHERE x = 1 OR y = 2 EXCEPT SELECT a FROM t WHERE z = 3",
    "SELECT count(*) FROM (SELECT DISTINCT c FROM t WHERE d NOT IN (1, 2))",
    "SELECT max(p), min(p) FROM t WHERE q BETWEEN 1 AND 5 AND r IS NOT NULL AND s LIKE '%a%'",
]


SAMPLE_GOLDS = [json.loads(line)["gold"] for line in
                (Path(__file__).parents[1] / "samples" / "questions.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("gold_sql", LADDER_GOLDS + SAMPLE_GOLDS)
def test_reward_never_falls_along_a_progressive_ladder(gold_sql):
    """Property: along the AST teacher's ladder, and along every subsequence of it, the reward of the merged
    steps never falls when a progressive step is added, and the gold closes at 1."""
    from learnat_cli.synthesis.ast_teacher import gold_ladder

    gold = GoldAst(gold_sql)
    ladder = [p.sql for p in gold_ladder(gold_sql, "q")]
    assert gold.matches(ladder[-1])
    rng = random.Random(0)
    orders = [ladder] + [rng.sample(ladder, len(ladder)) for _ in range(5)]
    for order in orders:
        cov, last = frozenset(), 0.0
        for sql in order:
            step = gold.covered(sql)
            if not step or step <= cov:
                continue  # invalid or redundant: not a progressive step
            cov = cov | step
            r = gold.reward(cov)
            assert r > last - 1e-12, (order, sql)
            last = r
    assert gold.reward(gold.covered(gold_sql)) == pytest.approx(1.0)


def test_a_disjunction_is_matched_as_a_whole():
    gold = GoldAst("SELECT name FROM technician WHERE age = 36 OR age = 37")
    assert not gold.contains("SELECT name FROM technician WHERE age = 37 OR age = 37")  # (Spider train)
    assert not gold.contains("SELECT name FROM technician WHERE age = 37")
    assert gold.contains("SELECT name FROM technician WHERE (age = 36) OR age = 37")
    g2 = GoldAst("SELECT a FROM t WHERE k = 1 AND (x = 1 OR y = 2 OR z = 3)")
    assert g2.contains("SELECT a FROM t WHERE x = 1 OR (y = 2 OR z = 3)")
    assert not g2.contains("SELECT a FROM t WHERE x = 1 OR y = 2")


def test_a_step_stays_within_one_select_of_the_gold():
    """Labels alone would let a step mix the two sides of a set operation (Spider train golds)."""
    gold = GoldAst("SELECT course_id FROM section WHERE semester = 'Fall' AND year = 2009 EXCEPT "
                   "SELECT course_id FROM section WHERE semester = 'Spring' AND year = 2010")
    assert gold.contains("SELECT course_id FROM section WHERE semester = 'Fall' AND year = 2009")
    assert gold.contains("SELECT course_id FROM section WHERE semester = 'Spring'")
    assert not gold.contains("SELECT course_id FROM section WHERE semester = 'Fall' AND year = 2010")
    gu = GoldAst("SELECT id FROM a JOIN b ON a.id = b.aid GROUP BY a.id HAVING count(*) = 2 UNION "
                 "SELECT id FROM a JOIN c ON a.id = c.aid GROUP BY a.id HAVING count(*) = 1")
    assert not gu.contains("SELECT id FROM a JOIN c ON a.id = c.aid GROUP BY a.id HAVING count(*) = 2")
    assert gu.contains("SELECT id FROM a JOIN c ON a.id = c.aid GROUP BY a.id")


def test_a_self_join_keeps_its_occurrences_apart():
    """BIRD dev 724: the two aliases of colour must not be interchangeable (eye 'Blue', hair 'Blond')."""
    j = ("SELECT T1.superhero_name FROM superhero AS T1 JOIN colour AS T2 ON T1.eye_colour_id = T2.id "
         "JOIN colour AS T3 ON T1.hair_colour_id = T3.id ")
    gold = GoldAst(j + "WHERE T2.colour = 'Blue' AND T3.colour = 'Blond'")
    assert not gold.contains(j + "WHERE T2.colour = 'Blond' AND T3.colour = 'Blue'")
    assert gold.contains(j + "WHERE T3.colour = 'Blond'")
    assert gold.contains("SELECT T1.superhero_name FROM superhero AS T1 JOIN colour AS T2 "
                         "ON T1.eye_colour_id = T2.id WHERE T2.colour = 'Blue'")
    tables, cols = tables_and_columns(j)
    assert tables == {"superhero", "colour"} and ("colour", "id") in cols


def test_function_literals_stay_in_their_argument_slot():
    """BIRD dev 1471/1490: IIF(c, 1, 0) -> IIF(c, 1, 1) recombined the gold's literals across arguments."""
    gold = GoldAst("SELECT CAST(SUM(IIF(currency = 'EUR', 1, 0)) AS REAL) / SUM(IIF(currency = 'CZK', 1, 0)) "
                   "FROM customers")
    assert not gold.contains("SELECT CAST(SUM(IIF(currency = 'EUR', 1, 0)) AS REAL) / "
                             "SUM(IIF(currency = 'CZK', 1, 1)) FROM customers")
    g2 = GoldAst("SELECT SUBSTR(t, 1, 1) || SUBSTR(t, 3, 2) FROM x")
    assert not g2.contains("SELECT SUBSTR(t, 3, 1) || SUBSTR(t, 3, 2) FROM x")
    assert g2.contains("SELECT SUBSTR(t, 1, 1) || SUBSTR(t, 3, 2) FROM x LIMIT 5") is False  # LIMIT: not in gold  # noqa: E501
    assert GoldAst("SELECT a FROM t LIMIT 3").contains("SELECT a FROM t LIMIT 3")


# --- rebinding a column put on the wrong table of a join (ask, before a retry)
# -------------

REBIND_SCHEMA = {"teacher": {"teacher_id", "name", "hometown"}, "course": {"course_id", "title"},
                 "course_arrange": {"course_id", "teacher_id", "grade"}}


@pytest.mark.parametrize("sql,expected", [
    # the only joined table that has the column takes it
    ("SELECT T2.hometown FROM teacher AS T1 JOIN course_arrange AS T2 ON T1.teacher_id = T2.teacher_id",
     "SELECT T1.hometown FROM teacher AS T1 JOIN course_arrange AS T2 ON T1.teacher_id = T2.teacher_id"),
    # everywhere in that SELECT (projection, WHERE, GROUP BY, ORDER BY), names as written, other columns kept
    ("SELECT T2.Name, COUNT(*) FROM course_arrange AS T1 JOIN teacher AS T2 ON T1.teacher_id = T2.teacher_id "
     "WHERE T1.hometown = 'X' GROUP BY T1.Hometown ORDER BY T1.hometown",
     "SELECT T2.Name, COUNT(*) FROM course_arrange AS T1 JOIN teacher AS T2 ON T1.teacher_id = T2.teacher_id "
     "WHERE T2.hometown = 'X' GROUP BY T2.Hometown ORDER BY T2.hometown"),
    # a table named without an alias is qualified by its name
    ("SELECT course.grade FROM course JOIN course_arrange USING (course_id)",
     "SELECT course_arrange.grade FROM course JOIN course_arrange USING (course_id)"),
    # a subquery is its own scope: only its tables count
    ("SELECT name FROM teacher WHERE teacher_id IN (SELECT T1.teacher_id FROM course AS T1 "
     "JOIN course_arrange AS T2 ON T1.course_id = T2.course_id)",
     "SELECT name FROM teacher WHERE teacher_id IN (SELECT T2.teacher_id FROM course AS T1 "
     "JOIN course_arrange AS T2 ON T1.course_id = T2.course_id)"),
])
def test_rebind_moves_a_column_to_the_one_table_in_scope_that_has_it(sql, expected):
    assert rebind_columns(sql, REBIND_SCHEMA) == expected


@pytest.mark.parametrize("sql", [
    "SELECT T1.hometown FROM teacher AS T1",  # nothing wrong
    # two tables in scope have teacher_id: which one is a guess
    "SELECT T1.teacher_id FROM course AS T1 JOIN course_arrange AS T2 JOIN teacher AS T3",
    # no table in scope has it (the student should join another table: the retry's hint says which)
    "SELECT T1.hometown FROM course AS T1 JOIN course_arrange AS T2 ON T1.course_id = T2.course_id",
    "SELECT hometown FROM course",  # unqualified: left to the retry
    "SELECT T1.x FROM (SELECT 1 AS x) AS T1",  # a derived table
    "WITH c AS (SELECT title FROM course) SELECT c.grade FROM c JOIN course_arrange",  # a CTE
    "SELECT FROM WHERE",  # does not parse
])
def test_rebind_leaves_what_it_cannot_bind_for_sure(sql):
    assert rebind_columns(sql, REBIND_SCHEMA) is None


# --- alias-free gold SQL for training data (decompose --unalias)


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT T2.name FROM concert AS T1 JOIN singer AS T2 ON T1.id = T2.cid WHERE T1.year > 2000",
     "SELECT singer.name FROM concert JOIN singer ON concert.id = singer.cid WHERE concert.year > 2000"),
    # a subquery's own aliases are its own: T1 is has_pet inside, student outside
    ("SELECT T1.name FROM student AS T1 WHERE T1.id IN (SELECT T1.sid FROM has_pet AS T1 JOIN pets AS T2 "
     "ON T1.pid = T2.pid WHERE T2.type = 'cat')",
     "SELECT student.name FROM student WHERE student.id IN (SELECT has_pet.sid FROM has_pet JOIN pets "
     "ON has_pet.pid = pets.pid WHERE pets.type = 'cat')"),
    # a correlated reference is bound by the enclosing SELECT
    ("SELECT T1.x FROM t AS T1 WHERE EXISTS (SELECT 1 FROM u AS T2 WHERE T2.a = T1.a)",
     "SELECT t.x FROM t WHERE EXISTS(SELECT 1 FROM u WHERE u.a = t.a)"),
    # the same table again in a subquery keeps its alias there; the other table still loses its own
    ("SELECT T1.player_name FROM Player AS T1 JOIN Player_Attributes AS T2 ON T1.pid = T2.pid "
     "WHERE T2.rating > (SELECT AVG(rating) FROM Player_Attributes)",
     "SELECT Player.player_name FROM Player JOIN Player_Attributes AS T2 ON Player.pid = T2.pid "
     "WHERE T2.rating > (SELECT AVG(rating) FROM Player_Attributes)"),
    ("SELECT COUNT(*) FROM (SELECT T1.a FROM t AS T1) AS sub",
     "SELECT COUNT(*) FROM (SELECT t.a FROM t) AS sub"),
])
def test_unalias_names_each_columns_table(sql, expected):
    assert unalias(sql) == expected


@pytest.mark.parametrize("sql", [
    "SELECT name FROM singer",  # no alias
    "SELECT T1.name FROM emp AS T1 JOIN emp AS T2 ON T1.boss = T2.id",  # a self-join needs its aliases
    # correlated on the same table: renaming both to t would bind the inner t.c to itself
    "SELECT T1.a FROM t AS T1 WHERE T1.b > (SELECT AVG(T2.b) FROM t AS T2 WHERE T2.c = T1.c)",
    "SELECT b.x FROM a AS b JOIN b AS a ON b.id = a.id",  # aliases that are other tables' names
    "SELECT FROM WHERE",  # does not parse
])
def test_unalias_leaves_what_it_cannot_rename_safely(sql):
    assert unalias(sql) is None


def test_unalias_keeps_results_on_a_real_database(tmp_path):
    import sqlite3

    db = tmp_path / "d.sqlite"
    con = sqlite3.connect(db)
    con.executescript("CREATE TABLE singer(id INTEGER PRIMARY KEY, name TEXT, age INT);"
                      "CREATE TABLE concert(id INTEGER PRIMARY KEY, sid INT, year INT);"
                      "INSERT INTO singer VALUES (1,'Ann',30),(2,'Bob',40),(3,'Cy',50);"
                      "INSERT INTO concert VALUES (1,1,2001),(2,1,1999),(3,2,2005),(4,3,2010);")
    golds = ["SELECT T1.name, COUNT(*) FROM singer AS T1 JOIN concert AS T2 ON T1.id = T2.sid GROUP BY T1.id",
             "SELECT T1.name FROM singer AS T1 WHERE T1.id NOT IN (SELECT T2.sid FROM concert AS T2 "
             "WHERE T2.year < 2000) ORDER BY T1.age DESC",
             "SELECT T1.name FROM singer AS T1 WHERE EXISTS (SELECT 1 FROM concert AS T2 "
             "WHERE T2.sid = T1.id AND T2.year > 2004)"]
    for gold in golds:
        new = unalias(gold)
        assert new is not None and " AS T" not in new
        assert con.execute(new).fetchall() == con.execute(gold).fetchall()
