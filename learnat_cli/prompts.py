"""The student's prompt and answer format, shared by training (``build-pairs``, ``sft``, ``mdpo``) and
inference (``ask``) so that what the student learns is what it is asked.

A decomposition answer looks like::

    Step 1: Which cards are red?
    SQL: SELECT id FROM cards WHERE color = 'R'
    Step 2: ...
    Final SQL: SELECT ...

Templates are text files in ``learnat_cli/prompts/``; set ``LEARNAT_PROMPTS`` (or pass ``prompts_dir``) to a
folder holding files of the same names to override any of them.

:func:`student_prompt` is the one place a student prompt is composed: ``ask`` and ``build-pairs`` both call it
with the rendered schema (:mod:`learnat_cli.schema`), the retrieved demonstrations (:func:`retrieve_demos`)
and the ``--decompose`` mode, so a training row's prompt and the prompt ``ask`` sends for the same example are
the same bytes (a test checks it). The fast-path rule (:func:`complexity`, :func:`decide_decompose`) reads the
question and the table names of the rendered schema text only, so both sides route a question alike.
:func:`extract_sql` is the one extraction of SQL from model text (student answers and teacher proposals).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

_BUILTIN = Path(__file__).with_name("prompts")


def template(name: str, prompts_dir: str | os.PathLike | None = None) -> str:
    """The text of template ``name`` (``student_system``, ...): the override folder wins if it has it."""
    override = prompts_dir or os.environ.get("LEARNAT_PROMPTS")
    return _read(name, str(override) if override else None)


@lru_cache(maxsize=64)
def _read(name: str, override: str | None) -> str:
    if override:
        p = Path(override) / f"{name}.txt"
        if p.exists():
            return p.read_text(encoding="utf-8").rstrip("\n")
    return (_BUILTIN / f"{name}.txt").read_text(encoding="utf-8").rstrip("\n")


@dataclass
class Demo:
    """A retrieved demonstration: a solved question with its decomposition."""

    question: str
    sql: str
    steps: Sequence[tuple[str, str]] = ()
    evidence: str | None = None


def one_line(sql: str) -> str:
    return " ".join(sql.split())


def format_step(index: int, sub_question: str, sql: str) -> str:
    """One step as the student writes it (1-based ``index``), ending with a newline."""
    return f"Step {index}: {' '.join(sub_question.split())}\nSQL: {one_line(sql)}\n"


def format_final(sql: str) -> str:
    return f"Final SQL: {one_line(sql)}\n"


def format_answer(steps: Sequence[tuple[str, str]], final_sql: str) -> str:
    """The whole assistant answer: the steps, then the final SQL."""
    return "".join(format_step(i, q, s) for i, (q, s) in enumerate(steps, 1)) + format_final(final_sql)


def format_demo(demo: Demo) -> str:
    head = f"Question: {demo.question}\n"
    if demo.evidence:
        head = f"Evidence: {demo.evidence}\n" + head
    return head + format_answer(list(demo.steps), demo.sql)


def user_message(question: str, schema: str, evidence: str | None = None,
                 demos: Sequence[Demo] = (), prompts_dir=None) -> str:
    demo_text = ""
    if demos:
        # retrieved demonstrations may come from other databases: a small student otherwise copies their
        # tables
        demo_text = ("Similar solved examples (possibly on other databases: follow their reasoning, but use "
                     "only the tables and columns of the schema below):\n\n"
                     + "\n".join(format_demo(d) for d in demos) + "\n")
    ev = f"Evidence: {evidence}\n" if evidence else ""
    return template("student_user", prompts_dir).format(
        demonstrations=demo_text, schema=schema, evidence=ev, question=question)


def student_messages(question: str, schema: str, evidence: str | None = None, demos: Sequence[Demo] = (),
                     decompose: bool = True, prompts_dir=None) -> list[dict[str, str]]:
    """System + user chat messages for the student (``decompose=False`` is the fast path's direct prompt; the
    demonstrations then show no steps)."""
    system = template("student_system" if decompose else "student_direct_system", prompts_dir)
    if not decompose:
        demos = [Demo(question=d.question, sql=d.sql, evidence=d.evidence) for d in demos]
    return [{"role": "system", "content": system},
            {"role": "user", "content": user_message(question, schema, evidence, demos, prompts_dir)}]


# ----------------------------------------------------------------------------------------------------
# Adaptive fast path: which prompt a question gets (the same rule in training rows and in ``ask``)

MODES = ("auto", "always", "never")

_GROUP = re.compile(r"\b(each|per|every|for all|group|respective(ly)?|by (?:each|every))\b", re.I)
_ORDER = re.compile(r"\b(most|least|highest|lowest|largest|smallest|top|maximum|minimum|oldest|youngest|"
                    r"best|worst|first|last|order(?:ed)?|sort(?:ed)?|descending|ascending|rank)\b", re.I)
_NEST = re.compile(r"(than (?:the )?(?:average|avg|mean|any|all)|\bnever\b|\bnot\b|\bno\b|\bwithout\b|"
                   r"\bboth\b|\bexcept\b|\bbut not\b|\beither\b|\bat least\b|\bat most\b|\bmore than\b|"
                   r"\bless than\b|\bfewer than\b|\bintersect|\bor\b)", re.I)


def _table_names(schema: Any) -> list[str]:
    if schema is None:
        return []
    if isinstance(schema, str):
        from learnat_cli.schema import table_names_in

        return table_names_in(schema)
    return [t.name for t in schema.tables]


def complexity(question: str, schema: Any = None) -> int:
    """How many complexity cues the question shows: aggregation per group ("each", "per"), superlatives and
    ordering ("most", "top"), nesting or negation ("than the average", "never", "not"), more than 18 words,
    and two or more of the schema's tables named. ``schema``: a :class:`~learnat_cli.schema.Schema` or a
    rendered schema text (its table names)."""
    q = question or ""
    score = 0
    score += 1 if _GROUP.search(q) else 0
    score += 1 if _ORDER.search(q) else 0
    score += 1 if _NEST.search(q) else 0
    score += 1 if len(q.split()) > 18 else 0
    names = _table_names(schema)
    if names:
        words = {w.rstrip("s") for w in re.findall(r"[a-z]+", q.lower()) if len(w) > 2}
        hits = 0
        for name in names:
            parts = {p.rstrip("s") for p in re.split(r"[^a-z]+", name.lower()) if len(p) > 2}
            if parts and parts & words:
                hits += 1
        score += 1 if hits >= 2 else 0
    return score


def decide_decompose(question: str, schema: Any, mode: str = "auto", threshold: int = 1) -> bool:
    """``always``/``never`` force the choice; ``auto`` decomposes when :func:`complexity` exceeds
    ``threshold``."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    if mode != "auto":
        from learnat_cli.errors import LearnatError

        raise LearnatError(f"--decompose must be one of {', '.join(MODES)}", field="decompose")
    return complexity(question, schema) > threshold


def retrieve_demos(index: Any, question: str, k: int,
                   exclude_ids: Sequence[str] = ()) -> list[tuple[str, Demo]]:
    """``(id, Demo)`` of the ``k`` nearest demonstrations in ``index`` (a :class:`DemoIndex`), never the
    question itself (same id or same question text)."""
    if index is None or k <= 0:
        return []
    out = []
    for _, d in index.search(question, k, exclude_ids=exclude_ids, exclude_questions=[question]):
        out.append((str(d.get("id", "")), Demo(question=d["question"], sql=d.get("sql") or "",
                                                 steps=[tuple(s) for s in d.get("steps") or []],
                                                 evidence=d.get("evidence"))))
    return out


def student_prompt(question: str, schema_text: str, evidence: str | None = None, demos: Sequence[Demo] = (),
                   mode: str = "auto", threshold: int = 1,
                   prompts_dir=None) -> tuple[list[dict[str, str]], bool]:
    """``(messages, decomposed)``: the prompt ``ask`` sends and ``build-pairs`` trains on (module
    docstring)."""
    dec = decide_decompose(question, schema_text, mode, threshold)
    messages = student_messages(question, schema_text, evidence, demos, decompose=dec,
                                prompts_dir=prompts_dir)
    return messages, dec


_STEP_RE = re.compile(r"^\s*Step\s*(\d+)\s*[:.)-]\s*(.*)$", re.I)
_SQL_RE = re.compile(r"^\s*SQL\s*:\s*(.*)$", re.I)
_FINAL_RE = re.compile(r"^\s*Final\s+SQL\s*:\s*(.*)$", re.I)


def _strip_fences(s: str) -> str:
    s = s.strip()
    s = re.sub(r"^```(?:sql)?", "", s, flags=re.I).strip()
    s = re.sub(r"```$", "", s).strip()
    return s.rstrip(";").strip()


_SQL_LINE_RE = re.compile(r"^\s*SQL\s*:\s*(.+?)\s*$", re.I | re.M)


def extract_sql(text: str | None) -> str | None:
    """The SQL in free model text, on one line without a trailing ``;``: the first ``SQL:`` line, else the
    first fenced block, else everything from the first SELECT/WITH. None when there is no SQL."""
    t = text or ""
    m = _SQL_LINE_RE.search(re.sub(r"```(?:sql)?", "", t, flags=re.I))
    if m:
        return one_line(_strip_fences(m.group(1))) or None
    fenced = re.search(r"```(?:sql)?\s*(.*?)```", t, flags=re.S | re.I)
    cand = fenced.group(1) if fenced else t
    m2 = re.search(r"\b(SELECT|WITH)\b.*", cand, flags=re.S | re.I)
    return one_line(_strip_fences(m2.group(0))) or None if m2 else None


def parse_answer(text: str) -> tuple[list[tuple[str, str]], str | None]:
    """Parse a student answer into ``([(sub_question, sql), ...], final_sql)``. Tolerates code fences and a
    final SQL spread over several lines; a step whose SQL repeats an earlier step's is dropped (redundant);
    without a ``Final SQL:`` line the last step's SQL is the final one, and a bare SQL answer (or a ```sql
    block) is taken as the final SQL (:func:`extract_sql`)."""
    steps: list[tuple[str, str]] = []
    seen: set[str] = set()  # the steps' SQL, normalized (_norm_sql)
    final: str | None = None
    cur_q: str | None = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m_final = _FINAL_RE.match(line)
        if m_final:
            rest = [m_final.group(1)]
            j = i + 1
            while j < len(lines) and lines[j].strip() and not _STEP_RE.match(lines[j]):
                rest.append(lines[j])
                j += 1
            final = _strip_fences(" ".join(rest)) or final
            i = j
            continue
        m_step = _STEP_RE.match(line)
        if m_step:
            cur_q = m_step.group(2).strip()
            i += 1
            continue
        m_sql = _SQL_RE.match(line)
        if m_sql and cur_q is not None:
            sql = _strip_fences(m_sql.group(1))
            key = _norm_sql(sql)
            if key not in seen:  # a repeated step adds nothing
                seen.add(key)
                steps.append((cur_q, sql))
            cur_q = None
        i += 1
    if final is None and steps:
        final = steps[-1][1]
    if final is None:
        final = extract_sql(text)
    return steps, final


def _norm_sql(sql: str) -> str:
    """A step's SQL for the repeat test: case, spacing, ``;`` and alias numbers (``T1``, ``T7``) aside."""
    return re.sub(r"\bt\d+\b", "t#", " ".join(sql.replace(";", " ").split()).lower())


_DONE_SQL_LINE_RE = re.compile(r"^\s*SQL\s*:([^\n]*\S[^\n]*)\n", re.I | re.M)


def _final_end(text: str) -> int | None:
    m = re.search(r"^\s*Final\s+SQL\s*:[^\n]*\S[^\n]*\n", text, flags=re.I | re.M)
    return m.end() if m is not None and "```" not in text[m.start():m.end()] else None


def _repeat_end(text: str) -> int | None:
    """The end of the first complete step ``SQL:`` line that repeats an earlier one, if any: a student caught
    in a loop (the same step again and again until the token limit) has said all it will."""
    seen: set[str] = set()
    for m in _DONE_SQL_LINE_RE.finditer(text):
        key = _norm_sql(_strip_fences(m.group(1)))
        if key in seen:
            return m.end()
        seen.add(key)
    return None


def final_sql_done(text: str) -> bool:
    """True once ``text`` holds a complete ``Final SQL:`` line (SQL, then a line break) or repeats a step's
    SQL line: the stopping criterion of generation (:func:`learnat_cli.models.ChatModel.chat` with
    ``stop_at_final``). After a repeat the answer is read as if it ended there (:func:`parse_answer` drops the
    repeated step and the last step's SQL is the final one)."""
    return _final_end(text) is not None or _repeat_end(text) is not None


def cut_after_final(text: str) -> str:
    """``text`` up to the end of its ``Final SQL:`` line or of its first repeated step (what follows is not
    part of the answer)."""
    ends = [e for e in (_final_end(text), _repeat_end(text)) if e is not None]
    return text[: min(ends)] if ends else text
