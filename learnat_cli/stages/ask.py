"""``learnat ask``: answer questions on a SQLite database with the student (LearNAT sec. 3.4, adaptive
demonstration reasoning, plus an adaptive fast path).

Input records: :class:`~learnat_cli.records.Example` rows (learnat JSONL, Spider/BIRD too), or one question.
Output records: :class:`~learnat_cli.records.Prediction` — ``pred`` (final SQL), ``steps`` (the
decomposition), ``decomposed``, ``demos`` (ids of the retrieved demonstrations), ``columns``/``rows`` (first
rows of the result), ``truncated``, ``error``, ``attempts``, ``latency_s``, ``rebound_from`` (below), and
``db_path``, the database file it ran on, so that ``learnat eval``/``score`` find it without ``--db-root``.
Result values are JSON: a BLOB appears as the text of its SQLite literal, ``X'0A1B'``; a non-finite REAL as
``"inf"``/``"-inf"``/``"nan"``.
Report: :class:`AskReport`.

Pipeline per question: schema (:mod:`learnat_cli.schema`, token-budgeted) -> k nearest demonstrations from a
FAISS index (their decompositions are shown to the student) -> the prompt
(:func:`learnat_cli.prompts.student_prompt`, the same function that builds training rows in ``build-pairs``)
-> generate (stopping at the ``Final SQL:`` line) -> parse -> validate with sqlglot against the schema
(unknown tables/columns; a column put on the wrong table of a join is moved to the one table there that has
it when that makes the SQL valid, ``rebound_from`` keeps the student's SQL, ``--no-rebind`` turns it off) ->
execute read-only under a time limit -> on a validation or execution error, one
retry with the error in the prompt, plus a schema-linking hint (``repair_hint``): for an unknown column, the
tables that do have it and the columns the named table has; for an unknown table, the closest names. A
question whose SQL is too deep for Python (RecursionError) or too large for memory (MemoryError) gets that
error in its record; the batch goes on.

Adaptive fast path (the paper leaves open when decomposition is worth its cost): :func:`~learnat_cli.prompts.
decide_decompose` scores the question's complexity from cues that, in Spider's hardness rules, make a query
harder than "easy" (grouping, superlatives/ordering, nesting or negation, two tables named, length). A score
at or below ``fast_threshold`` (default 1) goes straight to SQL with the direct prompt; ``--decompose
always|never`` forces either way. ``build-pairs --sft`` routes training rows by the same rule, so both prompts
are trained.

``max_new_tokens`` default 560: the 99th percentile of the answer lengths (student tokenizer) of the AST
teacher's decompositions of BIRD dev is 531 tokens, the longest of 1,500 Spider train ones 551
(docs/BENCHMARKS.md); generation stops at the end of the ``Final SQL:`` line, so a larger budget costs nothing
on shorter answers.
"""

from __future__ import annotations

import difflib
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from learnat_cli.db import QueryError, execute, resolve_db
from learnat_cli.errors import GenerationError, LearnatError
from learnat_cli.prompts import (  # noqa: F401  (complexity, decide_decompose: re-exported)
    MODES,
    complexity,
    decide_decompose,
    parse_answer,
    retrieve_demos,
    student_prompt,
)
from learnat_cli.records import Example, Prediction, Step, Vote, VoteCandidate
from learnat_cli.schema import DEFAULT_SCHEMA_TOKENS, Schema, load_schema, render_schema
from learnat_cli.sql import SqlParseError, rebind_columns, tables_and_columns

DEFAULT_MAX_NEW_TOKENS = 560
Status = Callable[[str], None] | None  # a phase: "retrieving", "generating", "executing"


def _unknown_names(sql: str, schema: Schema) -> tuple[list[str], list[tuple[str | None, str]]]:
    """(unknown tables, unknown (table or None, column) pairs) of ``sql``, lower-cased; raises SqlParseError.
    Columns of an unknown table are not reported: the table is."""
    tables, cols = tables_and_columns(sql)
    known_t, known_c = schema.names()
    all_cols = set().union(*known_c.values()) if known_c else set()
    unknown_t = sorted(t for t in tables if t not in known_t)
    bad = sorted({(t, c) for t, c in cols
                  if (t is not None and t in known_c and c not in known_c[t])
                  or (t is None and c not in all_cols)},
                 key=lambda x: (x[0] or "", x[1]))
    return unknown_t, bad


def validate_sql(sql: str | None, schema: Schema) -> str | None:
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


def repair_hint(sql: str | None, schema: Schema, max_chars: int = 900) -> str:
    """Schema-linking feedback for a retry: where the unknown tables/columns of ``sql`` actually are.

    Small students mostly fail by putting a real column on the wrong table (``poker_player.Name`` when
    ``Name`` is in ``people``); naming the right table and the named table's real columns is what a retry
    needs. Empty when ``sql`` does not parse or names nothing unknown.
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
    for tname in unknown_t:
        close = difflib.get_close_matches(tname, list(by_low), n=3, cutoff=0.5)
        names = ", ".join(by_low[x].name for x in close) if close else ""
        every = ", ".join(x.name for x in schema.tables)
        lines.append(f"- there is no table {tname}" + (f"; did you mean {names}?" if close else
                                                       f"; tables: {every}"))
    for tab, cname in bad:
        if tab is None:
            lines.append(f"- no table has a column {cname}" + closest(cname, 3))
            continue
        real = by_low[tab]
        line = f"- {real.name} has no column {real_col.get(cname, cname)}"
        where = has_col.get(cname)
        line += (f"; {real_col[cname]} is a column of {', '.join(where)} (join it)" if where
                 else closest(cname, 2))
        lines.append(line + f"; {real.name} has: {', '.join(col.name for col in real.columns)}")
    text = "\n".join(lines)
    return text if len(text) <= max_chars else text[: max_chars - 3].rsplit("\n", 1)[0] + "\n..."


def _result_key(sql: str | None) -> bool:
    return "order by" in (sql or "").lower()


def vote(runs: list[tuple[str | None, Any]],
         logprobs: list[float | None]) -> tuple[list[list[int]], int | None]:
    """Execution-guided self-consistency over candidates ``[(sql, QueryResult or None), ...]`` (the greedy one
    first): ``(groups, chosen)``. Candidates that ran are grouped by result as Spider's official comparison
    matches results (:func:`learnat_cli.metrics.spider_result_eq`: rows as multisets, or in order when the
    group's first SQL has ORDER BY, columns up to a permutation); the largest group wins, ties broken by the
    group's highest mean log-probability, then by holding the greedy candidate. ``chosen``: the greedy
    candidate if it is in the winning group, else that group's most probable one; None when none ran."""
    from learnat_cli.metrics import spider_result_eq

    groups: list[list[int]] = []
    reps: list[tuple[list[tuple], bool]] = []
    for i, (sql, res) in enumerate(runs):
        if res is None:
            continue
        rows = [tuple(r) for r in res.rows]
        for g, (rep_rows, ordered) in enumerate(reps):
            if spider_result_eq(rep_rows, rows, ordered):
                groups[g].append(i)
                break
        else:
            groups.append([i])
            reps.append((rows, _result_key(sql)))
    if not groups:
        return [], None

    def mean_lp(g: list[int]) -> float:
        vals = [lp for lp in (logprobs[i] for i in g) if lp is not None]
        return sum(vals) / len(vals) if vals else -math.inf

    best = max(range(len(groups)), key=lambda g: (len(groups[g]), mean_lp(groups[g]), 0 in groups[g]))
    members = groups[best]
    def lp(i: int) -> float:
        v = logprobs[i]
        return v if v is not None else -math.inf

    chosen = 0 if 0 in members else max(members, key=lp)
    return groups, chosen


@dataclass
class AskConfig:
    decompose: str = "auto"
    fast_threshold: int = 1
    k_demos: int = 3
    schema_tokens: int = DEFAULT_SCHEMA_TOKENS
    schema_format: str = "sql"
    schema_values: bool = True
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    timeout_s: float = 30.0
    max_rows: int = 1000
    show_rows: int = 20
    retries: int = 1
    rebind: bool = True  # move a column bound to the wrong table of a join to the one that has it (no retry)
    samples: int = 1  # > 1: execution-guided self-consistency (the greedy answer + samples - 1 sampled ones)
    temperature: float = 0.8  # of the sampled candidates
    top_p: float = 0.95
    seed: int = 0

    def check(self) -> None:
        """Options checked before anything is loaded (:func:`check_config`)."""
        check_config(self)


def json_value(v: Any) -> Any:
    """A SQLite value as JSON (module docstring: BLOBs as ``X'..'`` text)."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "X'" + bytes(v).hex().upper() + "'"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


@dataclass
class Answer:
    pred: str | None
    steps: list[tuple[str, str]]
    decomposed: bool
    error: str | None
    columns: list[str] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)
    truncated: bool = False
    attempts: int = 0
    demos: list[str] = field(default_factory=list)
    latency_s: float = 0.0
    raw: list[str] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)  # the first prompt sent
    candidates: list[VoteCandidate] = field(default_factory=list)
    vote: Vote | None = None
    tokens: int | None = None  # generated tokens, all attempts and candidates (when the engine counts them)
    rebound_from: str | None = None  # the student's SQL, when ``pred`` is it with columns rebound

    def record(self, base: dict[str, Any] | Example, show_rows: int) -> Prediction:
        data = base.model_dump(exclude_none=True) if isinstance(base, Example) else dict(base)
        data.update(pred=self.pred, steps=[Step(question=q, sql=s) for q, s in self.steps],
                    decomposed=self.decomposed, error=self.error, columns=self.columns,
                    rows=[[json_value(v) for v in r] for r in self.rows[:show_rows]],
                    truncated=self.truncated or len(self.rows) > show_rows, attempts=self.attempts,
                    demos=self.demos, latency_s=round(self.latency_s, 3), rebound_from=self.rebound_from)
        if self.vote is not None:
            data.update(candidates=self.candidates, vote=self.vote)
        if self.tokens is not None:
            data["tokens"] = self.tokens
        return Prediction.model_validate(data)


Generate = Callable[[list[dict], int, float], str]


def prompt_for(question: str, schema: Schema, cfg: AskConfig, *, evidence: str | None = None, index=None,
               exclude_ids: Iterable[str] = ()) -> tuple[list[dict], bool, list[str]]:
    """``(messages, decomposed, demo ids)``: the first prompt ``ask`` sends for a question."""
    schema_text = render_schema(schema, cfg.schema_tokens, question, fmt=cfg.schema_format,
                                values=cfg.schema_values)
    hits = retrieve_demos(index, question, cfg.k_demos, tuple(exclude_ids))
    messages, dec = student_prompt(question, schema_text, evidence, [d for _, d in hits], cfg.decompose,
                                   cfg.fast_threshold)
    return messages, dec, [i for i, _ in hits]


class _Job:
    """One question in flight: :meth:`start` builds the prompt, :meth:`feed` takes each generated answer
    (validate, execute, maybe queue a retry). Shared by :func:`answer` and the batched path of :func:`ask`."""

    def __init__(self, question: str, db_path, cfg: AskConfig, evidence, index, exclude_ids, status: Status):
        self.question, self.db_path, self.cfg = question, db_path, cfg
        self.evidence, self.index, self.exclude_ids = evidence, index, tuple(exclude_ids)
        self.status = status or (lambda _: None)
        self.ans = Answer(pred=None, steps=[], decomposed=False, error=None)
        self.messages: list[dict] = []
        self.done = False
        self.elapsed = 0.0

    def _guard(self, fn, *args) -> None:
        t = time.perf_counter()
        try:
            fn(*args)
        except RecursionError:
            self._fail("too deeply nested to process (RecursionError)")
        except MemoryError:
            self.ans.rows, self.ans.columns = [], []
            self._fail("out of memory while answering (MemoryError)")
        self.elapsed += time.perf_counter() - t

    def _fail(self, msg: str) -> None:
        self.ans.error, self.done = msg, True

    def start(self) -> None:
        self._guard(self._start)

    def _start(self) -> None:
        self.schema = load_schema(self.db_path, n_samples=3 if self.cfg.schema_values else 0)
        if self.index is not None and self.cfg.k_demos > 0:
            self.status("retrieving")
        self.messages, self.ans.decomposed, self.ans.demos = prompt_for(
            self.question, self.schema, self.cfg, evidence=self.evidence, index=self.index,
            exclude_ids=self.exclude_ids)
        self.ans.messages = self.messages

    def feed(self, text: str) -> None:
        self._guard(self._feed, text)

    def _run(self, text: str) -> tuple[list, str | None, Any, str | None, str | None]:
        """``(steps, sql, result or None, error or None, the student's SQL when ``sql`` is it rebound)`` of
        one answer: parsed, validated (a column on the wrong table of a join moved to the one table in scope
        that has it, when that makes the SQL valid: :func:`~learnat_cli.sql.rebind_columns`), executed."""
        steps, sql = parse_answer(text)
        err = validate_sql(sql, self.schema)
        orig = None
        if err is not None and sql and self.cfg.rebind:
            fixed = rebind_columns(sql, self.schema.names()[1])
            if fixed is not None and validate_sql(fixed, self.schema) is None:
                orig, sql, err = sql, fixed, None
        res = None
        if err is None:
            self.status("executing")
            try:
                res = execute(self.db_path, sql or "", timeout_s=self.cfg.timeout_s,
                              max_rows=self.cfg.max_rows)
            except QueryError as e:
                err = e.message
        return steps, sql, res, err, orig

    def _feed(self, text: str, run: tuple | None = None) -> None:
        """One attempt (``run``: its :meth:`_run` outcome when already known): done when it ran, else the
        error and a retry with it, or done when the retries are spent."""
        ans, cfg = self.ans, self.cfg
        ans.attempts += 1
        ans.raw.append(text)
        ans.steps, ans.pred, res, err, ans.rebound_from = run if run is not None else self._run(text)
        if res is not None:
            ans.columns, ans.rows, ans.truncated, ans.error = res.columns, res.rows, res.truncated, None
            self.done = True
            return
        ans.error = err
        if ans.attempts > cfg.retries:
            self.done = True
            return
        hint = repair_hint(ans.pred, self.schema)
        self.messages = self.messages + [
            {"role": "assistant", "content": text},
            {"role": "user", "content": f"That SQL is wrong: {err}." + (f"\n{hint}\n" if hint else " ")
                                        + "Use only the tables and columns of the schema and answer again "
                                        "in the same format."}]

    def feed_candidates(self, cands: list) -> None:
        """The first attempt with several candidates (:class:`~learnat_cli.models.Candidate`, the greedy one
        first): each validated and executed read-only, grouped by result, the largest group wins
        (:func:`vote`). When none runs, the greedy one goes on as a plain attempt (retry with the error)."""
        self._guard(self._feed_candidates, cands)

    def _feed_candidates(self, cands: list) -> None:
        runs = [self._run(c.text) for c in cands]
        groups, winner = vote([(r[1], r[2]) for r in runs], [c.logprob for c in cands])
        group_of = {i: g for g, members in enumerate(groups) for i in members}
        self.ans.candidates = [VoteCandidate(sql=sql, error=err, logprob=None if c.logprob is None
                                             else round(c.logprob, 4), group=group_of.get(i), greedy=i == 0)
                               for i, (c, (_, sql, _, err, _)) in enumerate(zip(cands, runs, strict=True))]
        self.ans.vote = Vote(groups=groups, winner=None if winner is None else group_of[winner],
                             chosen=winner)
        k = 0 if winner is None else winner
        self._feed(cands[k].text, runs[k])

    def count_tokens(self, counts: list[int] | None, row: int | None) -> None:
        """Add the new tokens the engine counted for this job's last call (``row``: its row in a batch)."""
        if not counts:
            return
        n = sum(counts) if row is None else (counts[row] if row < len(counts) else 0)
        self.ans.tokens = (self.ans.tokens or 0) + int(n)

    def finish(self, gen_s: float = 0.0) -> Answer:
        self.ans.latency_s = self.elapsed + gen_s
        return self.ans


def answer(question: str, db_path, generate, cfg: AskConfig, *, evidence: str | None = None,
           index=None, exclude_ids: Iterable[str] = (), status: Status = None) -> Answer:
    """Answer one question. ``generate``: a student from :func:`load` (needed for ``cfg.samples > 1``), or a
    function ``(messages, max_new_tokens, temperature) -> text``; ``status(phase)`` is told each phase. A
    RecursionError or MemoryError becomes the answer's error."""
    job = _Job(question, db_path, cfg, evidence, index, exclude_ids, status)
    return job.finish(_run_single(job, generate, cfg))


# ----------------------------------------------------------------------------------------------------
# The stage: records in, records out, plus a report


@dataclass
class AskReport:
    selected: int = 0  # questions chosen by limit/sample (the total, done ones included)
    skipped: int = 0  # already in the output (resume)
    answered: int = 0
    ok: int = 0  # ran without error

    def summary(self) -> str:
        return (f"answered {self.answered} question(s); {self.ok} ran without error"
                + (f"; {self.skipped} already done" if self.skipped else ""))


def select(examples: Iterable[Example], *, limit: int | None = None, sample: int | None = None,
           seed: int = 0) -> list[Example]:
    """``sample`` questions drawn with ``seed`` (kept in input order), then the first ``limit``. Both count
    the total, so a resumed run answers the same questions."""
    for name, v in (("limit", limit), ("sample", sample)):
        if v is not None and v < 1:
            raise LearnatError(f"--{name} must be at least 1", field=name)
    rows = list(examples)
    if sample is not None and sample < len(rows):
        keep = set(random.Random(seed).sample(range(len(rows)), sample))
        rows = [r for i, r in enumerate(rows) if i in keep]
    return rows[:limit] if limit is not None else rows


def check_config(cfg: AskConfig) -> None:
    """Options checked before anything is loaded."""
    from learnat_cli.schema import FORMATS

    if cfg.decompose not in MODES:
        raise LearnatError(f"--decompose must be one of {', '.join(MODES)}", field="decompose")
    if cfg.schema_format not in FORMATS:
        raise LearnatError(f"--schema-format must be one of {', '.join(FORMATS)}", field="schema_format")
    for name in ("max_new_tokens", "timeout_s"):
        if getattr(cfg, name) <= 0:
            raise LearnatError("must be positive", field=name)
    if cfg.samples < 1:
        raise LearnatError(f"--samples must be at least 1 (1: the greedy answer only), not {cfg.samples}",
                           field="samples")
    if cfg.samples > 1 and not cfg.temperature > 0:
        raise LearnatError("--samples above 1 needs --temperature above 0", field="temperature")
    if not 0 < cfg.top_p <= 1:
        raise LearnatError("--top-p must be in (0, 1]", field="top_p")
    if cfg.retries < 0 or cfg.k_demos < 0:
        raise LearnatError("must not be negative", field="retries" if cfg.retries < 0 else "k")


def load(model: str | None = None, adapter: str | None = None, backend: str = "auto",
         device: str = "auto", index: str | None = None, progress=None, *, base_url: str | None = None,
         api_key: str | None = None, concurrency: int = 8):
    """``(student, DemoIndex or None)`` for :func:`ask`: the student on its engine
    (:func:`learnat_cli.models.open_student`) and the demonstration index, both on ``device``."""
    from learnat_cli.models import open_student, resolve_device

    resolve_device(device)  # a bad --device fails before any loading
    demo_index = None
    if index:
        from learnat_cli.stages.index import DemoIndex

        demo_index = DemoIndex(index, device=device)
    lm = open_student(model, adapter, backend, device=device, progress=progress, base_url=base_url,
                      api_key=api_key, concurrency=concurrency)
    return lm, demo_index


def as_generate(lm) -> Generate:
    """A :data:`Generate` from a student (greedy, stopping at the ``Final SQL:`` line), or ``lm`` itself when
    it already is one."""
    if not hasattr(lm, "chat"):
        return lm
    return lambda messages, n, t: lm.chat(messages, max_new_tokens=n, temperature=t, stop_at_final=True)[0]


def ask_one(question: str, db_path, lm, cfg: AskConfig, *, evidence: str | None = None, index=None,
            status: Status = None) -> Prediction:
    """One question (``learnat ask "..."``): its Prediction record, id ``ask-0``."""
    ans = answer(question, db_path, lm, cfg, evidence=evidence, index=index, status=status)
    base = {"id": "ask-0", "question": question, "db_path": str(Path(db_path).resolve())}
    if evidence:
        base["evidence"] = evidence
    return ans.record(base, cfg.show_rows)


def resolve_batch_size(batch_size: int | None, lm) -> int:
    """``--batch-size``: 0/None (auto) -> the engine's own (``lm.batch_size``: 8 on CPU, 32 on CUDA, the
    concurrency of a served student), 1 for a plain function."""
    if batch_size is not None and batch_size < 0:
        raise LearnatError("--batch-size must be at least 1 (0: auto)", field="batch_size")
    if not batch_size:
        return int(getattr(lm, "batch_size", 1) or 1)
    return batch_size


def ask(examples: Iterable[Example], lm, cfg: AskConfig, report: AskReport, *, db: str | None = None,
        db_root: str | None = None, evidence: str | None = None, index=None, skip: Iterable[str] = (),
        batch_size: int | None = 1) -> Iterator[Prediction]:
    """The ``learnat ask`` stage: a Prediction per example, in input order (its own id is never retrieved as
    its demonstration); ``skip``: ids already done. ``lm``: a student (:func:`load`) or a :data:`Generate`.
    ``batch_size`` > 1 (0: auto, :func:`resolve_batch_size`): questions of similar prompt length generated
    together (greedy), retries in later rounds; with ``cfg.samples`` > 1 each question's candidates are
    generated together instead."""
    batch_size = resolve_batch_size(batch_size, lm)
    skip = set(skip)
    rows = list(examples)
    report.selected = len(rows)
    todo = [ex for ex in rows if ex.id not in skip]
    report.skipped = len(rows) - len(todo)
    batched = batch_size > 1 and hasattr(lm, "chat_batch") and cfg.samples == 1
    window = batch_size * 4 if batched else 1
    for w in range(0, len(todo), window):
        chunk = todo[w:w + window]
        jobs = []
        for ex in chunk:
            path = resolve_db(db, db_id=ex.db_id, db_root=db_root, db_path=ex.db_path)
            job = _Job(ex.question, path, cfg, ex.evidence or evidence, index, (ex.id,), None)
            jobs.append((ex, path, job))
        if batched:
            gen_s = _run_batched([j for _, _, j in jobs], lm, cfg, batch_size)
        else:
            gen_s = [_run_single(j, lm, cfg) for _, _, j in jobs]
        for (ex, path, job), g in zip(jobs, gen_s, strict=True):
            ans = job.finish(g)
            report.answered += 1
            report.ok += ans.error is None
            yield ans.record(ex.model_copy(update={"db_path": str(Path(path).resolve())}), cfg.show_rows)


def _run_single(job: _Job, lm, cfg: AskConfig) -> float:
    """Generate for one job until it is done: with ``cfg.samples`` > 1 its first attempt is a vote over
    candidates (``lm.sample``), retries are greedy."""
    generate = as_generate(lm)
    job.start()
    gen_s = 0.0
    first = True
    while not job.done:
        job.status("generating")
        t = time.perf_counter()
        try:
            if first and cfg.samples > 1:
                if not hasattr(lm, "sample"):
                    raise LearnatError("--samples needs a student that samples (models.open_student)",
                                       field="samples")
                cands = lm.sample(job.messages, 1, max_new_tokens=cfg.max_new_tokens, stop_at_final=True)
                cands += lm.sample(job.messages, cfg.samples - 1, temperature=cfg.temperature,
                                   top_p=cfg.top_p, seed=cfg.seed, max_new_tokens=cfg.max_new_tokens,
                                   stop_at_final=True)
            else:
                text = generate(job.messages, cfg.max_new_tokens, 0.0)
        except MemoryError:
            job._fail("out of memory while generating (MemoryError)")
            break
        except GenerationError as e:
            job._fail(e.message)
            break
        gen_s += time.perf_counter() - t
        job.count_tokens(getattr(lm, "last_token_counts", None), None)
        if first and cfg.samples > 1:
            job.feed_candidates(cands)
        else:
            job.feed(text)
        first = False
    return gen_s


def _run_batched(jobs: list[_Job], lm, cfg: AskConfig, batch_size: int) -> list[float]:
    """Generate for every unfinished job, ``batch_size`` prompts of similar length at a time, until all are
    done; each job is charged its share of its batches' time. A prompt the engine refused
    (:class:`GenerationError` in its place) fails that job only."""
    for j in jobs:
        j.start()
    gen_s = [0.0] * len(jobs)
    while True:
        live = sorted((i for i, j in enumerate(jobs) if not j.done), key=lambda i: _prompt_chars(jobs[i]))
        if not live:
            return gen_s
        for b in range(0, len(live), batch_size):
            group = live[b:b + batch_size]
            t = time.perf_counter()
            try:
                texts = lm.chat_batch([jobs[i].messages for i in group], max_new_tokens=cfg.max_new_tokens,
                                      stop_at_final=True)
            except MemoryError:
                for i in group:
                    jobs[i]._fail("out of memory while generating (MemoryError)")
                continue
            dt = (time.perf_counter() - t) / len(group)
            counts = getattr(lm, "last_token_counts", None)
            for k, i in enumerate(group):
                jobs[i].count_tokens(counts, k)
            for i, text in zip(group, texts, strict=True):
                gen_s[i] += dt
                if isinstance(text, GenerationError):
                    jobs[i]._fail(text.message)
                else:
                    jobs[i].feed(text)


def _prompt_chars(job: _Job) -> int:
    return sum(len(m["content"]) for m in job.messages)
