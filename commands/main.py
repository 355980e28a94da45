"""``learnat``: the Typer application. Each subcommand lives in its own module and registers itself here."""

from __future__ import annotations

import importlib

import typer

from learnat_cli import __version__

app = typer.Typer(
    name="learnat",
    help="LearNAT toolkit: NL2SQL with AST-guided task decomposition. Stages read and write JSONL "
         "(stdin/stdout by default, -o FILE otherwise); progress and tables go to stderr.",
    no_args_is_help=True,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# Pipeline order, as `learnat --help` lists them.
SUBCOMMANDS = ["decompose", "score", "build_pairs", "sft", "mdpo", "index", "ask", "eval"]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"learnat {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
          quiet: bool = typer.Option(False, "--quiet", "-q", envvar="LEARNAT_QUIET",
                                     help="No progress or info on stderr (errors still print).")) -> None:
    """LearNAT toolkit."""
    from .common import set_quiet

    set_quiet(quiet)


for _name in SUBCOMMANDS:
    _mod = importlib.import_module(f"learnat_commands.{_name}")
    _mod.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
