"""``learnat decompose``: decomposition synthesis with MCTS and AST pruning (LearNAT sec. 3.2).

Input records: :class:`~learnat_cli.records.Example` (learnat JSONL, Spider or BIRD rows) with a gold SQL.
Output records: one :class:`~learnat_cli.records.TreeRecord` per example — the best trajectory (``steps`` with
sub-question, SQL, status, reward), ``reached_gold``, ``reward``, the teacher calls/tokens spent, ``schema_text``
and, unless ``slim``, every node of the search tree (``nodes``: status, visits, value, reward) so that
``learnat decompose ... | learnat build-pairs`` works as a pipe. ``trees`` writes the same full records to a
separate file while the main output stays slim.

Resumable: with an output file, records are appended as examples finish and a rerun skips ids already there.
``shard=(i, n)`` keeps the examples whose position ``p`` satisfies ``p % n == i``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from learnat_cli.datasets import load_examples
from learnat_cli.errors import LearnatError
from learnat_cli.synthesis.mcts import MctsConfig, Search
from learnat_cli.records import Example, Step, TreeNode, TreeRecord
from learnat_cli.sql import GoldAst, SqlParseError
from learnat_cli.synthesis.teachers import State, Teacher


@dataclass
class DecomposeConfig:
    mcts: MctsConfig = field(default_factory=MctsConfig)
    db: Optional[str] = None
    db_root: Optional[str] = None
    tables: Optional[str] = None  # Spider/BIRD tables.json for DB-less schemas
    schema_tokens: int = 1500
    dialect: str = "sqlite"
    limit: Optional[int] = None
    shard: tuple[int, int] = (0, 1)
    workers: int = 4  # examples searched concurrently
    exec_terminal: bool = True  # with a database, a step whose result equals the gold's is terminal


def schema_for(ex: Example, cfg: DecomposeConfig) -> tuple[str, Optional[str]]:
    """(schema text, database path or None)."""
    from learnat_cli.db import load_schema, render_schema, resolve_db, schema_from_tables_json

    if cfg.db or ex.db_path or (cfg.db_root and ex.db_id):
        try:
            path = resolve_db(cfg.db, db_id=ex.db_id, db_root=cfg.db_root, db_path=ex.db_path)
            return render_schema(load_schema(path), cfg.schema_tokens, ex.question), str(path)
        except LearnatError:
            if not cfg.tables:
                raise
    if cfg.tables and ex.db_id:
        return render_schema(schema_from_tables_json(cfg.tables, ex.db_id), cfg.schema_tokens, ex.question), None
    return "", None


def select_examples(path: str, cfg: DecomposeConfig, skip: set[str]) -> Iterable[Example]:
    i, n = cfg.shard
    count = 0
    for pos, ex in enumerate(load_examples(path, require_gold=True)):
        if pos % n != i or ex.id in skip:
            continue
        yield ex
        count += 1
        if cfg.limit is not None and count >= cfg.limit:
            return


async def decompose_one(ex: Example, teacher: Teacher, cfg: DecomposeConfig) -> TreeRecord:
    try:
        gold = GoldAst(ex.gold or "", cfg.dialect)
    except SqlParseError as e:
        raise LearnatError(f"gold {e.message}", field="gold") from None
    schema, db_path = schema_for(ex, cfg)
    calls0, tokens0 = teacher.usage.calls, teacher.usage.tokens

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
    nodes = [TreeNode(node_id=n.id, parent=n.parent.id if n.parent else None, depth=n.depth,
                      step=None if n.parent is None else Step(question=n.question, sql=n.sql, status=n.status,
                                                              reward=round(n.reward, 6)),
                      status=n.status, visits=n.visits, value=round(n.value, 6), reward=round(n.reward, 6),
                      terminal=n.terminal)
             for n in search.nodes]
    data = ex.model_dump()
    data.update(
        steps=[Step(question=n.question, sql=n.sql, status=n.status, reward=round(n.reward, 6)) for n in path],
        reached_gold=reached, reward=round(path[-1].reward, 6) if path else 0.0, teacher=teacher.name,
        teacher_calls=teacher.usage.calls - calls0, teacher_tokens=teacher.usage.tokens - tokens0,
        nodes=nodes, schema_text=schema, expansions=search.expansions)
    return TreeRecord.model_validate(data)


async def decompose_all(examples: Iterable[Example], teacher: Teacher, cfg: DecomposeConfig,
                        on_done: Callable[[TreeRecord], None]) -> int:
    """Search every example, ``cfg.workers`` at a time; ``on_done`` gets each record as soon as it is finished."""
    sem = asyncio.Semaphore(max(1, cfg.workers))
    n = 0

    async def one(ex: Example):
        async with sem:
            try:
                return await decompose_one(ex, teacher, cfg)
            except LearnatError as e:
                raise LearnatError(f"example {ex.id}: {e.message}", file=e.file, line=e.line,
                                   field=e.field) from None

    pending = set()
    it = iter(examples)
    try:
        while True:
            while len(pending) < max(1, cfg.workers) * 2:
                ex = next(it, None)
                if ex is None:
                    break
                pending.add(asyncio.ensure_future(one(ex)))
            if not pending:
                break
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for d in done:
                on_done(d.result())
                n += 1
    finally:
        for p in pending:
            p.cancel()
        await teacher.aclose()
    return n
