"""Databases: resolution, schema rendering within a budget, and read-only, time-limited execution."""

from __future__ import annotations

import hashlib
import json

import pytest

from learnat_cli.db import (
    QueryError,
    QueryTimeout,
    WriteRefused,
    execute,
    load_schema,
    render_schema,
    resolve_db,
    schema_from_tables_json,
)
from learnat_cli.errors import LearnatError


def sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_resolve_file_and_root(sample_db, tmp_path, monkeypatch):
    assert resolve_db(str(sample_db)) == sample_db
    root = tmp_path / "dbs"
    (root / "bookshop").mkdir(parents=True)
    target = root / "bookshop" / "bookshop.sqlite"
    target.write_bytes(sample_db.read_bytes())
    assert resolve_db(db_id="bookshop", db_root=str(root)) == target
    assert resolve_db("spider/bookshop", db_root=str(root)) == target
    monkeypatch.setenv("LEARNAT_DB_ROOT", str(root))
    assert resolve_db("bookshop") == target
    with pytest.raises(LearnatError, match="database not found"):
        resolve_db("nope")


def test_schema_has_keys_and_samples(sample_db):
    schema = load_schema(sample_db)
    books = schema.table("books")
    assert [c.name for c in books.columns][:2] == ["book_id", "title"]
    assert any(c.primary_key for c in books.columns)
    assert {(f.column, f.ref_table) for f in books.foreign_keys} == {("author_id", "authors"),
                                                                      ("genre_id", "genres")}
    text = render_schema(schema)
    assert "CREATE TABLE books" in text and "FOREIGN KEY (author_id) REFERENCES authors(author_id)" in text
    assert "e.g." in text


def test_schema_budget_keeps_whole_relevant_tables(sample_db):
    schema = load_schema(sample_db)
    text = render_schema(schema, max_tokens=150, question="Which customers placed orders?")
    assert "CREATE TABLE customers" in text
    # every CREATE TABLE that starts also ends (never cut mid-table)
    assert text.count("CREATE TABLE") == text.count(");")
    assert "Other tables (columns omitted):" in text


@pytest.mark.parametrize("sql", [
    "DROP TABLE books",
    "UPDATE books SET price = 0",
    "DELETE FROM orders",
    "INSERT INTO genres VALUES (99, 'x')",
    "CREATE TABLE t (a)",
    "ATTACH DATABASE ':memory:' AS m",
    "PRAGMA user_version = 7",
])
def test_writes_are_refused_and_file_unchanged(sample_db, sql):
    before = sha(sample_db)
    with pytest.raises(WriteRefused, match="read-only"):
        execute(sample_db, sql)
    assert sha(sample_db) == before


def test_timeout_and_row_cap(sample_db):
    slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    with pytest.raises(QueryTimeout):
        execute(sample_db, slow, timeout_s=0.3)
    res = execute(sample_db, "SELECT * FROM orders", max_rows=10)
    assert len(res.rows) == 10 and res.truncated
    assert res.columns == ["order_id", "customer_id", "order_date", "status"]


def test_sql_error_is_clear(sample_db):
    with pytest.raises(QueryError, match="no such column"):
        execute(sample_db, "SELECT nope FROM books")


def test_schema_from_tables_json(tmp_path):
    tables = [{"db_id": "x", "table_names_original": ["a", "b"], "table_names": ["a", "b"],
               "column_names_original": [[-1, "*"], [0, "id"], [1, "a_id"]],
               "column_names": [[-1, "*"], [0, "id"], [1, "a id"]],
               "column_types": ["text", "number", "number"],
               "primary_keys": [1], "foreign_keys": [[2, 1]]}]
    p = tmp_path / "tables.json"
    p.write_text(json.dumps(tables))
    s = schema_from_tables_json(p, "x")
    assert [t.name for t in s.tables] == ["a", "b"]
    assert s.tables[1].foreign_keys[0].ref_table == "a"
    with pytest.raises(LearnatError, match="not in tables file"):
        schema_from_tables_json(p, "y")
