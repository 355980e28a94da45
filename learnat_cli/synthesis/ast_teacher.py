"""The offline AST teacher (LearNAT sec. 3.2 synthesis without an LLM): decomposition steps derived from the
gold query's own AST.

Inputs: a :class:`~learnat_cli.synthesis.protocol.State` (gold SQL, steps so far). Output: proposals — the
next ladder step plus variants the AST pruner must reject. :class:`AstTeacher` implements the teacher
protocol; deterministic for a given ``seed`` (its random choices are seeded from a stable digest, never from
``hash()``, which Python randomises per process).

``gold_ladder(gold, question)``: the progressive steps, in order — every sub-query (innermost first) and each
side of a set operation, then for the main query: its FROM/JOIN part, + WHERE, + GROUP BY with the gold
projection, + HAVING, and last the full gold (ORDER BY / LIMIT / DISTINCT), whose sub-question is the original
question. Steps that would repeat an earlier one are dropped. ``join_step=False`` (``--teacher
ast:fold-joins``) leaves out the join-only rung, so a join enters the ladder with the first step that says
what it is for (its WHERE, GROUP BY or the whole question): a student trained on the join-only rung learns to
open a decomposition with a join whose tables it must pick before any step reads the question
(docs/BENCHMARKS.md, run 2).
``perturbations(step, state, rng)``: variants the AST pruner must reject (a changed value, a swapped column).
"""

from __future__ import annotations

import random
import zlib
from functools import lru_cache

from sqlglot import exp

from learnat_cli.sql import GoldAst, parse
from learnat_cli.synthesis.protocol import Proposal, State, Teacher

_AGG_WORDS = {exp.Count: "the number", exp.Sum: "the total", exp.Avg: "the average", exp.Max: "the maximum",
              exp.Min: "the minimum"}


def _tables(sel: exp.Select) -> list[str]:
    out = []
    src = sel.args.get("from_") or sel.args.get("from")
    for part in [src, *(sel.args.get("joins") or [])]:
        if part is None:
            continue
        t = part.this
        if isinstance(t, exp.Table):
            out.append(t.name)
    return out


def _plain_projection(sel: exp.Select) -> list[exp.Expression]:
    cols = [e.copy() for e in sel.expressions if isinstance(e, exp.Column)]
    return cols or [exp.Star()]


def _text(e: exp.Expression | None, dialect: str) -> str:
    return e.sql(dialect=dialect) if e is not None else ""


def _describe_select(sel: exp.Select, dialect: str) -> str:
    parts = []
    for e in sel.expressions:
        inner = e.this if isinstance(e, exp.Alias) else e
        for cls, word in _AGG_WORDS.items():
            if isinstance(inner, cls):
                arg = inner.this
                what = "rows" if isinstance(arg, exp.Star) or arg is None else _text(arg, dialect)
                parts.append(f"{word} of {what}" if cls is not exp.Count else f"the number of {what}")
                break
        else:
            parts.append(_text(inner, dialect))
    return ", ".join(parts)


def _rebuild(sel: exp.Select, keep: set[str], projection: list | None = None) -> exp.Select:
    s = sel.copy()
    for key in ("where", "group", "having", "order", "limit", "offset", "distinct"):
        if key not in keep and s.args.get(key) is not None:
            s.set(key, None)
    if projection is not None:
        s.set("expressions", projection)
    return s


def _main_select(tree: exp.Expression) -> exp.Select | None:
    while isinstance(tree, exp.Subquery):
        tree = tree.this
    return tree if isinstance(tree, exp.Select) else None


@lru_cache(maxsize=4096)
def gold_ladder(gold: str, question: str, dialect: str = "sqlite", join_step: bool = True
                ) -> tuple[Proposal, ...]:
    tree = parse(gold, dialect)
    steps: list[Proposal] = []
    seen: set[str] = set()

    def add(q: str, node: exp.Expression, kind: str = "ladder"):
        sql = node.sql(dialect=dialect)
        if sql not in seen:
            seen.add(sql)
            steps.append(Proposal(question=q, sql=sql, kind=kind))

    # sub-queries, innermost first (deepest nodes first)
    subs = [s for s in tree.find_all(exp.Select) if s is not tree and _main_select(tree) is not s]
    subs.sort(key=lambda s: -s.depth)
    for s in subs:
        tabs = ", ".join(_tables(s)) or "the data"
        cond = _text(s.args.get("where").this, dialect) if s.args.get("where") is not None else ""
        q = f"What is {_describe_select(s, dialect)} in {tabs}" + (f" where {cond}" if cond else "") + "?"
        add(q, s, "subquery")
    if isinstance(tree, exp.SetOperation):
        add(question, tree, "final")
        return tuple(steps)
    sel = _main_select(tree)
    if sel is None:
        add(question, tree, "final")
        return tuple(steps)
    tabs = _tables(sel)
    tab_txt = " joined with ".join(tabs) if tabs else "the data"
    proj = _plain_projection(sel)
    clauses = ("where", "group", "having", "order", "limit", "distinct")
    has = {k for k in clauses if sel.args.get(k) is not None}
    if sel.args.get("joins") and join_step:
        add(f"Which rows of {tab_txt} match on their join keys?", _rebuild(sel, set(), proj), "from")
    if "where" in has:
        add(f"Which {tab_txt} rows satisfy {_text(sel.args['where'].this, dialect)}?",
            _rebuild(sel, {"where"}, proj), "where")
    if "group" in has:
        grp = ", ".join(_text(g, dialect) for g in sel.args["group"].expressions)
        add(f"For each {grp}, what is {_describe_select(sel, dialect)}?", _rebuild(sel, {"where", "group"}),
            "group")
    if "having" in has:
        add(f"Which groups have {_text(sel.args['having'].this, dialect)}?",
            _rebuild(sel, {"where", "group", "having"}), "having")
    if has & {"order", "limit", "distinct"} and not has & {"group", "where"}:
        add(f"What is {_describe_select(sel, dialect)} for every row of {tab_txt}?",
            _rebuild(sel, set()), "project")
    add(question, tree, "final")
    final_sql = tree.sql(dialect=dialect)
    if steps[-1].sql == final_sql:  # the step that completes the gold answers the original question
        steps[-1] = Proposal(question=question, sql=final_sql, kind="final")
    return tuple(steps)


def perturbations(step: Proposal, state: State, rng: random.Random,
                  dialect: str = "sqlite") -> list[Proposal]:
    """Variants of ``step`` that are not part of the gold AST: one literal changed, one column renamed."""
    out = []
    tree = parse(step.sql, dialect)
    lits = [lit for lit in tree.find_all(exp.Literal)]
    if lits:
        t2 = tree.copy()
        lit = rng.choice(list(t2.find_all(exp.Literal)))
        if lit.is_string:
            lit.replace(exp.Literal.string(lit.this + "_x"))
        else:
            try:
                lit.replace(exp.Literal.number(float(lit.this) + 1 if "." in lit.this else int(lit.this) + 1))
            except ValueError:
                lit.replace(exp.Literal.number(1))
        out.append(Proposal(question=step.question, sql=t2.sql(dialect=dialect), kind="perturbed"))
    cols = [c for c in tree.find_all(exp.Column) if c.name and not isinstance(c.parent, exp.Select)]
    if cols:
        t3 = tree.copy()
        cands = [c for c in t3.find_all(exp.Column) if c.name and not isinstance(c.parent, exp.Select)]
        c = rng.choice(cands)
        c.set("this", exp.to_identifier(c.name + "_alt"))
        out.append(Proposal(question=step.question, sql=t3.sql(dialect=dialect), kind="perturbed"))
    return out


@lru_cache(maxsize=1024)
def _gold_ast(gold: str, dialect: str) -> GoldAst:
    return GoldAst(gold, dialect)


def stable_seed(*parts: object) -> int:
    """A 32-bit seed from ``parts`` that is the same in every process (unlike ``hash()``)."""
    return zlib.crc32("\x00".join(map(str, parts)).encode("utf-8"))


class AstTeacher(Teacher):
    """Proposes steps derived from the gold AST: the next ladder step the earlier steps have not covered, and
    (``perturb``) one literal changed, one column renamed and a repeat of the last step. Deterministic given
    ``seed``."""

    name = "ast"

    def __init__(self, *, dialect: str = "sqlite", seed: int = 0, perturb: bool = True,
                 join_step: bool = True):
        super().__init__()
        self.dialect = dialect
        self.join_step = join_step
        if not join_step:
            self.name = "ast:fold-joins"
        self.seed = seed
        self.perturb = perturb

    async def propose(self, state: State, k: int) -> list[Proposal]:
        self.usage.calls += 1
        ladder = gold_ladder(state.gold, state.question, self.dialect, self.join_step)
        gold = _gold_ast(state.gold, self.dialect)
        done: frozenset = frozenset()
        for _, s in state.steps:
            done |= gold.covered(s)
        # the last rung (the gold) stays available even when earlier steps already cover every gold node
        fresh = [p for p in ladder if p is ladder[-1] or not (gold.covered(p.sql) <= done)]
        rng = random.Random(stable_seed(self.seed, state.gold, len(state.steps)))
        # the next ladder step is the progressive candidate; skipping ahead would make every trajectory a
        # single "answer the whole question" step, which teaches no decomposition
        out: list[Proposal] = fresh[:1]
        if self.perturb and fresh:
            out += perturbations(fresh[0], state, rng, self.dialect)
            if state.steps:
                q, s = state.steps[-1]
                out.append(Proposal(question=q, sql=s, kind="repeat"))
        return out[:k]
