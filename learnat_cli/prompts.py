"""The student's prompt and answer format, shared by training (``build-pairs``, ``sft``, ``mdpo``) and
inference (``ask``) so that what the student learns is what it is asked.

A decomposition answer looks like::

    Step 1: Which cards are red?
    SQL: SELECT id FROM cards WHERE color = 'R'
    Step 2: ...
    Final SQL: SELECT ...

Templates are text files in ``learnat_cli/prompts/``; set ``LEARNAT_PROMPTS`` (or pass ``prompts_dir``) to a
folder holding files of the same names to override any of them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

_BUILTIN = Path(__file__).with_name("prompts")


def template(name: str, prompts_dir: str | os.PathLike | None = None) -> str:
    """The text of template ``name`` (``student_system``, ...): the override folder wins if it has it."""
    override = prompts_dir or os.environ.get("LEARNAT_PROMPTS")
    return _read(name, str(override) if override else None)


@lru_cache(maxsize=64)
def _read(name: str, override: Optional[str]) -> str:
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
    evidence: Optional[str] = None


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
        # retrieved demonstrations may come from other databases: a small student otherwise copies their tables
        demo_text = ("Similar solved examples (possibly on other databases: follow their reasoning, but use only the "
                     "tables and columns of the schema below):\n\n" + "\n".join(format_demo(d) for d in demos) + "\n")
    ev = f"Evidence: {evidence}\n" if evidence else ""
    return template("student_user", prompts_dir).format(
        demonstrations=demo_text, schema=schema, evidence=ev, question=question)


def student_messages(question: str, schema: str, evidence: str | None = None, demos: Sequence[Demo] = (),
                     decompose: bool = True, prompts_dir=None) -> list[dict[str, str]]:
    """System + user chat messages for the student (``decompose=False`` is the fast path's direct prompt)."""
    system = template("student_system" if decompose else "student_direct_system", prompts_dir)
    return [{"role": "system", "content": system},
            {"role": "user", "content": user_message(question, schema, evidence, demos, prompts_dir)}]


_STEP_RE = re.compile(r"^\s*Step\s*(\d+)\s*[:.)-]\s*(.*)$", re.I)
_SQL_RE = re.compile(r"^\s*SQL\s*:\s*(.*)$", re.I)
_FINAL_RE = re.compile(r"^\s*Final\s+SQL\s*:\s*(.*)$", re.I)


def _strip_fences(s: str) -> str:
    s = s.strip()
    s = re.sub(r"^```(?:sql)?", "", s, flags=re.I).strip()
    s = re.sub(r"```$", "", s).strip()
    return s.rstrip(";").strip()


def parse_answer(text: str) -> tuple[list[tuple[str, str]], Optional[str]]:
    """Parse a student answer into ``([(sub_question, sql), ...], final_sql)``. Tolerates code fences and a
    final SQL spread over several lines; without a ``Final SQL:`` line the last step's SQL is the final one,
    and a bare SQL answer (or a ```sql block) is taken as the final SQL."""
    steps: list[tuple[str, str]] = []
    final: Optional[str] = None
    cur_q: Optional[str] = None
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
            steps.append((cur_q, _strip_fences(m_sql.group(1))))
            cur_q = None
        i += 1
    if final is None and steps:
        final = steps[-1][1]
    if final is None:
        m = re.search(r"```(?:sql)?\s*(.*?)```", text, flags=re.S | re.I)
        cand = m.group(1) if m else text
        m2 = re.search(r"\b(SELECT|WITH)\b.*", cand, flags=re.S | re.I)
        if m2:
            final = _strip_fences(" ".join(m2.group(0).split()))
    return steps, final
