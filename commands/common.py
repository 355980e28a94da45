"""Shared CLI plumbing: the stderr console, the error boundary, progress bars and output sinks.

``console`` is for people (progress, tables, info) and is silenced by ``learnat --quiet``; ``err_console``
prints errors and is never silenced. stdout carries data only.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Optional, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from learnat_cli.errors import LearnatError
from learnat_cli.jsonl import JsonlSink

# stdout carries data only; everything for people goes to stderr.
console = Console(stderr=True)
err_console = Console(stderr=True)


def set_quiet(quiet: bool) -> None:
    """``--quiet``: silence progress and info on stderr (errors still print)."""
    console.quiet = quiet

T = TypeVar("T")

# Reusable option declarations.
OutputOpt = typer.Option(None, "-o", "--output", help="Write JSONL here instead of stdout.")
DbOpt = typer.Option(None, "--db", help="A .sqlite file, or ROOT/db_id under --db-root / $LEARNAT_DB_ROOT.")
DbRootOpt = typer.Option(None, "--db-root", envvar="LEARNAT_DB_ROOT",
                         help="Folder holding <db_id>/<db_id>.sqlite (Spider 'database', "
                              "BIRD 'dev_databases').")
DialectOpt = typer.Option("sqlite", "--dialect", help="sqlglot dialect of the SQL.")


def run(fn: Callable[[], T]) -> T:
    """The one error boundary: user errors print one red line and exit 2; a closed stdout pipe exits quietly;
    Ctrl-C exits 130 (what was written so far is kept). Last resorts, so that no run ends in a traceback: an
    OS error on a named file (a folder given as ``--report``, an unwritable path) is a user error (exit 2),
    input nested too deeply for Python (RecursionError) too, and running out of memory exits 1."""
    try:
        return fn()
    except LearnatError as e:
        _error(str(e))
        raise typer.Exit(e.exit_code) from None
    except RecursionError:
        _error("input nested too deeply to process")
        raise typer.Exit(2) from None
    except MemoryError:
        _error("out of memory")
        raise typer.Exit(1) from None
    except BrokenPipeError:
        # The reader of our stdout went away (e.g. `| head`): stop quietly.
        with contextlib.suppress(Exception):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None
    except OSError as e:
        if e.filename is None:
            raise
        _error(f"{e.filename}: {e.strerror or e}")
        raise typer.Exit(2) from None


def _error(msg: str) -> None:
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)


def progress(disable: bool | None = None) -> Progress:
    """A Rich progress bar on stderr, off when stderr is not a terminal or with ``--quiet``."""
    if disable is None:
        disable = not console.is_terminal or console.quiet
    return Progress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, disable=disable, transient=False)


@contextlib.contextmanager
def sink(output: str | None, append: bool = False) -> Iterator[JsonlSink]:
    """Open the output (stdout when None/'-'). Non-append files appear only when the stage succeeds."""
    s = JsonlSink(output, append=append)
    ok = False
    try:
        yield s
        ok = True
    finally:
        s.close(ok=ok)


# --------------------------------------------------------------------------------------------------- training
# `sft` and `mdpo` share their options: one per field of learnat_cli.training.config.TrainConfig (or its
# subclass), declared here once from the dataclass, plus --config FILE; only flags given explicitly override
# it.


def config_command(cfg_cls: type) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorate ``fn(cfg)``: the result is a Typer command whose options are ``cfg_cls``'s fields."""
    import functools
    import inspect
    from typing import Annotated

    from learnat_cli.training.config import cli_fields

    specs = cli_fields(cfg_cls)
    config_opt = typer.Option("--config", help="YAML or JSON file of these options (flags override it).")
    params = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
              inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                                annotation=Annotated[str | None, config_opt])]
    for s in specs:
        hint, flags = s["type"], list(s["flags"])
        if s["name"] == "input":
            info = typer.Argument(help=s["help"], show_default=True)
        else:
            if hint in (bool, Optional[bool]):  # noqa: UP045 (a run-time value)
                flags = [f"{flags[-1]}/--no-{flags[-1][2:]}"]
            info = typer.Option(*flags, help=s["help"])
        hint = Optional[str] if "list" in str(hint) else hint  # noqa: UP045 (a run-time value)
        params.append(inspect.Parameter(s["name"], inspect.Parameter.KEYWORD_ONLY, default=s["default"],
                                        annotation=Annotated[hint, info]))

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(fn)
        def command(ctx: typer.Context, **kwargs) -> None:
            given = ("COMMANDLINE", "ENVIRONMENT")
            flags = {k: v for k, v in kwargs.items()
                     if k != "config" and getattr(ctx.get_parameter_source(k), "name", "") in given}
            run(lambda: fn(cfg_cls.resolve(kwargs["config"], flags)))

        del command.__wrapped__  # Typer must read the generated signature, not fn's
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


@contextlib.contextmanager
def train_progress(stage: str) -> Iterator[Callable[[str, dict], None]]:
    """A callback for the training events of learnat_cli.training: a Rich bar with ETA and a live loss/lr line
    on a terminal, one plain line per logged step otherwise."""
    from rich.progress import Progress

    bar = Progress(SpinnerColumn(), TextColumn(f"[bold]learnat {stage}[/]"), BarColumn(),
                   MofNCompleteColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), console=console,
                   disable=not console.is_terminal)
    task = bar.add_task(stage, total=None, stats="")

    def on_event(kind: str, info: dict) -> None:
        if kind == "message":
            console.print(f"[bold]learnat {stage}[/]: {info['text']}", highlight=False)
        elif kind in ("start", "tick"):
            bar.update(task, total=info["total"], completed=info.get("step", 0))
        elif kind in ("step", "eval"):
            stats = "  ".join(f"{k} {info[k]:.4g}" for k in ("loss", "lr", "eval_loss")
                              if info.get(k) is not None)
            bar.update(task, completed=info.get("step", 0), stats=stats)
            if not console.is_terminal and stats:
                console.print(f"learnat {stage}: step {info.get('step')}/{info.get('total')}  {stats}",
                              highlight=False)

    with bar:
        yield on_event


def print_manifest(manifest: dict) -> None:
    """A one-line summary on stderr, the manifest record (one JSON line) on stdout."""
    import json

    def fmt(key: str) -> str:
        v = manifest.get(key)
        return "-" if v is None else format(v, ".4g")

    eval_part = f", eval loss {fmt('eval_loss')}" if manifest.get("eval_loss") is not None else ""
    console.print(f"[green]learnat {manifest.get('stage')}[/]: {manifest.get('steps')} steps, final loss "
                  f"{fmt('final_loss')}{eval_part}, saved to {manifest.get('output_dir')}", highlight=False)
    typer.echo(json.dumps(manifest, ensure_ascii=False))
