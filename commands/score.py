"""`learnat score`: AST similarity and execution match of SQL pairs (parsing and printing only; the stage is
learnat_cli.stages.score)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from .common import console, run, sink

Opt = typer.Option
ROOT_HELP = "Folder of <db_id>/<db_id>.sqlite; overrides rows' db_path."
METRIC_HELP = "exec_match semantics: bird | spider. Default: from the input's origin, else bird."


def score_cmd(
    input: Annotated[str, typer.Argument(help="JSONL rows with predicted and gold SQL; - for stdin.")] = "-",
    pred_field: Annotated[str, Opt(help="Field holding the predicted SQL.")] = "pred",
    gold_field: Annotated[str, Opt(help="Field holding the gold SQL.")] = "gold",
    db: Annotated[str | None, Opt(help="A .sqlite file: also compute exec_match.")] = None,
    db_root: Annotated[str | None, Opt(envvar="LEARNAT_DB_ROOT", help=ROOT_HELP)] = None,
    metric: Annotated[str | None, Opt(help=METRIC_HELP)] = None,
    keep_distinct: Annotated[bool, Opt(help="spider: keep DISTINCT (the official tool removes it).")] = False,
    timeout: Annotated[float, Opt(help="Per-query time limit in seconds.")] = 30.0,
    max_bytes: Annotated[int, Opt(help="Per-query result limit in bytes; over it, no match.")] = 256 * 2**20,
    dialect: Annotated[str, Opt(help="sqlglot dialect of the SQL.")] = "sqlite",
    output: Annotated[str | None, Opt("-o", "--output", help="Write JSONL here, not stdout.")] = None,
) -> None:
    """Add ast_similarity, parses (and exec_match with a database) to each row."""

    def go() -> None:
        from learnat_cli.stages.score import ScoreConfig, score

        cfg = ScoreConfig(pred_field=pred_field, gold_field=gold_field, dialect=dialect, db=db,
                          db_root=db_root, metric=metric, timeout_s=timeout, max_bytes=max_bytes,
                          keep_distinct=keep_distinct)
        rows, rep = score(input, cfg)
        with sink(output) as out:
            for row in rows:
                out.write(row)
        n = rep.rows
        how = f" (exec: {rep.metric}, {rep.metric_chosen_by})" if rep.exec_rows else ""
        t = Table(title="learnat score" + how)
        for c in ("rows", "parse rate", "mean AST similarity", "exec match"):
            t.add_column(c, justify="right")
        t.add_row(str(n), f"{100 * rep.parsed / n:.1f}%" if n else "-",
                  f"{rep.similarity_sum / n:.3f}" if n else "-",
                  f"{100 * rep.exec_correct / rep.exec_rows:.1f}%" if rep.exec_rows else "-")
        console.print(t)

    run(go)


def register(app: typer.Typer) -> None:
    app.command("score")(score_cmd)
