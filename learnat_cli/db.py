"""Databases: resolving ``--db`` and the one read-only executor (schemas: :mod:`learnat_cli.schema`).

Inputs: a database file (or a ``db_id`` under a root) and SQL text; outputs: columns and rows, or a
:class:`QueryError`. Used by ``ask`` (paper sec. 3.4), ``decompose``'s execution check, ``score`` and ``eval``
(sec. 4) alike, so every stage has the same limits and the same messages.

Safety of generated SQL (a model's output is untrusted):
1. the file is opened read-only through SQLite's URI (``mode=ro``), built from the percent-escaped absolute
   path (``#``, ``?``, ``%`` and spaces in a path can neither drop ``mode=ro`` nor open another file); a
   WAL-mode file without a live ``-wal`` is opened ``immutable=1`` so that reading creates no
   ``-wal``/``-shm``;
2. an authorizer denies every action but reading (no INSERT/UPDATE/DELETE/DDL/ATTACH/PRAGMA writes/functions
   that load extensions), so a write fails at *prepare* time with :class:`WriteRefused`;
3. a progress handler aborts a statement past its time limit (:class:`QueryTimeout`, default 30 s);
4. a result is bounded in bytes (:class:`ResultTooLarge`, default 256 MiB, ``--max-bytes``) and optionally in
   rows (``truncated`` says so).
The database file is never modified: the tests check it stays byte-identical.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learnat_cli.errors import LearnatError
from learnat_cli.schema import (  # noqa: F401  (re-exports: moved
    Column,
    ForeignKey,
    Schema,
    Table,
    load_schema,
    render_schema,  # to learnat_cli.schema)
    schema_from_tables_json,
)

DEFAULT_TIMEOUT_S = 30.0  # BIRD's official evaluator (shared/README.md)
DEFAULT_MAX_ROWS = 10_000
# Result size limit per query (text and BLOB bytes + 8 per number; :func:`value_bytes`): far above any
# Spider or BIRD gold result, far below a machine's memory. ``--max-bytes`` changes it.
DEFAULT_MAX_BYTES = 256 * 2**20


class QueryError(LearnatError):
    """A query failed to run (SQLite error, refusal or timeout)."""


class QueryTimeout(QueryError):
    pass


class WriteRefused(QueryError):
    pass


class ResultTooLarge(QueryError):
    """The result passed ``max_bytes``: an error for that query (eval counts the item wrong, as a timeout)."""


# ------------------------------------------------------------------------------------------------------------
# Resolution


def resolve_db(db: str | None = None, *, db_id: str | None = None, db_root: str | None = None,
               db_path: str | None = None) -> Path:
    """Find the SQLite file. Order: ``db_path`` (a row's explicit file), ``db`` (a ``.sqlite`` file, or
    ``ROOT/db_id`` / ``db_id`` under ``db_root``), then ``db_id`` under ``db_root`` (default
    ``$LEARNAT_DB_ROOT``). Under a root, ``ROOT/<db_id>/<db_id>.sqlite`` (Spider/BIRD layout) and
    ``ROOT/<db_id>.sqlite`` are tried."""
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
    hint = "" if root else "; set --db-root or LEARNAT_DB_ROOT"
    raise LearnatError(f"database not found: tried {', '.join(dict.fromkeys(tried))} (expected "
                       f"ROOT/<db_id>/<db_id>.sqlite: Spider's database/<db>/<db>.sqlite, BIRD's "
                       f"dev_databases/<db>/<db>.sqlite{hint})", field="db")


def _under_root(rel: Path, root: str | None, tried: list[str]) -> Path | None:
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


# ------------------------------------------------------------------------------------------------------------
# Read-only connections


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sqlite_uri(path: str | Path, *, immutable: bool = False) -> str:
    """``file:`` URI of an absolute path, percent-escaped (RFC 3986, so ``#``, ``?``, ``%``, spaces and
    non-ASCII names reach SQLite intact), read-only (``mode=ro``); ``immutable=1`` on request."""
    from urllib.parse import quote

    abs_path = Path(path).expanduser().resolve().as_posix()
    return f"file:{quote(abs_path, safe='/')}?mode=ro" + ("&immutable=1" if immutable else "")


def _is_wal(p: Path) -> bool:
    """The header says WAL (bytes 18-19 = 2): a reader would create ``-wal``/``-shm`` beside the file."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(20)
    except OSError:
        return False
    return len(head) == 20 and head[:16] == b"SQLite format 3\x00" and head[18] == 2


def connect_ro(path: str | Path, timeout_s: float | None = None) -> sqlite3.Connection:
    """A read-only connection with the write-denying authorizer installed.

    A WAL-mode file whose ``-wal`` is absent (fully checkpointed: no writer is active) is opened with
    ``immutable=1``: SQLite then reads the main file only and creates no ``-wal``/``-shm`` files (plain
    ``mode=ro`` leaves both behind, measured), so reading works on a read-only folder and leaves it untouched.
    With a live ``-wal`` the normal read-only mode is used (it holds committed data the main file lacks)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise LearnatError("database file not found", file=str(p))
    wal = _is_wal(p)
    immutable = wal and not Path(str(p) + "-wal").exists()
    try:
        conn = sqlite3.connect(sqlite_uri(p, immutable=immutable), uri=True, check_same_thread=False)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the file now: errors here
    except sqlite3.Error as e:
        if wal and not immutable:  # e.g. a -wal but no -shm on a read-only folder
            try:
                conn = sqlite3.connect(sqlite_uri(p, immutable=True), uri=True, check_same_thread=False)
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.Error as e2:
                raise LearnatError(f"cannot open database: {e2}", file=str(p)) from None
        else:
            msg = "not a SQLite database" if "not a database" in str(e) else f"cannot open database: {e}"
            raise LearnatError(msg, file=str(p)) from None
    conn.text_factory = _text_replace
    conn.set_authorizer(_authorizer)
    return conn


def _text_replace(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


def _text_ignore(b: bytes) -> str:  # the Spider test-suite evaluator's text_factory
    return b.decode("utf-8", errors="ignore")


_READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                 sqlite3.SQLITE_RECURSIVE}
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


# ------------------------------------------------------------------------------------------------------------
# Execution


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple]
    truncated: bool = False
    elapsed_s: float = 0.0


_WRITE_RE = re.compile(
    r"^\s*(insert|update|delete|drop|create|alter|replace|attach|detach|vacuum|reindex|pragma)\b", re.I)


def value_bytes(v: Any) -> int:
    """The size a value counts against ``max_bytes``: text and BLOB length, 8 for numbers and NULL."""
    if isinstance(v, (str, bytes)):
        return len(v)
    return 8


def json_value(v: Any) -> Any:
    """A SQLite value as JSON: BLOBs as the SQL literal text ``X'0A1B'`` (upper-case hex), infinite floats as
    ``"inf"``/``"-inf"``; text, integers, finite floats and NULL as themselves."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "X'" + bytes(v).hex().upper() + "'"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def run_query(conn: sqlite3.Connection, sql: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
              max_rows: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES
              ) -> tuple[list[str], list[tuple], bool]:
    """The one executor: run ``sql`` on a connection from :func:`connect_ro`; returns (columns, rows,
    truncated).

    Limits: ``timeout_s`` (a progress handler aborts the statement: :class:`QueryTimeout`); ``max_bytes`` over
    the whole result (:func:`value_bytes`; rows are fetched one at a time and the query stops as soon as the
    total passes the limit, so no more than about the limit is ever held; SQLite's own length limit is set to
    it too, so one huge value or row fails inside SQLite: :class:`ResultTooLarge`); ``max_rows`` (the rest is
    dropped and ``truncated`` is true; ``None`` = all rows). Ctrl-C during the statement raises
    KeyboardInterrupt (it is not mistaken for a timeout)."""
    if not isinstance(sql, str):
        raise QueryError("the SQL is not a string")
    deadline = time.monotonic() + timeout_s
    state = {"timeout": False, "interrupt": False}

    def _progress() -> int:
        try:
            if time.monotonic() > deadline:
                state["timeout"] = True
                return 1
            return 0
        except KeyboardInterrupt:
            state["interrupt"] = True
            return 1

    conn.set_progress_handler(_progress, 1000)
    setlimit = getattr(conn, "setlimit", None)  # Python 3.11+
    length_id = getattr(sqlite3, "SQLITE_LIMIT_LENGTH", 0)
    old_limit = setlimit(length_id, max(1, min(max_bytes, 2**31 - 1))) if setlimit else 0
    rows: list[tuple] = []
    size = 0
    truncated = False
    try:
        cur = conn.execute(sql)
        cols = [d[0] for d in (cur.description or [])]
        for r in cur:  # one row at a time: the byte count is checked before the next row is built
            size += 16 + 8 * len(r)  # value_bytes(), inlined: this loop runs for every row of every query
            for v in r:
                if type(v) is str or type(v) is bytes:
                    size += len(v) - 8
            if size > max_bytes:
                raise ResultTooLarge(f"result larger than the limit of {max_bytes:,} bytes (--max-bytes)")
            if max_rows is not None and len(rows) >= max_rows:
                truncated = True
                break
            rows.append(tuple(r))
    except sqlite3.DatabaseError as e:
        msg = str(e)
        if state["interrupt"] or ("interrupted" in msg and not state["timeout"]):
            # interrupted before the deadline: Ctrl-C arrived inside the progress handler (the sqlite3 module
            # swallows the KeyboardInterrupt there and aborts the statement)
            raise KeyboardInterrupt from None
        if state["timeout"] or "interrupted" in msg:
            raise QueryTimeout(f"query timed out after {timeout_s:g} s (--timeout)") from None
        if "too big" in msg:
            raise ResultTooLarge(
                f"a value or row is larger than the limit of {max_bytes:,} bytes (--max-bytes)") from None
        if "not authorized" in msg or "prohibited" in msg or "readonly" in msg or _WRITE_RE.match(sql or ""):
            raise WriteRefused(f"refused: learnat runs generated SQL read-only ({msg})") from None
        raise QueryError(f"SQLite error: {msg}") from None
    except (sqlite3.Warning, ValueError, OverflowError) as e:
        raise QueryError(f"SQLite error: {e}") from None
    except MemoryError:
        raise ResultTooLarge("out of memory while fetching the result (lower --max-bytes)") from None
    finally:
        conn.set_progress_handler(None, 0)
        if setlimit:
            setlimit(length_id, old_limit)
    if state["interrupt"]:
        raise KeyboardInterrupt
    return cols, rows, truncated


def execute(db_path: str | Path, sql: str, timeout_s: float = DEFAULT_TIMEOUT_S,
            max_rows: int | None = DEFAULT_MAX_ROWS, max_bytes: int = DEFAULT_MAX_BYTES) -> QueryResult:
    """Open the file read-only, run one query with :func:`run_query`'s limits, close."""
    conn = connect_ro(db_path)
    t0 = time.perf_counter()
    try:
        cols, rows, truncated = run_query(conn, sql, timeout_s=timeout_s, max_rows=max_rows,
                                          max_bytes=max_bytes)
    finally:
        conn.close()
    return QueryResult(columns=cols, rows=rows, truncated=truncated, elapsed_s=time.perf_counter() - t0)


def resolve_row_db(row: dict[str, Any], db: str | None = None, db_root: str | None = None) -> Path:
    """The database of one row (``score``, ``eval``): ``--db`` for every row; else ``db_id`` under
    ``--db-root`` (the override, given explicitly); else the row's ``db_path`` (``ask`` writes the file it
    used); else ``db_id`` under ``$LEARNAT_DB_ROOT``."""
    db_id = row.get("db_id") if isinstance(row.get("db_id"), str) else None
    db_path = row.get("db_path") if isinstance(row.get("db_path"), str) else None
    if db:
        return resolve_db(db, db_root=db_root)
    if db_root and db_id:
        try:
            return resolve_db(db_id=db_id, db_root=db_root)
        except LearnatError:
            if not db_path:
                raise
    return resolve_db(db_id=db_id, db_root=db_root, db_path=db_path)
