"""The one schema renderer of learnat: database schemas as the student reads them, in training and at
inference (LearNAT sec. 3.2 synthesis prompts, sec. 3.3 training rows, sec. 3.4 ``ask``).

Inputs: a SQLite file (:func:`load_schema`: tables, columns, declared types, primary and foreign keys, up to
``n_samples`` distinct values per column) or a Spider/BIRD ``tables.json`` entry
(:func:`schema_from_tables_json`: the same, without values, for databases that are not on disk). Output:
:class:`Schema`, and prompt text from :func:`render_schema`.

One text whatever the source: the renderer never looks at where a :class:`Schema` came from.
- Types are written in one coarse vocabulary, ``TEXT``, ``NUMBER``, ``TIME``, ``BOOLEAN``, ``OTHER``, by the
  rule Spider used to write its ``tables.json`` from the SQLite declarations (``char``/``text``/``var``/empty
  -> text; ``int``/``numeric``/``decimal``/``number``/``id``/``real``/``double``/``float`` -> number;
  ``date``/``time``/``year`` -> time; ``bool``/``bit`` -> boolean; else other), so that ``varchar(20)`` on
  disk and ``text`` in ``tables.json`` (or BIRD's ``integer``/``real``) render alike. The price: INTEGER vs
  REAL is not shown.
- Foreign keys are written sorted; primary keys from the table's own order.
- Sample values exist only for a database on disk: ``values=False`` (``--no-schema-values``) renders a
  database exactly as its ``tables.json`` entry renders (a test checks it), which is what a student trained on
  ``tables.json`` schemas should be asked with.

Formats (``fmt``): ``sql`` (default), CREATE TABLE statements with ``-- e.g.`` value comments; ``compact``,
one line per table: ``books(book_id NUMBER PK, title TEXT [e.g. 'Dune', 'Emma'], author_id NUMBER FK
authors.author_id)``, with two sample values of text and time columns only (24 characters at most).
Budget: whole tables only; over ``max_tokens``, values go first, then tables are kept by
relevance to the question (word overlap with table/column names) and the rest are listed by name only.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from learnat_cli.errors import LearnatError

FORMATS = ("sql", "compact")
DEFAULT_SCHEMA_TOKENS = 1500  # ask and decompose (a 0.5B student's prompt stays near 2k tokens)


@dataclass
class Column:
    name: str
    type: str = ""
    primary_key: bool = False
    samples: list = field(default_factory=list)
    description: str = ""


@dataclass
class ForeignKey:
    column: str
    ref_table: str
    ref_column: str


@dataclass
class Table:
    name: str
    columns: list[Column] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)


@dataclass
class Schema:
    tables: list[Table] = field(default_factory=list)
    db_id: str = ""

    def table(self, name: str) -> Table | None:
        low = name.lower()
        return next((t for t in self.tables if t.name.lower() == low), None)

    def names(self) -> tuple[set[str], dict[str, set[str]]]:
        """(table names, table -> column names), lower-cased, for validation."""
        tabs = {t.name.lower() for t in self.tables}
        cols = {t.name.lower(): {c.name.lower() for c in t.columns} for t in self.tables}
        return tabs, cols


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ----------------------------------------------------------------------------------------------------
# Sources


@lru_cache(maxsize=256)
def _load_schema_cached(path: str, mtime: float, n_samples: int) -> Schema:
    from learnat_cli.db import connect_ro

    conn = connect_ro(path)
    try:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
        tables = []
        for name in names:
            cols = [Column(name=r[1], type=r[2] or "", primary_key=bool(r[5]))
                    for r in conn.execute(f"PRAGMA table_info({_q(name)})")]
            fks = [ForeignKey(column=r[3], ref_table=r[2], ref_column=r[4] or "")
                   for r in conn.execute(f"PRAGMA foreign_key_list({_q(name)})")]
            if n_samples:
                for c in cols:
                    try:
                        rows = conn.execute(
                            f"SELECT DISTINCT {_q(c.name)} FROM {_q(name)} WHERE {_q(c.name)} IS NOT NULL "
                            f"LIMIT {int(n_samples)}").fetchall()
                        c.samples = [r[0] for r in rows if not isinstance(r[0], bytes)]
                    except sqlite3.Error:
                        c.samples = []
            tables.append(Table(name=name, columns=cols, foreign_keys=fks))
    finally:
        conn.close()
    return Schema(tables=tables, db_id=Path(path).stem)


def load_schema(db_path: str | Path, n_samples: int = 3) -> Schema:
    """Tables, columns (types, primary keys), foreign keys and up to ``n_samples`` distinct values per
    column."""
    p = Path(db_path)
    if not p.is_file():
        raise LearnatError("database file not found", file=str(p))
    return _load_schema_cached(str(p.resolve()), p.stat().st_mtime, n_samples)


def schema_from_tables_json(path: str | Path, db_id: str) -> Schema:
    """A schema from Spider/BIRD ``tables.json`` (for databases that are not on disk, e.g. BIRD dev here)."""
    entries = _tables_json(str(path))
    e = entries.get(db_id)
    if e is None:
        raise LearnatError(f"db_id {db_id!r} not in tables file", file=str(path), field="db_id")
    names = e.get("table_names_original") or e["table_names"]
    cols = e.get("column_names_original") or e["column_names"]
    types = e.get("column_types") or []
    pks = set()
    for pk in e.get("primary_keys", []):
        pks.update(pk if isinstance(pk, list) else [pk])
    tables = [Table(name=n) for n in names]
    for i, (ti, cname) in enumerate(cols):
        if ti < 0:
            continue
        tables[ti].columns.append(Column(name=cname, type=(types[i] if i < len(types) else ""),
                                         primary_key=i in pks))
    for a, b in e.get("foreign_keys", []):
        ta, ca = cols[a]
        tb, cb = cols[b]
        tables[ta].foreign_keys.append(ForeignKey(column=ca, ref_table=names[tb], ref_column=cb))
    return Schema(tables=tables, db_id=db_id)


@lru_cache(maxsize=8)
def _tables_json(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LearnatError("no such file", file=path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LearnatError(f"invalid JSON: {getattr(e, 'msg', e)}", file=path,
                           line=getattr(e, "lineno", None)) from None
    if not isinstance(data, list):
        raise LearnatError("expected a JSON array of schemas (Spider/BIRD tables.json)", file=path)
    return {d["db_id"]: d for d in data if isinstance(d, dict) and "db_id" in d}


# ----------------------------------------------------------------------------------------------------
# Rendering


def canonical_type(declared: str) -> str:
    """The declared (or tables.json) type in the renderer's vocabulary (module docstring)."""
    t = (declared or "").lower()
    if "char" in t or t == "" or "text" in t or "var" in t:
        return "TEXT"
    if any(k in t for k in ("int", "numeric", "decimal", "number", "id", "real", "double", "float")):
        return "NUMBER"
    if "date" in t or "time" in t or "year" in t:
        return "TIME"
    if "bool" in t or "bit" in t:
        return "BOOLEAN"
    return "OTHER"


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (~3.5 characters per token for SQL-ish text with BPE tokenizers)."""
    return int(len(text) / 3.5) + 1


# compact: sample values only where a question's words meet a stored literal (texts, dates), two of them,
# 24 characters at most -- ids and measures as samples were most of the compact text and name nothing a
# question says (docs/BENCHMARKS.md, "The student's prompt").
_COMPACT_SAMPLED = ("TEXT", "TIME")
_COMPACT_SAMPLES = 2


def _fmt_value(v, width: int = 40) -> str:
    if isinstance(v, str):
        v = " ".join(v.split())
        v = v if len(v) <= width else v[:width - 3] + "..."
        return "'" + v.replace("'", "''") + "'"
    return str(v)


def _ident(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else _q(name)


def _fks(t: Table) -> list[ForeignKey]:
    return sorted(t.foreign_keys, key=lambda f: (f.column.lower(), f.ref_table.lower(), f.ref_column.lower()))


def render_table(t: Table, with_samples: bool = True, fmt: str = "sql") -> str:
    """One table: a CREATE TABLE statement (``sql``) or one line (``compact``)."""
    pk = [c.name for c in t.columns if c.primary_key]
    if fmt == "compact":
        fk_of: dict[str, list[str]] = {}
        for fk in _fks(t):
            fk_of.setdefault(fk.column.lower(), []).append(f"{_ident(fk.ref_table)}.{_ident(fk.ref_column)}")
        parts = []
        for c in t.columns:
            s = f"{_ident(c.name)} {canonical_type(c.type)}" + (" PK" if c.primary_key else "")
            s += "".join(f" FK {ref}" for ref in fk_of.get(c.name.lower(), []))
            if with_samples and c.samples and canonical_type(c.type) in _COMPACT_SAMPLED:
                s += " [e.g. " + ", ".join(_fmt_value(v, 24) for v in c.samples[:_COMPACT_SAMPLES]) + "]"
            parts.append(s)
        return f"{_ident(t.name)}({', '.join(parts)})"
    lines = []
    for c in t.columns:
        line = f"  {_ident(c.name)} {canonical_type(c.type)}"
        if len(pk) == 1 and c.primary_key:
            line += " PRIMARY KEY"
        extra = []
        if with_samples and c.samples:
            extra.append("e.g. " + ", ".join(_fmt_value(v) for v in c.samples))
        if c.description:
            extra.append(c.description)
        lines.append((line, " -- " + "; ".join(extra) if extra else ""))
    if len(pk) > 1:
        lines.append((f"  PRIMARY KEY ({', '.join(_ident(p) for p in pk)})", ""))
    for fk in _fks(t):
        lines.append((f"  FOREIGN KEY ({_ident(fk.column)}) REFERENCES {_ident(fk.ref_table)}"
                      f"({_ident(fk.ref_column)})", ""))
    body = [code + ("," if i < len(lines) - 1 else "") + comment for i, (code, comment) in enumerate(lines)]
    return f"CREATE TABLE {_ident(t.name)} (\n" + "\n".join(body) + "\n);"


def _relevance(t: Table, words: set[str]) -> float:
    def toks(s: str) -> set[str]:
        return {w for w in re.split(r"[^a-z0-9]+", s.lower()) if len(w) > 2}
    score = 3.0 * len(toks(t.name) & words)
    for c in t.columns:
        score += len(toks(c.name) & words)
    return score


def render_schema(schema: Schema, max_tokens: int = 2048, question: str | None = None,
                  count_tokens: Callable[[str], int] = estimate_tokens, *, fmt: str = "sql",
                  values: bool = True) -> str:
    """Prompt-ready schema text within ``max_tokens`` (module docstring: formats, budget)."""
    if fmt not in FORMATS:
        raise LearnatError(f"unknown schema format {fmt!r} (sql or compact)", field="schema_format")
    sep = "\n\n" if fmt == "sql" else "\n"
    if values:
        full = sep.join(render_table(t, True, fmt) for t in schema.tables)
        if count_tokens(full) <= max_tokens:
            return full
    bare = [render_table(t, False, fmt) for t in schema.tables]
    if count_tokens(sep.join(bare)) <= max_tokens:
        return sep.join(bare)
    words = {w for w in re.split(r"[^a-z0-9]+", (question or "").lower()) if len(w) > 2}
    order = sorted(range(len(schema.tables)), key=lambda i: -_relevance(schema.tables[i], words))
    kept: list[int] = []
    used = 0
    for i in order:
        cost = count_tokens(bare[i]) + 1
        if used + cost > max_tokens * 0.9:
            continue
        kept.append(i)
        used += cost
    rest = [schema.tables[i].name for i in range(len(schema.tables)) if i not in kept]
    text = sep.join(bare[i] for i in sorted(kept))
    if rest:
        text += sep + "-- Other tables (columns omitted): " + ", ".join(rest)
    return text


_CREATE_RE = re.compile(r"^CREATE TABLE (\"(?:[^\"]|\"\")+\"|\S+) \(", re.M)
_COMPACT_RE = re.compile(r"^(\"(?:[^\"]|\"\")+\"|[A-Za-z_][A-Za-z0-9_]*)\(", re.M)
_OTHER_RE = re.compile(r"^-- Other tables \(columns omitted\): (.*)$", re.M)


def table_names_in(text: str) -> list[str]:
    """The table names a rendered schema text shows (either format, omitted tables included): what the
    fast-path rule reads, so that training rows and ``ask`` route a question alike from the same text."""
    names = [m.group(1) for m in _CREATE_RE.finditer(text)]
    names = names or [m.group(1) for m in _COMPACT_RE.finditer(text)]
    for m in _OTHER_RE.finditer(text):
        names += [n.strip() for n in m.group(1).split(",") if n.strip()]
    return [n[1:-1].replace('""', '"') if n.startswith('"') else n for n in names]
