"""``learnat ask``: answer questions on a SQLite database with the student (LearNAT sec. 3.4, adaptive
demonstration reasoning, plus an adaptive fast path).

Input: a question (or :class:`~learnat_cli.records.Example` rows, Spider/BIRD too). Output records:
:class:`~learnat_cli.records.Prediction` — ``pred`` (final SQL), ``steps`` (the decomposition), ``decomposed``,
``demos`` (ids of the retrieved demonstrations), ``columns``/``rows`` (first rows of the result), ``error``,
``attempts``, ``latency_s`` — ready for ``learnat eval``.

Pipeline per question: schema (token-budgeted) -> k nearest demonstrations from a FAISS index (their
decompositions are shown to the student) -> decide whether to decompose -> generate -> parse -> validate with
sqlglot against the schema (unknown tables/columns) -> execute read-only under a time limit -> on a validation or
execution error, one retry with the error in the prompt, plus a schema-linking hint (``repair_hint``): for an unknown
column, the tables that do have it and the columns the named table has; for an unknown table, the closest names.

Adaptive fast path (the paper leaves open when decomposition is worth its cost). ``decide_decompose`` scores the
question's complexity from cues that, in Spider's hardness rules, make a query harder than "easy": aggregation per
group ("each", "per", "for every"), superlatives and ordering ("most", "highest", "top"), nesting or comparison to
an aggregate ("than the average", "never", "not", "both", "except"), several schema tables mentioned, and length.
A score at or below ``fast_threshold`` (default 1) goes straight to SQL with the direct prompt. The benchmark
(``benchmarks/bench_ask.py``) reports the rule's precision and recall against Spider's hardness labels.
``--decompose always|never`` forces either way.
"""

from __future__ import annotations

import difflib
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from learnat_cli.db import QueryError, Schema, execute, load_schema, render_schema
from learnat_cli.errors import LearnatError
from learnat_cli.prompts import Demo, parse_answer, student_messages
from learnat_cli.sql import SqlParseError, tables_and_columns

MODES = ("auto", "always", "never")

_GROUP = re.compile(r"\b(each|per|every|for all|group|respective(ly)?|by (?:each|every))\b", re.I)
_ORDER = re.compile(r"\b(most|least|highest|lowest|largest|smallest|top|maximum|minimum|oldest|youngest|"
                    r"best|worst|first|last|order(?:ed)?|sort(?:ed)?|descending|ascending|rank)\b", re.I)
_NEST = re.compile(r"(than (?:the )?(?:average|avg|mean|any|all)|\bnever\b|\bnot\b|\bno\b|\bwithout\b|"
                   r"\bboth\b|\bexcept\b|\bbut not\b|\beither\b|\bat least\b|\bat most\b|\bmore than\b|"
                   r"\bless than\b|\bfewer than\b|\bintersect|\bor\b)", re.I)


def complexity(question: str, schema: Optional[Schema] = None) -> int:
    """A small integer: how many complexity cues the question shows (see module docstring)."""
    q = question or ""
    score = 0
    score += 1 if _GROUP.search(q) else 0
    score += 1 if _ORDER.search(q) else 0
    score += 1 if _NEST.search(q) else 0
    score += 1 if len(q.split()) > 18 else 0
    if schema is not None:
        words = {w.rstrip("s") for w in re.findall(r"[a-z]+", q.lower()) if len(w) > 2}
        hits = 0
        for t in schema.tables:
            parts = {p.rstrip("s") for p in re.split(r"[^a-z]+", t.name.lower()) if len(p) > 2}
            if parts and parts & words:
                hits += 1
        score += 1 if hits >= 2 else 0
    return score


def decide_decompose(question: str, schema: Optional[Schema], mode: str = "auto", threshold: int = 1) -> bool:
    if mode == "always":
        return True
    if mode == "never":
        return False
    if mode != "auto":
        raise LearnatError(f"--decompose must be one of {', '.join(MODES)}", field="decompose")
    return complexity(question, schema) > threshold


def _unknown_names(sql: str, schema: Schema) -> tuple[list[str], list[tuple[Optional[str], str]]]:
    """(unknown tables, unknown (table or None, column) pairs) of ``sql``, lower-cased; raises SqlParseError.
    Columns of an unknown table are not reported: the table is."""
    tables, cols = tables_and_columns(sql)
    known_t, known_c = schema.names()
    all_cols = set().union(*known_c.values()) if known_c else set()
    unknown_t = sorted(t for t in tables if t not in known_t)
    bad = sorted({(t, c) for t, c in cols
                  if (t is not None and t in known_c and c not in known_c[t]) or (t is None and c not in all_cols)},
                 key=lambda x: (x[0] or "", x[1]))
    return unknown_t, bad


def validate_sql(sql: Optional[str], schema: Schema) -> Optional[str]:
    """An error message when ``sql`` does not parse or names unknown tables/columns; None when it is fine."""
    if not sql or not sql.strip():
        return "no SQL in the answer"
    try:
        unknown_t, bad = _unknown_names(sql, schema)
    except SqlParseError as e:
        return e.message
    if unknown_t:
        return f"unknown table(s): {', '.join(unknown_t)}"
    if bad:
        return f"unknown column(s): {', '.join(sorted(f'{t}.{c}' if t else c for t, c in bad))}"
    return None


def repair_hint(sql: Optional[str], schema: Schema, max_chars: int = 900) -> str:
    """Schema-linking feedback for a retry: where the unknown tables/columns of ``sql`` actually are.

    Small students mostly fail by putting a real column on the wrong table (``poker_player.Name`` when ``Name`` is in
    ``people``); naming the right table and the named table's real columns is what a retry needs. Empty when ``sql``
    does not parse or names nothing unknown.
    """
    if not sql:
        return ""
    try:
        unknown_t, bad = _unknown_names(sql, schema)
    except SqlParseError:
        return ""
    by_low = {t.name.lower(): t for t in schema.tables}
    has_col: dict[str, list[str]] = {}
    real_col: dict[str, str] = {}
    for t in schema.tables:
        for c in t.columns:
            has_col.setdefault(c.name.lower(), []).append(t.name)
            real_col.setdefault(c.name.lower(), c.name)

    def closest(c: str, n: int) -> str:
        close = difflib.get_close_matches(c, list(has_col), n=n, cutoff=0.6)
        return f"; closest: {', '.join(f'{has_col[x][0]}.{real_col[x]}' for x in close)}" if close else ""

    lines: list[str] = []
    for t in unknown_t:
        close = difflib.get_close_matches(t, list(by_low), n=3, cutoff=0.5)
        lines.append(f"- there is no table {t}" + (f"; did you mean {', '.join(by_low[c].name for c in close)}?"
                                                   if close else f"; tables: {', '.join(x.name for x in schema.tables)}"))
    for t, c in bad:
        if t is None:
            lines.append(f"- no table has a column {c}" + closest(c, 3))
            continue
        real = by_low[t]
        line = f"- {real.name} has no column {real_col.get(c, c)}"
        where = has_col.get(c)
        line += f"; {real_col[c]} is a column of {', '.join(where)} (join it)" if where else closest(c, 2)
        lines.append(line + f"; {real.name} has: {', '.join(col.name for col in real.columns)}")
    text = "\n".join(lines)
    return text if len(text) <= max_chars else text[: max_chars - 3].rsplit("\n", 1)[0] + "\n..."


@dataclass
class AskConfig:
    decompose: str = "auto"
    fast_threshold: int = 1
    k_demos: int = 3
    schema_tokens: int = 1500
    max_new_tokens: int = 320
    timeout_s: float = 30.0
    max_rows: int = 1000
    show_rows: int = 20
    retries: int = 1
    temperature: float = 0.0


@dataclass
class Answer:
    pred: Optional[str]
    steps: list[tuple[str, str]]
    decomposed: bool
    error: Optional[str]
    columns: list[str] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)
    truncated: bool = False
    attempts: int = 0
    demos: list[str] = field(default_factory=list)
    latency_s: float = 0.0
    raw: list[str] = field(default_factory=list)

    def record(self, base: dict[str, Any], show_rows: int) -> dict[str, Any]:
        out = dict(base)
        out.update(pred=self.pred, steps=[{"question": q, "sql": s} for q, s in self.steps],
                   decomposed=self.decomposed, error=self.error, columns=self.columns,
                   rows=[list(r) for r in self.rows[:show_rows]], truncated=self.truncated or
                   len(self.rows) > show_rows, attempts=self.attempts, demos=self.demos,
                   latency_s=round(self.latency_s, 3))
        return out


Generate = Callable[[list[dict], int, float], str]


def answer(question: str, db_path, generate: Generate, cfg: AskConfig, *, evidence: Optional[str] = None,
           index=None, exclude_ids: tuple = ()) -> Answer:
    """Answer one question. ``generate(messages, max_new_tokens, temperature) -> text``."""
    t0 = time.perf_counter()
    schema = load_schema(db_path)
    schema_text = render_schema(schema, cfg.schema_tokens, question)
    demos: list[Demo] = []
    demo_ids: list[str] = []
    if index is not None and cfg.k_demos > 0:
        for _, d in index.search(question, cfg.k_demos, exclude_ids=exclude_ids, exclude_questions=[question]):
            demos.append(Demo(question=d["question"], sql=d.get("sql") or "",
                              steps=[tuple(s) for s in d.get("steps") or []], evidence=d.get("evidence")))
            demo_ids.append(d.get("id", ""))
    dec = decide_decompose(question, schema, cfg.decompose, cfg.fast_threshold)
    if not dec:
        demos = [Demo(question=d.question, sql=d.sql, evidence=d.evidence) for d in demos]  # no steps shown
    messages = student_messages(question, schema_text, evidence, demos, decompose=dec)
    ans = Answer(pred=None, steps=[], decomposed=dec, error=None, demos=demo_ids)
    for attempt in range(cfg.retries + 1):
        ans.attempts = attempt + 1
        text = generate(messages, cfg.max_new_tokens, cfg.temperature)
        ans.raw.append(text)
        steps, final = parse_answer(text)
        ans.steps, ans.pred = steps, final
        err = validate_sql(final, schema)
        if err is None:
            try:
                res = execute(db_path, final, timeout_s=cfg.timeout_s, max_rows=cfg.max_rows)
                ans.columns, ans.rows, ans.truncated, ans.error = res.columns, res.rows, res.truncated, None
                break
            except QueryError as e:
                err = e.message
        ans.error = err
        if attempt < cfg.retries:
            hint = repair_hint(final, schema)
            messages = messages + [
                {"role": "assistant", "content": text},
                {"role": "user", "content": f"That SQL is wrong: {err}." + (f"\n{hint}\n" if hint else " ")
                                            + "Use only the tables and columns of the schema and answer again "
                                            "in the same format."}]
    ans.latency_s = time.perf_counter() - t0
    return ans
