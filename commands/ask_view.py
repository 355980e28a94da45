"""How `learnat ask` shows an answer on stderr: the phase spinner's model-preparation line, the decomposition
steps, the final SQL in a panel titled from the record, and the result table."""

from __future__ import annotations

from rich.markup import escape
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table

from .common import console


def model_progress(spin):
    """A progress callback for the one-time join/convert of the embedded model, shown on the spinner."""

    def cb(phase: str, done: int, total: int) -> None:
        pct = f" {100 * done // max(1, total)}%" if total > 1 else ""
        spin.update(f"preparing the embedded model (first use only): {phase}{pct}")

    return cb


def panel_title(rec) -> str:
    """``SQL (decomposed, N steps)`` / ``SQL (decomposition prompt, no steps)`` / ``SQL (direct)``: what the
    record says (``decomposed``, ``steps``), plus ``, columns rebound`` when ask moved a column to the joined
    table that has it (``rebound_from``)."""
    rebound = ", columns rebound" if getattr(rec, "rebound_from", None) else ""
    if rec.decomposed:
        n = len(rec.steps)
        if not n:
            return f"SQL (decomposition prompt, no steps{rebound})"
        return f"SQL (decomposed, {n} step{'s' if n != 1 else ''}{rebound})"
    return f"SQL (direct{rebound})"


def show_answer(rec) -> None:
    for i, s in enumerate(rec.steps, 1):
        console.print(f"[bold]Step {i}:[/] {escape(s.question)}", highlight=False)
        console.print(Syntax(s.sql, "sql", word_wrap=True))
    if rec.vote is not None and rec.candidates:
        n = len(rec.candidates)
        if rec.vote.winner is None:
            console.print(f"[dim]vote: none of {n} candidates ran; the greedy answer was retried[/]")
        else:
            size = len(rec.vote.groups[rec.vote.winner])
            console.print(f"[dim]vote: {size} of {n} candidates agree on the result "
                          f"({len(rec.vote.groups)} distinct result(s))[/]")
    if rec.pred:
        console.print(Panel(Syntax(rec.pred, "sql", word_wrap=True), title=panel_title(rec)))
    if rec.error:
        console.print(f"[bold red]error:[/] {escape(rec.error)}", highlight=False)
        return
    t = Table(*[escape(c) for c in rec.columns], show_lines=False)
    for r in rec.rows:
        t.add_row(*("NULL" if v is None else escape(str(v)) for v in r))
    console.print(t)
    if rec.truncated:
        console.print("[dim](more rows not shown)[/]")
