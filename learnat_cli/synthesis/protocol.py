"""The teacher protocol of decomposition synthesis (LearNAT sec. 3.2): what a teacher sees and what it
answers.

Inputs: a :class:`State` (the question, its schema text, the gold SQL, BIRD's evidence and the steps chosen so
far). Output: ``await teacher.propose(state, k)`` -> up to ``k`` :class:`Proposal` (sub-question + SQL). Every
teacher (:mod:`learnat_cli.synthesis.teachers`, :mod:`learnat_cli.synthesis.ast_teacher`) implements
:class:`Teacher`; the search (:mod:`learnat_cli.synthesis.mcts`) and the stage depend on this module only.

Accounting: ``teacher.usage`` (calls, tokens, cache hits) is the teacher's total, or — inside
:func:`example_usage` — the counter of the one example being searched, so that concurrent examples never mix
their counts (the counts in the output do not depend on scheduling).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from learnat_cli.errors import LearnatError


@dataclass
class Proposal:
    question: str
    sql: str
    kind: str = "llm"  # for the AST teacher: ladder step / perturbed / repeat


@dataclass
class State:
    """What a teacher sees: the example and the steps chosen so far."""

    question: str
    schema: str
    gold: str
    evidence: str | None = None
    steps: Sequence[tuple[str, str]] = ()


@dataclass
class Usage:
    calls: int = 0
    tokens: int = 0
    cached: int = 0


class TeacherFatal(LearnatError):
    """A teacher error that no other example would escape (a rejected API key, an unknown teacher): the run
    stops. Every other teacher error is recorded as that example's failure and the run goes on."""


_EXAMPLE_USAGE: ContextVar[Usage | None] = ContextVar("learnat_example_usage", default=None)


@contextlib.contextmanager
def example_usage() -> Iterator[Usage]:
    """Count the teacher usage of the enclosed code (one asyncio task: one example) in a fresh
    :class:`Usage`."""
    u = Usage()
    token = _EXAMPLE_USAGE.set(u)
    try:
        yield u
    finally:
        _EXAMPLE_USAGE.reset(token)


class Teacher:
    name = "teacher"

    def __init__(self) -> None:
        self._usage = Usage()

    @property
    def usage(self) -> Usage:
        u = _EXAMPLE_USAGE.get()
        return u if u is not None else self._usage

    @usage.setter
    def usage(self, value: Usage) -> None:
        self._usage = value

    async def propose(self, state: State, k: int) -> list[Proposal]:  # pragma: no cover - interface
        raise NotImplementedError

    async def aclose(self) -> None:
        pass
