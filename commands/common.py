"""Shared CLI plumbing: the stderr console, the error boundary, progress bars and output sinks."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Iterator, Optional, TypeVar

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from learnat_cli.errors import LearnatError
from learnat_cli.jsonl import JsonlSink

# stdout carries data only; everything for people goes to stderr.
console = Console(stderr=True)

T = TypeVar("T")

# Reusable option declarations.
OutputOpt = typer.Option(None, "-o", "--output", help="Write JSONL here instead of stdout.")
DbOpt = typer.Option(None, "--db", help="A .sqlite file, or ROOT/db_id under --db-root / $LEARNAT_DB_ROOT.")
DbRootOpt = typer.Option(None, "--db-root", envvar="LEARNAT_DB_ROOT",
                         help="Folder holding <db_id>/<db_id>.sqlite (Spider 'database', BIRD 'dev_databases').")
DialectOpt = typer.Option("sqlite", "--dialect", help="sqlglot dialect of the SQL.")


def run(fn: Callable[[], T]) -> T:
    """The one error boundary: user errors print one red line and exit 2; a closed stdout pipe exits quietly;
    Ctrl-C exits 130."""
    try:
        return fn()
    except LearnatError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(e.exit_code)
    except BrokenPipeError:
        # The reader of our stdout went away (e.g. `| head`): stop quietly.
        with contextlib.suppress(Exception):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        raise typer.Exit(130)


def progress(disable: Optional[bool] = None) -> Progress:
    """A Rich progress bar on stderr, off when stderr is not a terminal."""
    if disable is None:
        disable = not console.is_terminal
    return Progress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, disable=disable, transient=False)


@contextlib.contextmanager
def sink(output: Optional[str], append: bool = False) -> Iterator[JsonlSink]:
    """Open the output (stdout when None/'-'). Non-append files appear only when the stage succeeds."""
    s = JsonlSink(output, append=append)
    ok = False
    try:
        yield s
        ok = True
    finally:
        s.close(ok=ok)
