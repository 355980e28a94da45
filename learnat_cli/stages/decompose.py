"""``learnat decompose``: decomposition synthesis with MCTS and AST pruning (LearNAT sec. 3.2).

Stage shape (docs/CONTRACTS.md): ``run(examples, config) -> (records, report)``.

- Input records: :class:`~learnat_cli.records.Example` with a gold SQL (learnat JSONL, Spider or BIRD rows;
  :func:`select_examples` reads a file with ``--shard`` and ``--limit``).
- Output records: one :class:`~learnat_cli.records.TreeRecord` per example, **in input order** — the best
  trajectory (``steps`` with sub-question, SQL, status, reward), ``reached_gold``, ``reward``, the teacher
  calls/tokens spent on this example, ``schema_text`` and every node of the search tree (``nodes``:
  sub-question, SQL, status, visits, value, reward). An example that cannot be searched (no database, a file
  that is not SQLite, a gold that does not parse, a teacher answering garbage) gets a record with ``error``
  set, no steps, and the run goes on; the report counts it.
- Report: :class:`DecomposeReport` (examples, reached gold, failed, teacher calls and tokens), filled as the
  records are consumed.

Schemas come from the database (``db``/``db_root``/the row's ``db_path``) or from ``tables`` (Spider/BIRD
tables.json); either way the schema's columns are given to :class:`~learnat_cli.sql.GoldAst`, so a step
projecting a column that does not exist is invalid. Execution matches use :mod:`learnat_cli.metrics`.
Determinism: the same input, config and teacher seed give the same records in any process, at any ``workers``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from learnat_cli.errors import LearnatError
from learnat_cli.records import Example, Step, TreeNode, TreeRecord
from learnat_cli.sql import GoldAst, SqlParseError, check_dialect
from learnat_cli.synthesis.mcts import MctsConfig, Search
from learnat_cli.synthesis.protocol import State, Teacher, TeacherFatal, example_usage


@dataclass
class DecomposeConfig:
    mcts: MctsConfig = field(default_factory=MctsConfig)
    db: str | None = None
    db_root: str | None = None
    tables: str | None = None  # Spider/BIRD tables.json for DB-less schemas
    schema_tokens: int = 1500
    schema_format: str = "sql"  # the student's schema rendering (ask --schema-format): sql or compact
    dialect: str = "sqlite"
    limit: int | None = None  # examples in total (finished ones from an earlier run included)
    shard: tuple[int, int] = (0, 1)
    workers: int = 4  # examples searched concurrently
    exec_terminal: bool = True  # with a database, a step whose result equals the gold's is terminal
    unalias: bool = False  # search the gold with table aliases replaced by table names (sql.unalias)
    teacher: str | Teacher = "ast"  # a spec for make_teacher, or a Teacher
    teacher_options: dict[str, Any] = field(default_factory=dict)  # make_teacher keyword arguments

    def check(self) -> None:
        """Options that no example could work with: a one-line error before anything runs."""
        check_dialect(self.dialect)
        from learnat_cli.schema import FORMATS

        if self.schema_format not in FORMATS:
            raise LearnatError(f"--schema-format must be one of {', '.join(FORMATS)}", field="schema_format")
        if self.limit is not None and self.limit < 1:
            raise LearnatError(f"--limit must be at least 1, got {self.limit}", field="limit")
        if self.workers < 1:
            raise LearnatError(f"--workers must be at least 1, got {self.workers}", field="workers")
        i, n = self.shard
        if not (n >= 1 and 0 <= i < n):
            raise LearnatError(f"--shard must be I/N with 0 <= I < N, got {i}/{n}", field="shard")
        if self.tables:
            from learnat_cli.schema import _tables_json

            _tables_json(str(self.tables))  # missing or not JSON: one line naming the file


@dataclass
class DecomposeReport:
    examples: int = 0
    reached_gold: int = 0
    failed: int = 0
    teacher_calls: int = 0
    teacher_tokens: int = 0

    def add(self, rec: TreeRecord) -> None:
        self.examples += 1
        self.reached_gold += int(rec.reached_gold)
        self.failed += int(bool(getattr(rec, "error", None)))
        self.teacher_calls += rec.teacher_calls
        self.teacher_tokens += rec.teacher_tokens

    def summary(self) -> str:
        n = self.examples
        if not n:
            return "decomposed 0 examples"
        fail = f", {self.failed} failed (see their 'error')" if self.failed else ""
        return (f"decomposed {n} example(s): {self.reached_gold} reached the gold "
                f"({100 * self.reached_gold / n:.1f}%){fail}, "
                f"{self.teacher_calls / n:.2f} teacher calls each")


Columns = Optional[dict[str, list[str]]]  # noqa: UP045 (a run-time value)


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard I/N`` (checked by :meth:`DecomposeConfig.check`)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise LearnatError(f"--shard must be I/N with 0 <= I < N, got {text!r}", field="shard") from None
    return i, n


def schema_for(ex: Example, cfg: DecomposeConfig) -> tuple[str, str | None, Columns]:
    """(schema text, database path or None, table -> column names or None)."""
    from learnat_cli.db import resolve_db
    from learnat_cli.schema import load_schema, render_schema, schema_from_tables_json

    schema = None
    path = None
    if cfg.db or ex.db_path or (cfg.db_root and ex.db_id):
        try:
            path = resolve_db(cfg.db, db_id=ex.db_id, db_root=cfg.db_root, db_path=ex.db_path)
            schema = _load(load_schema, path)
        except LearnatError:
            if not (cfg.tables and ex.db_id):
                raise
            path = None
    if schema is None and cfg.tables and ex.db_id:
        schema = schema_from_tables_json(cfg.tables, ex.db_id)
    if schema is None:
        return "", None, None
    columns = {t.name: [c.name for c in t.columns] for t in schema.tables}
    text = render_schema(schema, cfg.schema_tokens, ex.question, fmt=cfg.schema_format)
    return text, (str(path) if path else None), columns


def _load(load_schema: Callable, path) -> Any:
    import sqlite3

    try:
        return load_schema(path)
    except sqlite3.Error as e:
        raise LearnatError(f"not a readable SQLite database ({e})", file=str(path)) from None


def select_examples(path: str, cfg: DecomposeConfig, skip: set[str]) -> Iterator[Example]:
    """The examples of this shard, up to ``cfg.limit`` in total, leaving out those in ``skip`` (finished in an
    earlier run: they count towards the limit, so ``--limit N`` on a rerun still means N in all)."""
    from learnat_cli.datasets import load_examples

    i, n = cfg.shard
    count = 0
    for pos, ex in enumerate(load_examples(path, require_gold=True)):
        if pos % n != i:
            continue
        if cfg.limit is not None and count >= cfg.limit:
            return
        count += 1
        if ex.id not in skip:
            yield unaliased(ex) if cfg.unalias else ex


def unaliased(ex: Example) -> Example:
    """The example with its gold SQL alias-free (:func:`learnat_cli.sql.unalias`), the gold as written kept
    in ``gold_as_written``; unchanged when the gold has no alias to remove or does not parse (the search then
    reports the parse error as usual)."""
    from learnat_cli.sql import unalias

    new = unalias(ex.gold or "")
    if new is None:
        return ex
    data = ex.model_dump()
    data.update(gold=new, gold_as_written=ex.gold)
    return Example.model_validate(data)


def resume(output: str | None, trees: str | None = None) -> set[str]:
    """Ids finished in an earlier run of ``-o output`` (and ``--trees trees``). The stage writes each
    example's tree record before its trajectory, so a crash between the two leaves a tree without a
    trajectory: such rows (and any other id found in only one of the two files) are removed here, so the pair
    never diverges and the rerun redoes those examples. A torn last line is cut; a corrupt line elsewhere
    stops with FILE:LINE."""
    from learnat_cli.jsonl import done_ids

    files = [f for f in (output, trees) if f not in (None, "-")]
    if not files:
        return set()
    ids = [done_ids(f) for f in files]
    common = set.intersection(*ids)
    for f, have in zip(files, ids, strict=True):
        if have != common:
            _keep_only(Path(f), common)
    return common


def _keep_only(path: Path, keep: set[str]) -> None:
    import json
    import os

    kept, seen = [], set()
    for raw in path.read_bytes().splitlines(keepends=True):
        try:
            rid = str(json.loads(raw).get("id"))
        except (ValueError, AttributeError):
            continue
        if rid in keep and rid not in seen:
            seen.add(rid)
            kept.append(raw if raw.endswith(b"\n") else raw + b"\n")
    tmp = path.with_name(path.name + ".repair")
    tmp.write_bytes(b"".join(kept))
    os.replace(tmp, path)


def _failure(ex: Example, teacher: Teacher, msg: str) -> TreeRecord:
    data = ex.model_dump()
    data.update(steps=[], reached_gold=False, reward=0.0, teacher=teacher.name, teacher_calls=0,
                teacher_tokens=0, nodes=[], error=msg)
    return TreeRecord.model_validate(data)


async def decompose_one(ex: Example, teacher: Teacher, cfg: DecomposeConfig) -> TreeRecord:
    """One example's search; a failure of this example alone becomes a record with ``error``."""
    with example_usage() as usage:
        try:
            return await _search(ex, teacher, cfg, usage)
        except TeacherFatal:
            raise
        except LearnatError as e:
            return _failure(ex, teacher, str(e))
        except (RecursionError, MemoryError) as e:
            return _failure(ex, teacher, f"gold too large to search ({type(e).__name__})")


async def _search(ex: Example, teacher: Teacher, cfg: DecomposeConfig, usage) -> TreeRecord:
    schema, db_path, columns = schema_for(ex, cfg)
    try:
        gold = GoldAst(ex.gold or "", cfg.dialect, columns=columns)
    except SqlParseError as e:
        raise LearnatError(f"gold {e.message}", field="gold") from None

    async def propose(steps, k):
        return await teacher.propose(State(question=ex.question, schema=schema, gold=ex.gold or "",
                                           evidence=ex.evidence, steps=steps), k)

    is_gold = None
    if db_path and cfg.exec_terminal:
        from learnat_cli.metrics import exec_match

        def is_gold(sql: str) -> bool:
            if gold.matches(sql):
                return True
            if gold.similarity(sql) < 0.5:
                return False
            ok, _ = exec_match(db_path, sql, gold.gold, "bird", 10.0)
            return ok

    search = await Search(gold, propose, cfg.mcts, is_gold).run()
    path, reached = search.best_path()

    def step(n) -> Step:
        return Step(question=n.question, sql=n.sql, status=n.status, reward=round(n.reward, 6))

    nodes = [TreeNode(node_id=n.id, parent=n.parent.id if n.parent else None, depth=n.depth,
                      step=None if n.parent is None else step(n), status=n.status, visits=n.visits,
                      value=round(n.value, 6), reward=round(n.reward, 6), terminal=n.terminal)
             for n in search.nodes]
    data = ex.model_dump()
    data.update(steps=[step(n) for n in path], reached_gold=reached,
                reward=round(path[-1].reward, 6) if path else 0.0, teacher=teacher.name,
                teacher_calls=usage.calls, teacher_tokens=usage.tokens, nodes=nodes, schema_text=schema,
                expansions=search.expansions)
    return TreeRecord.model_validate(data)


async def search_all(examples: Iterable[Example], teacher: Teacher, cfg: DecomposeConfig
                     ) -> AsyncIterator[TreeRecord]:
    """Search every example, ``cfg.workers`` at a time, yielding the records in input order (a bounded window
    of examples runs ahead of the oldest unfinished one)."""
    sem = asyncio.Semaphore(max(1, cfg.workers))
    window = max(1, cfg.workers) * 2

    async def one(ex: Example) -> TreeRecord:
        async with sem:
            try:
                return await decompose_one(ex, teacher, cfg)
            except LearnatError as e:
                raise type(e)(f"example {ex.id}: {e.message}", file=e.file, line=e.line,
                              field=e.field) from None

    it = iter(examples)
    pending: dict[int, asyncio.Task] = {}
    results: dict[int, TreeRecord] = {}
    submitted = next_pos = 0
    exhausted = False
    try:
        while True:
            while not exhausted and submitted - next_pos < window:
                ex = next(it, None)
                if ex is None:
                    exhausted = True
                    break
                pending[submitted] = asyncio.ensure_future(one(ex))
                submitted += 1
            if next_pos in results:
                yield results.pop(next_pos)
                next_pos += 1
                continue
            if not pending:
                break
            done, _ = await asyncio.wait(pending.values(), return_when=asyncio.FIRST_COMPLETED)
            for pos in [p for p, t in pending.items() if t in done]:
                results[pos] = pending.pop(pos).result()
    finally:
        for t in pending.values():
            t.cancel()
        if pending:
            await asyncio.gather(*pending.values(), return_exceptions=True)


async def decompose_all(examples: Iterable[Example], teacher: Teacher, cfg: DecomposeConfig,
                        on_done: Callable[[TreeRecord], None]) -> int:
    """Async form for callers with their own event loop: ``on_done`` gets each record, in input order."""
    n = 0
    try:
        async for rec in search_all(examples, teacher, cfg):
            on_done(rec)
            n += 1
    finally:
        await teacher.aclose()
    return n


def make_stage_teacher(cfg: DecomposeConfig) -> Teacher:
    if isinstance(cfg.teacher, Teacher):
        return cfg.teacher
    from learnat_cli.synthesis.teachers import make_teacher

    return make_teacher(cfg.teacher, dialect=cfg.dialect, **cfg.teacher_options)


def run(examples: Iterable[Example], cfg: DecomposeConfig | None = None
        ) -> tuple[Iterator[TreeRecord], DecomposeReport]:
    """The stage: records in (examples with gold SQL), records out (in input order), plus a report filled as
    the records are consumed. Invalid options raise :class:`LearnatError` here, before anything runs."""
    cfg = cfg or DecomposeConfig()
    cfg.check()
    teacher = make_stage_teacher(cfg)
    report = DecomposeReport()

    def records() -> Iterator[TreeRecord]:
        loop = asyncio.new_event_loop()
        agen = search_all(examples, teacher, cfg)
        try:
            while True:
                try:
                    rec = loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    break
                report.add(rec)
                yield rec
        finally:
            try:
                loop.run_until_complete(agen.aclose())
                loop.run_until_complete(teacher.aclose())
            finally:
                loop.close()

    return records(), report


decompose = run
