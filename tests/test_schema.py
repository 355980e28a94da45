"""The one schema renderer (issue 10.11): a database and its tables.json entry give the same text; the compact
format; the budget; the table names the fast-path rule reads back."""

from __future__ import annotations

import copy
import json
import sqlite3

import pytest

from learnat_cli.errors import LearnatError
from learnat_cli.schema import (
    canonical_type,
    load_schema,
    render_schema,
    schema_from_tables_json,
    table_names_in,
)

DDL = """
CREATE TABLE singer (singer_id int PRIMARY KEY, name varchar(20), born date, net_worth real, is_male bool);
CREATE TABLE concert (concert_id INTEGER, year TEXT, stadium_id INT, PRIMARY KEY (concert_id, year));
CREATE TABLE singer_in_concert (concert_id int, singer_id int,
    FOREIGN KEY (singer_id) REFERENCES singer(singer_id),
    FOREIGN KEY (concert_id) REFERENCES concert(concert_id));
INSERT INTO singer VALUES (1, 'Joe Sharp', '1970-01-01', 3.5, 1), (2, 'Ann', '1980-02-02', 1.0, 0);
"""

# the Spider tables.json entry of that database, as Spider's own script writes it (types: text/number/...)
TABLES = [{
    "db_id": "concert_singer",
    "table_names_original": ["singer", "concert", "singer_in_concert"],
    "table_names": ["singer", "concert", "singer in concert"],
    "column_names_original": [[-1, "*"], [0, "singer_id"], [0, "name"], [0, "born"], [0, "net_worth"],
                              [0, "is_male"], [1, "concert_id"], [1, "year"], [1, "stadium_id"],
                              [2, "concert_id"], [2, "singer_id"]],
    "column_names": [[-1, "*"], [0, "singer id"], [0, "name"], [0, "born"], [0, "net worth"], [0, "is male"],
                     [1, "concert id"], [1, "year"], [1, "stadium id"], [2, "concert id"], [2, "singer id"]],
    "column_types": ["text", "number", "text", "time", "number", "boolean", "number", "text", "number",
                     "number", "number"],
    "primary_keys": [1, [6, 7]],
    "foreign_keys": [[10, 1], [9, 6]],
}]


@pytest.fixture()
def concert(tmp_path):
    db = tmp_path / "concert_singer.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(DDL)
    conn.commit()
    conn.close()
    tj = tmp_path / "tables.json"
    tj.write_text(json.dumps(TABLES))
    return db, tj


def test_database_and_tables_json_render_the_same_text(concert):
    """Regression: synthesis from --tables rendered `NUMBER`/`TEXT` where ask rendered `int`/`varchar(20)`."""
    db, tj = concert
    for fmt in ("sql", "compact"):
        from_db = render_schema(load_schema(db, n_samples=0), fmt=fmt, values=False)
        from_json = render_schema(schema_from_tables_json(tj, "concert_singer"), fmt=fmt, values=False)
        assert from_db == from_json
    text = render_schema(load_schema(db), question="singer names")
    assert "  name TEXT, -- e.g. 'Joe Sharp', 'Ann'" in text and "  born TIME," in text
    assert "  stadium_id NUMBER,\n  PRIMARY KEY (concert_id, year)\n);" in text
    assert "  FOREIGN KEY (singer_id) REFERENCES singer(singer_id)\n);" in text
    # with values off, a database renders as its tables.json entry would
    assert "e.g." not in render_schema(load_schema(db), values=False)


def test_canonical_types_follow_spiders_rule():
    assert [canonical_type(t) for t in ("varchar(20)", "", "INTEGER", "real", "numeric(10,2)", "DATETIME",
                                        "date", "bool", "blob")] == \
        ["TEXT", "TEXT", "NUMBER", "NUMBER", "NUMBER", "TIME", "TIME", "BOOLEAN", "OTHER"]
    # BIRD's tables.json vocabulary
    assert [canonical_type(t) for t in ("integer", "text", "real", "date", "datetime")] == \
        ["NUMBER", "TEXT", "NUMBER", "TIME", "TIME"]


def test_compact_format_one_line_per_table(concert):
    db, _ = concert
    text = render_schema(load_schema(db), fmt="compact")
    lines = text.splitlines()
    assert len(lines) == 3
    # samples of text and time columns only (what a question's words name), two at most, 24 characters
    assert lines[0] == ("singer(singer_id NUMBER PK, name TEXT [e.g. 'Joe Sharp', 'Ann'], "
                        "born TIME [e.g. '1970-01-01', '1980-02-02'], net_worth NUMBER, is_male BOOLEAN)")
    assert lines[1] == "concert(concert_id NUMBER PK, year TEXT PK, stadium_id NUMBER)"
    assert lines[2] == ("singer_in_concert(concert_id NUMBER FK concert.concert_id, "
                        "singer_id NUMBER FK singer.singer_id)")
    assert len(text) < len(render_schema(load_schema(db)))
    with pytest.raises(LearnatError, match="unknown schema format"):
        render_schema(load_schema(db), fmt="yaml")
    long = copy.deepcopy(load_schema(db))  # load_schema is cached: change a copy
    long.tables[0].columns[1].samples = ["a very long name that goes on and on", "b", "c"]
    assert "name TEXT [e.g. 'a very long name that...', 'b']" in render_schema(long, fmt="compact")


def test_budget_and_table_names_read_back(sample_db):
    schema = load_schema(sample_db)
    names = [t.name for t in schema.tables]
    for fmt in ("sql", "compact"):
        assert table_names_in(render_schema(schema, fmt=fmt)) == names
        small = render_schema(schema, max_tokens=60, question="Which customers placed orders?", fmt=fmt)
        assert "-- Other tables (columns omitted):" in small
        assert sorted(table_names_in(small)) == sorted(names)  # omitted tables are still named
