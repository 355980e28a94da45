"""Databases: resolving ``--db``, schema extraction and prompt rendering, and safe read-only execution.

Safety of generated SQL (a model's output is untrusted):
1. the file is opened read-only through SQLite's URI (``mode=ro``), so the OS-level handle cannot write;
2. an authorizer denies every action but reading (no INSERT/UPDATE/DELETE/DDL/ATTACH/PRAGMA writes/functions
   that load extensions), so a write fails at *prepare* time with :class:`WriteRefused`;
3. a progress handler aborts a statement past its time limit (:class:`QueryTimeout`);
4. at most ``max_rows`` rows are fetched (``truncated`` says so).
The database file is never modified: the tests check it stays byte-identical.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional

from learnat_cli.errors import LearnatError

DEFAULT_TIMEOUT_S = 30.0  # BIRD's official evaluator (shared/README.md)
DEFAULT_MAX_ROWS = 10_000


class QueryError(LearnatError):
    """A query failed to run (SQLite error, refusal or timeout)."""


class QueryTimeout(QueryError):
    pass


class WriteRefused(QueryError):
    pass


# ---------------------------------------------------------------------------------------------------------------
# Resolution


def resolve_db(db: Optional[str] = None, *, db_id: Optional[str] = None, db_root: Optional[str] = None,
               db_path: Optional[str] = None) -> Path:
    """Find the SQLite file. Order: ``db_path`` (a row's explicit file), ``db`` (a ``.sqlite`` file, or
    ``ROOT/db_id`` / ``db_id`` under ``db_root``), then ``db_id`` under ``db_root`` (default ``$LEARNAT_DB_ROOT``).
    Under a root, ``ROOT/<db_id>/<db_id>.sqlite`` (Spider/BIRD layout) and ``ROOT/<db_id>.sqlite`` are tried."""
    root = db_root or os.environ.get("LEARNAT_DB_ROOT")
    tried: list[str] = []
    for cand in (db_path, db):
        if not cand:
            continue
        p = Path(cand).expanduser()
        if p.is_file():
            return p
        tried.append(str(p))
        # `bird/card_games`: a db_id under a root (the root's own folder name may be repeated)
        found = _under_root(p, root, tried)
        if found:
            return found
    if db_id:
        found = _under_root(Path(db_id), root, tried)
        if found:
            return found
    if not tried:
        raise LearnatError("no database given: pass --db FILE or --db-root DIR with rows that have db_id")
    hint = "" if root else " (set --db-root or LEARNAT_DB_ROOT for ROOT/db_id names)"
    raise LearnatError(f"database not found: tried {', '.join(dict.fromkeys(tried))}{hint}", field="db")


def _under_root(rel: Path, root: Optional[str], tried: list[str]) -> Optional[Path]:
    bases = [Path(".")] + ([Path(root).expanduser()] if root else [])
    name = rel.name
    for base in bases:
        for folder in {base / rel, base / rel.parent / name}:
            for f in (folder / f"{name}.sqlite", folder.with_suffix(".sqlite"), folder / f"{name}.db"):
                if f.is_file():
                    return f
                tried.append(str(f))
        if root and len(rel.parts) > 1:
            # `bird/card_games` with root `.../bird/dev_databases`: use the last part only
            for f in (base / name / f"{name}.sqlite", base / f"{name}.sqlite"):
                if f.is_file():
                    return f
    return None


# ---------------------------------------------------------------------------------------------------------------
# Schema


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

    def table(self, name: str) -> Optional[Table]:
        low = name.lower()
        return next((t for t in self.tables if t.name.lower() == low), None)

    def names(self) -> tuple[set[str], dict[str, set[str]]]:
        """(table names, table -> column names), lower-cased, for validation."""
        tabs = {t.name.lower() for t in self.tables}
        cols = {t.name.lower(): {c.name.lower() for c in t.columns} for t in self.tables}
        return tabs, cols


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def connect_ro(path: str | Path, timeout_s: Optional[float] = None) -> sqlite3.Connection:
    """A read-only connection with the write-denying authorizer installed."""
    p = Path(path)
    if not p.is_file():
        raise LearnatError("database file not found", file=str(p))
    uri = f"file:{p.resolve().as_posix()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    except sqlite3.Error as e:
        raise LearnatError(f"cannot open database: {e}", file=str(p)) from None
    conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
    conn.set_authorizer(_authorizer)
    return conn


_READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_SAFE_PRAGMAS = {"table_info", "foreign_key_list", "index_list", "index_info", "table_xinfo", "database_list"}


def _authorizer(action, arg1, arg2, dbname, source):
    if action in _READ_ACTIONS:
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in {"load_extension", "readfile",
                                                                          "writefile", "edit"}:
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _SAFE_PRAGMAS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_TRANSACTION:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


@lru_cache(maxsize=256)
def _load_schema_cached(path: str, mtime: float, n_samples: int) -> Schema:
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
    """Tables, columns (types, primary keys), foreign keys and up to ``n_samples`` distinct values per column."""
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
        tables[ti].columns.append(Column(name=cname, type=(types[i] if i < len(types) else "").upper(),
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
    except json.JSONDecodeError as e:
        raise LearnatError(f"invalid JSON: {e.msg}", file=path, line=e.lineno) from None
    return {d["db_id"]: d for d in data}


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (~3.5 characters per token for SQL-ish text with BPE tokenizers)."""
    return int(len(text) / 3.5) + 1


def _fmt_value(v) -> str:
    if isinstance(v, str):
        v = v if len(v) <= 40 else v[:37] + "..."
        return "'" + v.replace("'", "''") + "'"
    return str(v)


def render_table(t: Table, with_samples: bool = True) -> str:
    lines = []
    pk = [c.name for c in t.columns if c.primary_key]
    for c in t.columns:
        line = f"  {_q(c.name) if not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*', c.name) else c.name}"
        if c.type:
            line += f" {c.type}"
        if len(pk) == 1 and c.primary_key:
            line += " PRIMARY KEY"
        extra = []
        if with_samples and c.samples:
            extra.append("e.g. " + ", ".join(_fmt_value(v) for v in c.samples))
        if c.description:
            extra.append(c.description)
        lines.append((line, " -- " + "; ".join(extra) if extra else ""))
    if len(pk) > 1:
        lines.append((f"  PRIMARY KEY ({', '.join(pk)})", ""))
    for fk in t.foreign_keys:
        lines.append((f"  FOREIGN KEY ({fk.column}) REFERENCES {fk.ref_table}({fk.ref_column})", ""))
    body = []
    for i, (code, comment) in enumerate(lines):
        sep = "," if i < len(lines) - 1 else ""
        body.append(code + sep + comment)
    name = t.name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", t.name) else _q(t.name)
    return f"CREATE TABLE {name} (\n" + "\n".join(body) + "\n);"


def _relevance(t: Table, words: set[str]) -> float:
    def toks(s: str) -> set[str]:
        return {w for w in re.split(r"[^a-z0-9]+", s.lower()) if len(w) > 2}
    score = 3.0 * len(toks(t.name) & words)
    for c in t.columns:
        score += len(toks(c.name) & words)
    return score


def render_schema(schema: Schema, max_tokens: int = 2048, question: Optional[str] = None,
                  count_tokens: Callable[[str], int] = estimate_tokens) -> str:
    """Prompt-ready CREATE statements within ``max_tokens``. Whole tables only: when over budget, sample values
    go first, then tables are kept in order of relevance to ``question`` (word overlap with table/column names,
    tables referenced by kept tables' foreign keys next) and the rest are listed by name only."""
    full = "\n\n".join(render_table(t) for t in schema.tables)
    if count_tokens(full) <= max_tokens:
        return full
    bare = [render_table(t, with_samples=False) for t in schema.tables]
    if count_tokens("\n\n".join(bare)) <= max_tokens:
        return "\n\n".join(bare)
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
    text = "\n\n".join(bare[i] for i in sorted(kept))
    if rest:
        text += "\n\n-- Other tables (columns omitted): " + ", ".join(rest)
    return text


# ---------------------------------------------------------------------------------------------------------------
# Execution


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple]
    truncated: bool = False
    elapsed_s: float = 0.0


_WRITE_RE = re.compile(r"^\s*(insert|update|delete|drop|create|alter|replace|attach|detach|vacuum|reindex|pragma)\b",
                       re.I)


def execute(db_path: str | Path, sql: str, timeout_s: float = DEFAULT_TIMEOUT_S,
            max_rows: int = DEFAULT_MAX_ROWS) -> QueryResult:
    """Run one query read-only under a time limit; see the module docstring."""
    conn = connect_ro(db_path)
    deadline = time.monotonic() + timeout_s
    timed_out = False

    def _progress():
        nonlocal timed_out
        if time.monotonic() > deadline:
            timed_out = True
            return 1
        return 0

    conn.set_progress_handler(_progress, 1000)
    t0 = time.perf_counter()
    try:
        cur = conn.execute(sql)
        rows = cur.fetchmany(max_rows + 1)
        cols = [d[0] for d in (cur.description or [])]
    except sqlite3.DatabaseError as e:
        msg = str(e)
        if timed_out or "interrupted" in msg:
            raise QueryTimeout(f"query timed out after {timeout_s:g} s") from None
        if "not authorized" in msg or "prohibited" in msg or "readonly" in msg or _WRITE_RE.match(sql or ""):
            raise WriteRefused(f"refused: learnat runs generated SQL read-only ({msg})") from None
        raise QueryError(f"SQLite error: {msg}") from None
    except (sqlite3.Warning, ValueError) as e:
        raise QueryError(f"SQLite error: {e}") from None
    finally:
        conn.close()
    truncated = len(rows) > max_rows
    return QueryResult(columns=cols, rows=[tuple(r) for r in rows[:max_rows]], truncated=truncated,
                       elapsed_s=time.perf_counter() - t0)
