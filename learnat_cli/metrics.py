"""``learnat eval``: execution accuracy with the official semantics (BIRD and Spider), by difficulty.

Input records: :class:`~learnat_cli.records.Prediction` rows (``id``, ``pred``; ``gold`` in the same row or in a
separate Spider/BIRD/learnat gold file matched by ``id`` or by order). Output: one per-item record (``id``,
``correct``, ``error``, ``gold_error``, ``difficulty``, ...) and a report (overall and by difficulty).

Semantics (shared/README.md):
- ``bird``: correct iff ``set(pred_rows) == set(gold_rows)`` — order and duplicates ignored, column order matters.
- ``spider`` (test-suite execution match): rows compared as multisets, as ordered lists when the gold has
  ``ORDER BY``; column permutations of the prediction are allowed; two empty results are equal.
- Every row is compared (never only the first few). A prediction that errors or times out is wrong, with its
  error. An item whose *gold* errors is reported as ``gold_error`` and left out of the denominator (the released
  LearNAT code counted those correct: a pitfall PAPER.md tells us not to repeat).
- Difficulty: BIRD's ``difficulty`` field; for Spider, the hardness of the official ``evaluation.py`` rules
  (:func:`spider_hardness`, re-implemented on sqlglot's AST).

Speed: items run in worker processes (``workers``), each keeping one read-only connection per database; a
query's time limit is enforced inside SQLite by a progress handler. A prediction whose text equals the gold's
(whitespace-normalised) is scored from the gold's single execution (SQLite is deterministic for the same query on
the same file).
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import sqlite3
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from sqlglot import exp

from learnat_cli import db as dbmod
from learnat_cli.errors import LearnatError

METRICS = ("bird", "spider")
SPIDER_LEVELS = ("easy", "medium", "hard", "extra")
BIRD_LEVELS = ("simple", "moderate", "challenging")


# ---------------------------------------------------------------------------------------------------------------
# Result comparison


def _spider_equal(pred: list[tuple], gold: list[tuple], ordered: bool) -> bool:
    if len(pred) != len(gold):
        return False
    if not gold:
        return True
    ncol = len(gold[0])
    if any(len(r) != ncol for r in pred):
        return False
    # candidate pred columns for each gold column: same multiset of values
    pcols = [Counter(r[i] for r in pred) for i in range(ncol)]
    gcols = [Counter(r[j] for r in gold) for j in range(ncol)]
    cands = [[i for i in range(ncol) if pcols[i] == gcols[j]] for j in range(ncol)]
    if any(not c for c in cands):
        return False
    gold_rows = gold if ordered else Counter(gold)
    tried = 0
    for perm in itertools.product(*cands):
        if len(set(perm)) != ncol:
            continue
        tried += 1
        if tried > 5000:  # pathological all-equal columns: bounded search
            break
        perm_rows = [tuple(r[i] for i in perm) for r in pred]
        if (perm_rows == gold_rows) if ordered else (Counter(perm_rows) == gold_rows):
            return True
    return False


def rows_match(pred_rows: Iterable[tuple], gold_rows: Iterable[tuple], metric: str = "bird",
               ordered: bool = False) -> bool:
    pred = [tuple(r) for r in pred_rows]
    gold = [tuple(r) for r in gold_rows]
    if metric == "bird":
        return set(pred) == set(gold)
    if metric == "spider":
        return _spider_equal(pred, gold, ordered)
    raise LearnatError(f"unknown metric {metric!r} (bird or spider)")


def gold_is_ordered(gold_sql: str) -> bool:
    from learnat_cli.sql import try_parse

    tree = try_parse(gold_sql)
    if tree is None:
        return bool(re.search(r"\border\s+by\b", gold_sql, re.I))
    return tree.args.get("order") is not None


def exec_match(db_path, pred: str, gold: str, metric: str = "bird",
               timeout_s: float = dbmod.DEFAULT_TIMEOUT_S) -> tuple[bool, Optional[str]]:
    """Run both queries read-only and compare. Returns ``(correct, error)``; a gold error is an error too."""
    r = _judge(str(db_path), pred, gold, metric, timeout_s, {})
    return r["correct"], r["error"] or r["gold_error"]


# ---------------------------------------------------------------------------------------------------------------
# Spider hardness (rules of Spider's official evaluation.py, re-implemented on sqlglot)


def _conds(node: Optional[exp.Expression]) -> tuple[list[exp.Expression], int]:
    """Leaf conditions of a WHERE/HAVING and the number of ORs joining them."""
    if node is None:
        return [], 0
    if isinstance(node, (exp.Where, exp.Having)):
        node = node.this
    if isinstance(node, exp.Paren):
        return _conds(node.this)
    if isinstance(node, (exp.And, exp.Or)):
        a, oa = _conds(node.left)
        b, ob = _conds(node.right)
        return a + b, oa + ob + (1 if isinstance(node, exp.Or) else 0)
    return [node], 0


_AGGS = (exp.Count, exp.Sum, exp.Avg, exp.Max, exp.Min)


def _unparen(n):
    while isinstance(n, (exp.Paren, exp.Alias, exp.Ordered)):
        n = n.this
    return n


def _first_agg_in_unit(n) -> bool:
    # a condition/order unit counts when its left value unit is an aggregate (e.g. COUNT(*) > 1)
    n = _unparen(n)
    if isinstance(n, (exp.Binary, exp.Like, exp.In, exp.Between)) and not isinstance(n, (exp.And, exp.Or)):
        return isinstance(_unparen(n.this), _AGGS)
    if isinstance(n, exp.Not):
        return _first_agg_in_unit(n.this)
    return False


def _hardness_counts(tree: exp.Expression) -> tuple[int, int, int]:
    nested = 0
    while isinstance(tree, exp.Subquery):
        tree = tree.this
    if isinstance(tree, exp.SetOperation):
        nested += 1  # the right-hand side of INTERSECT/UNION/EXCEPT counts as nested
        tree = tree.left
        while isinstance(tree, (exp.Subquery, exp.SetOperation)):
            tree = tree.this if isinstance(tree, exp.Subquery) else tree.left
    sel = tree
    if not isinstance(sel, exp.Select):
        return 0, 0, 0
    where_c, where_or = _conds(sel.args.get("where"))
    having_c, having_or = _conds(sel.args.get("having"))
    group = sel.args.get("group")
    group_items = list(group.expressions) if group is not None else []
    order = sel.args.get("order")
    order_items = list(order.expressions) if order is not None else []
    joins = sel.args.get("joins") or []
    # nested queries directly in FROM/WHERE/HAVING
    for part in [sel.args.get("from_") or sel.args.get("from"), *joins, sel.args.get("where"),
                 sel.args.get("having")]:
        if part is None:
            continue
        for sub in part.find_all(exp.Select):
            if sub is not sel and sub.find_ancestor(exp.Select) is sel:
                nested += 1
    c1 = 0
    c1 += 1 if where_c else 0
    c1 += 1 if group_items else 0
    c1 += 1 if order_items else 0
    c1 += 1 if sel.args.get("limit") is not None else 0
    c1 += len(joins)
    c1 += where_or + having_or
    c1 += sum(1 for c in where_c + having_c if isinstance(_unparen(c), exp.Like)
              or isinstance(c, exp.Not) and isinstance(_unparen(c.this), exp.Like))
    agg = sum(1 for e in sel.expressions if isinstance(_unparen(e), _AGGS))
    agg += sum(1 for c in where_c if _first_agg_in_unit(c))
    agg += sum(1 for g in group_items if isinstance(_unparen(g), _AGGS))
    agg += sum(1 for o in order_items if isinstance(_unparen(o), _AGGS))
    agg += sum(1 for c in having_c if _first_agg_in_unit(c))
    others = 0
    others += 1 if agg > 1 else 0
    others += 1 if len(sel.expressions) > 1 else 0
    others += 1 if len(where_c) > 1 else 0
    others += 1 if len(group_items) > 1 else 0
    return c1, nested, others


def spider_hardness(sql: str) -> str:
    """easy / medium / hard / extra, by the component counts of Spider's evaluation.py."""
    from learnat_cli.sql import try_parse

    tree = try_parse(sql)
    if tree is None:
        return "extra"
    c1, c2, others = _hardness_counts(tree)
    if c1 <= 1 and others == 0 and c2 == 0:
        return "easy"
    if (others <= 2 and c1 <= 1 and c2 == 0) or (c1 <= 2 and others < 2 and c2 == 0):
        return "medium"
    if ((others > 2 and c1 <= 2 and c2 == 0) or (2 < c1 <= 3 and others <= 2 and c2 == 0)
            or (c1 <= 1 and others == 0 and c2 <= 1)):
        return "hard"
    return "extra"


# ---------------------------------------------------------------------------------------------------------------
# Judging one item (runs in worker processes)


def _squash(sql: str) -> str:
    return " ".join((sql or "").strip().rstrip(";").split())


def _run(path: str, sql: str, timeout_s: float, conns: dict) -> list[tuple]:
    conn = conns.get(path)
    if conn is None:
        conn = conns[path] = dbmod.connect_ro(path)
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 1000)
    try:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
    except sqlite3.DatabaseError as e:
        if time.monotonic() > deadline:
            raise dbmod.QueryTimeout(f"timed out after {timeout_s:g} s") from None
        if "not authorized" in str(e):
            raise dbmod.WriteRefused(f"refused (read-only): {e}") from None
        raise dbmod.QueryError(f"{type(e).__name__}: {e}") from None
    except (sqlite3.Warning, ValueError, OverflowError, MemoryError) as e:
        raise dbmod.QueryError(f"{type(e).__name__}: {e}") from None


def _judge(path: str, pred: Optional[str], gold: str, metric: str, timeout_s: float, conns: dict,
           ordered: Optional[bool] = None) -> dict:
    out: dict[str, Any] = {"correct": False, "error": None, "gold_error": None}
    try:
        gold_rows = _run(path, gold, timeout_s, conns)
    except (LearnatError, Exception) as e:  # noqa: BLE001 - any gold failure is reported, never fatal
        out["gold_error"] = str(e)
        return out
    if not pred or not pred.strip():
        out["error"] = "empty prediction"
        return out
    if _squash(pred) == _squash(gold):
        pred_rows = gold_rows
    else:
        try:
            pred_rows = _run(path, pred, timeout_s, conns)
        except (LearnatError, Exception) as e:  # noqa: BLE001
            out["error"] = str(e)
            return out
    if ordered is None:
        ordered = metric == "spider" and gold_is_ordered(gold)
    out["correct"] = rows_match(pred_rows, gold_rows, metric, ordered)
    return out


_WORKER_CONNS: dict = {}


def _judge_to_queue(q, job) -> None:
    i, path, pred, gold, metric, t, ordered = job
    q.put(_judge(path, pred, gold, metric, t, {}, ordered))


def _judge_isolated(ctx, job, deadline_s: float) -> dict:
    """Judge one item in its own process and kill it past ``deadline_s`` (counted wrong, error recorded)."""
    q = ctx.Queue()
    proc = ctx.Process(target=_judge_to_queue, args=(q, job), daemon=True)
    proc.start()
    try:
        return q.get(timeout=deadline_s)
    except queue.Empty:
        return {"correct": False, "error": f"killed: no result within {deadline_s:g}s (hard timeout)",
                "gold_error": None}
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(1)


def _judge_batch(batch: list[tuple]) -> list[tuple[int, dict]]:
    return [(i, _judge(path, pred, gold, metric, t, _WORKER_CONNS, ordered))
            for i, path, pred, gold, metric, t, ordered in batch]


# ---------------------------------------------------------------------------------------------------------------
# The stage


@dataclass
class EvalConfig:
    metric: str = "bird"
    workers: int = 0  # 0 = os.cpu_count()
    timeout_s: float = dbmod.DEFAULT_TIMEOUT_S
    batch_size: int = 16
    pool_after_s: float = 1.0  # estimated sequential time left above which worker processes are started
    hard_grace_s: float = 5.0  # extra wall time before a hung worker is killed (on top of 2x timeout per query)


@dataclass
class EvalItem:
    id: str
    db_path: str
    pred: Optional[str]
    gold: str
    difficulty: str
    extra: dict = field(default_factory=dict)


def evaluate(items: list[EvalItem], cfg: EvalConfig,
             on_result: Optional[Callable[[EvalItem, dict], None]] = None) -> dict:
    """Judge every item (in parallel), call ``on_result`` per item as it finishes (in input order), and return the
    report: overall and per-difficulty counts and accuracy."""
    if cfg.metric not in METRICS:
        raise LearnatError(f"unknown metric {cfg.metric!r} (bird or spider)", field="metric")
    workers = cfg.workers or os.cpu_count() or 1
    # ORDER BY is read here, once per distinct gold (parses are cached in this process, not in the workers)
    jobs = [(i, it.db_path, it.pred, it.gold, cfg.metric, cfg.timeout_s,
             cfg.metric == "spider" and gold_is_ordered(it.gold)) for i, it in enumerate(items)]
    # group by database so each worker reuses its connections
    jobs.sort(key=lambda j: j[1])
    batches = [jobs[k:k + cfg.batch_size] for k in range(0, len(jobs), cfg.batch_size)]
    results: dict[int, dict] = {}
    next_out = 0

    def flush():
        nonlocal next_out
        while next_out in results:
            if on_result:
                on_result(items[next_out], results[next_out])
            next_out += 1

    # Adaptive: judge in this process while the work left is cheaper than starting worker processes; move the
    # rest to a pool once the measured per-item time says parallelism pays.
    conns: dict = {}
    t0 = time.perf_counter()
    done_items = 0
    k = 0
    while k < len(batches):
        elapsed = time.perf_counter() - t0
        left = len(jobs) - done_items
        if workers > 1 and done_items and elapsed / done_items * left > cfg.pool_after_s:
            break
        for i, path, pred, gold, metric, t, ordered in batches[k]:
            results[i] = _judge(path, pred, gold, metric, t, conns, ordered)
        done_items += len(batches[k])
        k += 1
        flush()
    if k < len(batches):
        import multiprocessing as mp

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        futures = [pool.submit(_judge_batch, b) for b in batches[k:]]
        # Hard-kill fallback: the progress handler stops slow queries inside the worker; should a worker still
        # hang (a query stuck where the handler never runs), its batch is abandoned after a generous deadline,
        # the pool's processes are killed, and the unfinished items are judged one by one in fresh processes.
        hung_from = None
        for n, fut in enumerate(futures):
            try:
                res = fut.result(timeout=cfg.hard_grace_s + 2 * cfg.timeout_s * len(batches[k + n]))
            except FuturesTimeout:
                hung_from = n
                break
            for i, r in res:
                results[i] = r
            flush()
        if hung_from is not None:
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.kill()
            pool.shutdown(wait=False, cancel_futures=True)
            for batch in batches[k + hung_from:]:
                for job in batch:
                    if job[0] not in results:
                        results[job[0]] = _judge_isolated(ctx, job, cfg.hard_grace_s + 2 * cfg.timeout_s)
                flush()
        else:
            pool.shutdown()
    for c in conns.values():
        c.close()
    flush()
    return make_report(items, results, cfg)


def make_report(items: list[EvalItem], results: dict[int, dict], cfg: EvalConfig) -> dict:
    levels = SPIDER_LEVELS if cfg.metric == "spider" else BIRD_LEVELS
    by: dict[str, dict[str, int]] = defaultdict(lambda: {"count": 0, "correct": 0, "errors": 0, "gold_errors": 0})
    for i, it in enumerate(items):
        r = results[i]
        for key in ("all", it.difficulty or "unknown"):
            b = by[key]
            if r["gold_error"]:
                b["gold_errors"] += 1
                continue
            b["count"] += 1
            b["correct"] += int(r["correct"])
            b["errors"] += int(bool(r["error"]))
    order = ["all"] + [lv for lv in levels if lv in by] + sorted(k for k in by if k not in levels and k != "all")
    report = {"metric": cfg.metric, "timeout_s": cfg.timeout_s, "n_items": len(items), "by_difficulty": {}}
    for k in order:
        b = by[k]
        b["accuracy"] = b["correct"] / b["count"] if b["count"] else 0.0
        report["by_difficulty"][k] = b
    report["accuracy"] = by["all"]["accuracy"] if "all" in by else 0.0
    return report
