"""Execution accuracy (paper sec. 4): result comparison with the official BIRD and Spider semantics, Spider
hardness, and the parallel judge that the ``eval`` and ``score`` stages call.

Inputs: :class:`EvalItem` (``pred``, ``gold``, database file, difficulty); outputs: per item ``correct``,
``error`` (the prediction's), ``gold_error``, and a report (overall and by difficulty). Queries run through
the one read-only executor of :mod:`learnat_cli.db` (time and byte limits; an over-limit result is wrong, as a
timeout is).

Semantics (shared/README.md):
- ``bird`` (BIRD's evaluator): correct iff ``set(pred_rows) == set(gold_rows)`` on the one database file —
  order and duplicates ignored, column order matters.
- ``spider``: the test-suite evaluator (github taoyds/test-suite-sql-eval), ``evaluation.py --etype exec``
  with ``exec_eval.eval_exec_match``, re-implemented from its rules (no code copied), quirks included:
  1. the prediction's `` value `` becomes `` 1 `` (the driver's placeholder substitution, spaces included);
  2. both queries: ``> =``, ``< =``, ``! =`` are joined (``postprocess``);
  3. both queries: every ``DISTINCT`` token is removed unless ``keep_distinct`` — inside aggregates too
     (``count(DISTINCT x)`` becomes ``count( x)``), and only the first statement is kept (sqlparse's first
     statement): :func:`strip_distinct`;
  4. rows are compared in order iff the (processed) gold text contains ``order by`` anywhere, lower-cased,
     with exactly one space (sub-queries included); as multisets otherwise;
  5. ``YEAR(CURDATE())`` becomes ``2020`` before execution; text is decoded as UTF-8 ignoring bad bytes;
  6. a column permutation of the prediction is allowed; the official quick rejection compares rows sorted by
     ``str(value) + str(type(value))``, so e.g. ``(1, 1.5)`` against ``(1.0, 1.5)`` is wrong there and here;
  7. the prediction must match on every ``*.sqlite`` file of the database's folder (the distilled test-suite
     variants) when the file sits in the ``<db_id>/<db_id>.sqlite`` layout.
  Not reproduced: the official tool executes writes (learnat refuses them: wrong) and aborts on a gold error
  (learnat reports ``gold_error``); an empty prediction is wrong.
- Every row is compared. An item whose *gold* errors is reported as ``gold_error`` and left out of the
  denominator (the released LearNAT code counted those correct: a pitfall PAPER.md tells us not to repeat).
- Difficulty: BIRD's ``difficulty`` field; for Spider, :func:`spider_hardness` (the official classification).

Speed: items run in worker processes (``workers``), each keeping one read-only connection per database. A
prediction whose processed text equals the gold's is scored from the gold's single execution (SQLite is
deterministic for the same query on the same file).
"""

from __future__ import annotations

import functools
import itertools
import os
import queue
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlglot import exp

from learnat_cli import db as dbmod
from learnat_cli.errors import LearnatError

METRICS = ("bird", "spider")
SPIDER_LEVELS = ("easy", "medium", "hard", "extra")
BIRD_LEVELS = ("simple", "moderate", "challenging")


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise LearnatError(f"unknown metric {metric!r}: use bird or spider", field="metric")
    return metric


_SPIDER_ID = re.compile(r"^(dev|train_spider|train_others|test|spider[\w-]*)-\d+$")


def detect_metric(row: dict[str, Any]) -> str | None:
    """The benchmark a row comes from, when it says so: a ``source``/``origin`` field naming spider or bird;
    Spider's own keys (``query``, ``query_toks``, a parsed ``sql``) or ids (``dev-12``); BIRD's (``SQL``,
    ``question_id``, ``bird-<id>`` ids, simple/moderate/challenging difficulty). None when unknown."""
    for k in ("source", "origin", "dataset"):
        v = row.get(k)
        if isinstance(v, str):
            low = v.lower()
            for m in METRICS:
                if m in low:
                    return m
    if "query" in row or "query_toks" in row or isinstance(row.get("sql"), dict):
        return "spider"
    rid = str(row.get("id", ""))
    if ("SQL" in row or "question_id" in row or rid.startswith("bird-")
            or row.get("difficulty") in BIRD_LEVELS):
        return "bird"
    if _SPIDER_ID.match(rid):
        return "spider"
    return None


def choose_metric(metric: str | None, rows: Iterable[dict[str, Any]], source: str) -> tuple[str, str]:
    """(metric, how it was chosen): the option when given; else detected from the first rows of ``source``
    (:func:`detect_metric`); else ``bird`` (set equality, the more lenient) by default."""
    if metric:
        return check_metric(metric), "--metric"
    for row in itertools.islice(rows, 20):
        found = detect_metric(row)
        if found:
            return found, f"detected from {source}"
    return "bird", "default (origin unknown)"


# ------------------------------------------------------------------------------------------------------------
# Spider's text processing


_TOKEN = re.compile(r"""
    (?P<skip>'(?:[^']|'')*'?            # 'string' ('' escapes)
      | "(?:[^"]|"")*"?                 # "identifier"
      | `[^`]*`?                        # `identifier`
      | \[[^\]]*\]?                     # [identifier]
      | --[^\n]*                        # -- comment
      | /\*.*?(?:\*/|$)                 # /* comment */
      | [$:?@][\w$#]*)                  # placeholders / variables (one token with their name)
    | (?P<word>[\w$#]+)
    | (?P<semi>;)
    """, re.X | re.S)


def strip_distinct(sql: str) -> str:
    """The official ``remove_distinct``: the first statement's tokens joined back without any token equal to
    ``distinct`` (any case). Strings, quoted identifiers and comments are single tokens, so they keep theirs;
    whitespace tokens stay (``SELECT DISTINCT a`` becomes ``SELECT  a``)."""
    out: list[str] = []
    pos = 0
    for m in _TOKEN.finditer(sql):
        if m.group("word") is not None and m.group("word").lower() == "distinct":
            out.append(sql[pos:m.start()])
            pos = m.end()
        elif m.group("semi") is not None:
            out.append(sql[pos:m.end()])
            pos = len(sql)
            break
    out.append(sql[pos:])
    return "".join(out)


def _postprocess(sql: str) -> str:
    return sql.replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")


_CUR_YEAR = re.compile(r"YEAR\s*\(\s*CURDATE\s*\(\s*\)\s*\)\s*", re.I)


def spider_texts(pred: str, gold: str, keep_distinct: bool = False) -> tuple[str, str, bool]:
    """(prediction, gold, ordered) as the official evaluator runs and compares them (module docstring 1-5)."""
    pred = _postprocess(pred.strip().replace(" value ", " 1 "))
    gold = _postprocess(gold.strip())
    if not keep_distinct:
        pred, gold = strip_distinct(pred), strip_distinct(gold)
    ordered = "order by" in gold.lower()
    return _CUR_YEAR.sub("2020", pred), _CUR_YEAR.sub("2020", gold), ordered


def gold_is_ordered(gold_sql: str, keep_distinct: bool = False) -> bool:
    """The official rule: ``'order by' in gold.lower()`` after the text processing."""
    return spider_texts("", gold_sql, keep_distinct)[2]


@functools.lru_cache(maxsize=4096)
def db_files(path: str | Path, metric: str) -> list[str]:
    """Files a query is judged on: for ``spider`` every ``*.sqlite`` of a ``<db_id>/<db_id>.sqlite`` folder
    (the test-suite's distilled variants; the file itself first), else the file alone."""
    p = Path(path)
    if metric != "spider" or p.parent.name != p.stem:
        return [str(p)]
    others = sorted(str(f) for f in p.parent.glob("*.sqlite") if f.name != p.name and f.is_file())
    return [str(p), *others]


# ------------------------------------------------------------------------------------------------------------
# Result comparison


def _unorder(row: tuple) -> tuple:
    return tuple(sorted(row, key=lambda x: str(x) + str(type(x))))


def spider_result_eq(gold: list[tuple], pred: list[tuple], ordered: bool) -> bool:
    """The official ``result_eq(gold, pred)``: equal as multisets of rows (as lists when ``ordered``) up to a
    permutation of the prediction's columns, after the official quick rejection (module docstring 6)."""
    if not gold and not pred:
        return True
    if len(gold) != len(pred):
        return False
    n = len(gold[0])
    if len(pred[0]) != n:
        return False
    if any(type(v) is float for rows in (gold, pred) for r in rows for v in r):
        # The official quick rejection. It can only differ from the search below where values of different
        # types compare equal (1 == 1.0), i.e. where floats appear; elsewhere a match implies it passes.
        ug, up = [_unorder(r) for r in gold], [_unorder(r) for r in pred]
        if (ug != up) if ordered else (set(ug) != set(up)):
            return False
    if (pred == gold) if ordered else (Counter(pred) == Counter(gold)):
        return True  # the identity permutation
    gcols = [[r[j] for r in gold] for j in range(n)]
    pcols = [[r[i] for r in pred] for i in range(n)]
    if ordered:  # every gold column equals its prediction column as a list: a matching suffices
        cands = [[i for i in range(n) if pcols[i] == gcols[j]] for j in range(n)]
        return all(cands) and _match(cands, pcols, lambda pairs: True)
    gcount = [Counter(c) for c in gcols]
    pcount = [Counter(c) for c in pcols]
    cands = [[i for i in range(n) if pcount[i] == gcount[j]] for j in range(n)]
    if not all(cands):
        return False

    def rows_agree(pairs: list[tuple[int, int]]) -> bool:
        gj = [j for j, _ in pairs]
        pi = [i for _, i in pairs]
        return (Counter(tuple(r[j] for j in gj) for r in gold)
                == Counter(tuple(r[i] for i in pi) for r in pred))

    return _match(cands, pcols, rows_agree)


def _match(cands: list[list[int]], pcols: list[list], ok: Callable[[list[tuple[int, int]]], bool]) -> bool:
    """A one-to-one choice of prediction column per gold column from ``cands`` such that ``ok`` accepts every
    prefix of (gold column, prediction column) pairs. Identical prediction columns are interchangeable, so
    only the first unused one of a group is tried."""
    n = len(cands)
    order = sorted(range(n), key=lambda j: len(cands[j]))
    key = [tuple(c) for c in pcols]
    pairs: list[tuple[int, int]] = []
    used: set[int] = set()

    def rec(k: int) -> bool:
        if k == n:
            return True
        j = order[k]
        tried: set[tuple] = set()
        for i in cands[j]:
            if i in used or key[i] in tried:
                continue
            tried.add(key[i])
            pairs.append((j, i))
            used.add(i)
            if ok(pairs) and rec(k + 1):
                return True
            pairs.pop()
            used.discard(i)
        return False

    return rec(0)


def rows_match(pred_rows: Iterable[tuple], gold_rows: Iterable[tuple], metric: str = "bird",
               ordered: bool = False) -> bool:
    pred = [tuple(r) for r in pred_rows]
    gold = [tuple(r) for r in gold_rows]
    if check_metric(metric) == "bird":
        return set(pred) == set(gold)
    return spider_result_eq(gold, pred, ordered)


def exec_match(db_path, pred: str, gold: str, metric: str = "bird",
               timeout_s: float = dbmod.DEFAULT_TIMEOUT_S, *, keep_distinct: bool = False,
               max_bytes: int = dbmod.DEFAULT_MAX_BYTES) -> tuple[bool, str | None]:
    """Run both queries read-only and compare. Returns ``(correct, error)``; a gold error is an error too."""
    sem = Semantics(check_metric(metric), keep_distinct, timeout_s, max_bytes)
    conns: dict = {}
    try:
        r = _judge(str(db_path), pred, gold, sem, conns)
    finally:
        for c in conns.values():
            c.close()
    return r["correct"], r["error"] or r["gold_error"]


# ------------------------------------------------------------------------------------------------------------
# Spider hardness: the official evaluation.py classification (count_component1, count_component2, count_others
# over its parsed SQL), re-implemented on sqlglot's AST. The official parser keeps WHERE/HAVING/ON conditions
# as a flat list [cond, 'and'|'or', cond, ...] and a cond_unit as (not_op, op, val_unit, val1, val2); its
# counting has quirks that decide the class and are reproduced here:
# - "aggregates" in WHERE are the conditions with NOT (it tests cond_unit[0], the not flag), and in HAVING the
#   NOT conditions *plus every and/or connector* (it tests the first character of 'and'/'or');
# - a SELECT item counts as an aggregate when it starts with one (agg_id of the item), an ORDER BY item for
#   each aggregate operand (col_unit1, col_unit2); GROUP BY items when aggregates;
# - nesting (component2) counts the sub-queries that are condition values in ON/WHERE/HAVING plus one for a
#   top-level INTERSECT/UNION/EXCEPT; a sub-query in FROM is not nesting but a table unit (JOIN count);
# - only the first SELECT of a set operation is counted (the rest is its nested query).


def _flat_conds(node: Any) -> tuple[list[exp.Expression], list[str]]:
    """Leaf conditions and the connectors between them, as the official flat condition list."""
    if node is None:
        return [], []
    if isinstance(node, (exp.Where, exp.Having)):
        node = node.this
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, (exp.And, exp.Or)):
        a, ca = _flat_conds(node.left)
        b, cb = _flat_conds(node.right)
        return a + b, ca + ["or" if isinstance(node, exp.Or) else "and"] + cb
    return [node], []


_AGGS = (exp.Count, exp.Sum, exp.Avg, exp.Max, exp.Min)
_ARITH = (exp.Add, exp.Sub, exp.Mul, exp.Div)


def _unwrap(n):
    while isinstance(n, (exp.Paren, exp.Alias, exp.Ordered)):
        n = n.this
    return n


def _negated(c: exp.Expression) -> bool:
    return isinstance(c, exp.Not) or bool(c.args.get("negate"))


def _is_like(c: exp.Expression) -> bool:
    c = c.this if isinstance(c, exp.Not) else c
    return isinstance(_unwrap(c), (exp.Like, exp.ILike))


def _subquery_values(c: exp.Expression) -> int:
    c = _unwrap(c.this if isinstance(c, exp.Not) else c)
    if isinstance(c, exp.In):
        vals = [c.args.get("query"), *(c.args.get("expressions") or [])]
    elif isinstance(c, exp.Between):
        vals = [c.args.get("low"), c.args.get("high")]
    elif isinstance(c, exp.Binary):
        vals = [c.expression]
    else:
        vals = []
    return sum(1 for v in vals if isinstance(v, (exp.Subquery, exp.Select, exp.SetOperation)))


def _n_aggs(e: exp.Expression) -> int:
    e = _unwrap(e)
    if isinstance(e, _ARITH):
        return int(isinstance(_unwrap(e.left), _AGGS)) + int(isinstance(_unwrap(e.right), _AGGS))
    return int(isinstance(e, _AGGS))


def _starts_with_agg(e: exp.Expression) -> bool:
    e = _unwrap(e)
    while isinstance(e, _ARITH):
        e = _unwrap(e.left)
    return isinstance(e, _AGGS)


def hardness_counts(tree: Any) -> tuple[int, int, int]:
    """(count_component1, count_component2, count_others) of the official rules for a parsed query."""
    nested = 0
    while isinstance(tree, exp.Subquery):
        tree = tree.this
    if isinstance(tree, exp.SetOperation):
        nested += 1
        while isinstance(tree, (exp.Subquery, exp.SetOperation)):
            tree = tree.this if isinstance(tree, exp.Subquery) else tree.left
    sel = tree
    if not isinstance(sel, exp.Select):
        return 0, nested, 0
    joins = sel.args.get("joins") or []
    on_c: list[exp.Expression] = []
    on_ops: list[str] = []
    for j in joins:
        c, ops = _flat_conds(j.args.get("on"))
        if c and on_c:
            on_ops.append("and")
        on_c += c
        on_ops += ops
    where_c, where_ops = _flat_conds(sel.args.get("where"))
    having_c, having_ops = _flat_conds(sel.args.get("having"))
    group = sel.args.get("group")
    group_items = list(group.expressions) if group is not None else []
    order = sel.args.get("order")
    order_items = list(order.expressions) if order is not None else []
    conds = on_c + where_c + having_c
    c1 = int(bool(where_c)) + int(bool(group_items)) + int(bool(order_items))
    c1 += int(sel.args.get("limit") is not None)
    c1 += len(joins)  # table units - 1
    c1 += (on_ops + where_ops + having_ops).count("or")
    c1 += sum(1 for c in conds if _is_like(c))
    nested += sum(_subquery_values(c) for c in conds)
    agg = sum(1 for e in sel.expressions if _starts_with_agg(e))
    agg += sum(1 for c in where_c if _negated(c))
    agg += sum(1 for g in group_items if isinstance(_unwrap(g), _AGGS))
    agg += sum(_n_aggs(o) for o in order_items)
    agg += sum(1 for c in having_c if _negated(c)) + len(having_ops)
    others = int(agg > 1) + int(len(sel.expressions) > 1) + int(len(where_c) > 1) + int(len(group_items) > 1)
    return c1, nested, others


def classify_hardness(c1: int, c2: int, others: int) -> str:
    """``Evaluator.eval_hardness`` of the official evaluation.py, from the three counts."""
    if c1 <= 1 and others == 0 and c2 == 0:
        return "easy"
    if (others <= 2 and c1 <= 1 and c2 == 0) or (c1 <= 2 and others < 2 and c2 == 0):
        return "medium"
    if ((others > 2 and c1 <= 2 and c2 == 0) or (2 < c1 <= 3 and others <= 2 and c2 == 0)
            or (c1 <= 1 and others == 0 and c2 <= 1)):
        return "hard"
    return "extra"


def spider_hardness(sql: str) -> str:
    """easy / medium / hard / extra, as Spider's official evaluation.py classifies the gold query."""
    from learnat_cli.sql import try_parse

    try:
        tree = try_parse(sql)
    except RecursionError:
        tree = None
    if tree is None:
        return "extra"
    return classify_hardness(*hardness_counts(tree))


# ------------------------------------------------------------------------------------------------------------
# Judging one item (runs in worker processes)


@dataclass(frozen=True)
class Semantics:
    """How one item is judged: the metric and its options, and the executor's limits."""

    metric: str = "bird"
    keep_distinct: bool = False
    timeout_s: float = dbmod.DEFAULT_TIMEOUT_S
    max_bytes: int = dbmod.DEFAULT_MAX_BYTES


def _run(path: str, sql: str, sem: Semantics, conns: dict) -> list[tuple]:
    conn = conns.get(path)
    if conn is None:
        conn = conns[path] = dbmod.connect_ro(path)
    conn.text_factory = dbmod._text_ignore if sem.metric == "spider" else dbmod._text_replace
    return dbmod.run_query(conn, sql, timeout_s=sem.timeout_s, max_bytes=sem.max_bytes)[1]


FAILURES = ("empty prediction", "unknown column", "unknown table", "syntax error", "time limit",
            "size limit", "other SQL error", "wrong columns", "empty result", "wrong rows")


def failure_of_error(error: str) -> str:
    """The failure class of a prediction that did not run (:data:`FAILURES`), from its error message."""
    e = error.lower()
    if e.startswith("empty prediction"):
        return "empty prediction"
    if "no such column" in e or "unknown column" in e:
        return "unknown column"
    if "no such table" in e or "unknown table" in e:
        return "unknown table"
    if "syntax error" in e or "incomplete input" in e or "unrecognized token" in e or "does not parse" in e:
        return "syntax error"
    if "time limit" in e or "timed out" in e or "interrupted" in e:
        return "time limit"
    if "larger than the limit" in e or "too big" in e or "out of memory" in e:
        return "size limit"
    return "other SQL error"


def failure_of_rows(gold_rows: list[tuple], pred_rows: list[tuple]) -> str:
    """The failure class of a prediction that ran and did not match: its columns, no rows, or its rows."""
    if gold_rows and pred_rows and len(gold_rows[0]) != len(pred_rows[0]):
        return "wrong columns"
    if gold_rows and not pred_rows:
        return "empty result"
    return "wrong rows"


def _judge(path: str, pred: str | None, gold: str, sem: Semantics, conns: dict) -> dict:
    """``correct``, the prediction's ``error``, the gold's ``gold_error`` and, for a wrong prediction, its
    ``failure`` class (:data:`FAILURES`; None when correct or when the gold itself failed)."""
    out = _judge_rows(path, pred, gold, sem, conns)
    if out["failure"] is None and not out["correct"] and out["gold_error"] is None:
        out["failure"] = failure_of_error(out["error"]) if out["error"] else "wrong rows"
    return out


def _judge_rows(path: str, pred: str | None, gold: str, sem: Semantics, conns: dict) -> dict:
    out: dict[str, Any] = {"correct": False, "error": None, "gold_error": None, "failure": None}
    empty = not pred or not pred.strip()
    if sem.metric == "spider":
        pred_sql, gold_sql, ordered = spider_texts(pred or "", gold, sem.keep_distinct)
    else:
        pred_sql, gold_sql, ordered = (pred or "").strip(), gold.strip(), False
    correct = True
    for f in db_files(path, sem.metric):
        try:
            gold_rows = _run(f, gold_sql, sem, conns)
        except LearnatError as e:
            out["gold_error"] = str(e) if f == path else f"{e} (on {f})"
            out["correct"] = False
            return out
        if empty:
            out["error"] = "empty prediction"
            return out
        if not correct:
            continue  # the gold is still checked on every file; the verdict is already wrong
        if pred_sql == gold_sql:
            pred_rows = gold_rows
        else:
            try:
                pred_rows = _run(f, pred_sql, sem, conns)
            except LearnatError as e:
                out["error"] = str(e)
                return out
        if sem.metric == "spider":
            correct = spider_result_eq(gold_rows, pred_rows, ordered)
        else:
            correct = set(pred_rows) == set(gold_rows)
        if not correct:
            out["failure"] = failure_of_rows(gold_rows, pred_rows)
    out["correct"] = correct
    return out


_WORKER_CONNS: dict = {}


def _judge_to_queue(q, job) -> None:
    i, path, pred, gold, sem = job
    q.put(_judge(path, pred, gold, sem, {}))


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
    return [(i, _judge(path, pred, gold, sem, _WORKER_CONNS)) for i, path, pred, gold, sem in batch]


# ------------------------------------------------------------------------------------------------------------
# The stage


@dataclass
class ExecOptions:
    """What the eval and score stages share: where the databases are and how results are judged."""

    db: str | None = None
    db_root: str | None = None
    metric: str | None = None  # None: from the input's origin (see choose_metric), else bird
    timeout_s: float = dbmod.DEFAULT_TIMEOUT_S
    max_bytes: int = dbmod.DEFAULT_MAX_BYTES
    keep_distinct: bool = False  # spider: keep DISTINCT (the official --keep_distinct)


@dataclass
class EvalConfig:
    metric: str = "bird"
    workers: int = 0  # 0 = os.cpu_count()
    timeout_s: float = dbmod.DEFAULT_TIMEOUT_S
    max_bytes: int = dbmod.DEFAULT_MAX_BYTES
    keep_distinct: bool = False  # spider: keep DISTINCT (the official --keep_distinct)
    batch_size: int = 16
    pool_after_s: float = 1.0  # estimated sequential time left above which worker processes are started
    hard_grace_s: float = 5.0  # extra wall time before a hung worker is killed (on top of 2x timeout/query)

    def check(self) -> None:
        """Invalid values are one-line errors naming the option."""
        check_metric(self.metric)
        if not self.timeout_s > 0:
            raise LearnatError(f"--timeout must be a positive number of seconds, got {self.timeout_s:g}",
                               field="timeout")
        if self.workers < 0:
            raise LearnatError(f"--workers must be 0 (all cores) or more, got {self.workers}",
                               field="workers")
        if self.max_bytes < 1:
            raise LearnatError(f"--max-bytes must be at least 1, got {self.max_bytes}", field="max_bytes")

    def semantics(self) -> Semantics:
        return Semantics(self.metric, self.keep_distinct, self.timeout_s, self.max_bytes)


@dataclass
class EvalItem:
    id: str
    db_path: str
    pred: str | None
    gold: str
    difficulty: str
    extra: dict = field(default_factory=dict)


def evaluate(items: list[EvalItem], cfg: EvalConfig,
             on_result: Callable[[EvalItem, dict], None] | None = None) -> dict:
    """Judge every item (in parallel), call ``on_result`` per item as it finishes (in input order), and return
    the report: overall and per-difficulty counts and accuracy."""
    cfg.check()
    workers = cfg.workers or os.cpu_count() or 1
    sem = cfg.semantics()
    jobs = [(i, it.db_path, it.pred, it.gold, sem) for i, it in enumerate(items)]
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
        for i, path, pred, gold, sem_ in batches[k]:
            results[i] = _judge(path, pred, gold, sem_, conns)
            flush()  # each finished item is written at once (kept on Ctrl-C)
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
        try:
            for n, fut in enumerate(futures):
                try:
                    res = fut.result(timeout=cfg.hard_grace_s + 2 * cfg.timeout_s * len(batches[k + n]))
                except FuturesTimeout:
                    hung_from = n
                    break
                for i, r in res:
                    results[i] = r
                flush()
        except BaseException:  # Ctrl-C: stop the workers now; what was flushed stays written
            _kill_pool(pool)
            raise
        if hung_from is not None:
            _kill_pool(pool)
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


def _kill_pool(pool: ProcessPoolExecutor) -> None:
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def make_report(items: list[EvalItem], results: dict[int, dict], cfg: EvalConfig) -> dict:
    levels = SPIDER_LEVELS if cfg.metric == "spider" else BIRD_LEVELS
    by: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"count": 0, "correct": 0, "errors": 0, "gold_errors": 0})
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
    order = (["all"] + [lv for lv in levels if lv in by]
             + sorted(k for k in by if k not in levels and k != "all"))
    scores: dict[str, Any] = {}
    report: dict[str, Any] = {"metric": cfg.metric, "timeout_s": cfg.timeout_s, "n_items": len(items),
                              "by_difficulty": scores}
    for k in order:
        b = by[k]
        b["accuracy"] = b["correct"] / b["count"] if b["count"] else 0.0
        scores[k] = b
    report["accuracy"] = by["all"]["accuracy"] if "all" in by else 0.0
    failures: dict[str, int] = defaultdict(int)
    for i in range(len(items)):
        if results[i].get("failure"):
            failures[results[i]["failure"]] += 1
    report["failures"] = {f: failures[f] for f in FAILURES if failures[f]}
    return report
