"""`learnat eval`: execution accuracy (BIRD / Spider semantics) overall and by difficulty (parsing and
printing only; the stage is learnat_cli.stages.eval)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from .common import console, progress, run, sink

Opt = typer.Option
PRED_HELP = ("JSONL (id, pred[, gold, db_id, db_path]) or the official pred.txt (one SQL per line, with "
             "--gold); - for stdin.")
ROOT_HELP = "Folder of <db_id>/<db_id>.sqlite (Spider database/, BIRD dev_databases/); overrides db_path."
METRIC_HELP = "bird (set equality) | spider (test-suite). Default: from the input's origin, else bird."


def eval_cmd(
    predictions: Annotated[str, typer.Argument(help=PRED_HELP)] = "-",
    gold: Annotated[str | None, Opt(help="Spider/BIRD JSON, learnat JSONL, or gold.sql.")] = None,
    db_root: Annotated[str | None, Opt(envvar="LEARNAT_DB_ROOT", help=ROOT_HELP)] = None,
    db: Annotated[str | None, Opt(help="One .sqlite file for every item.")] = None,
    metric: Annotated[str | None, Opt(help=METRIC_HELP)] = None,
    keep_distinct: Annotated[bool, Opt(help="spider: keep DISTINCT (the official tool removes it).")] = False,
    match_by: Annotated[str, Opt(help="Match predictions to gold by 'id' or 'order'.")] = "id",
    pred_field: Annotated[str, Opt(help="Field holding the predicted SQL.")] = "pred",
    workers: Annotated[int, Opt(help="Worker processes (0 = all cores).")] = 0,
    timeout: Annotated[float, Opt(help="Per-query time limit in seconds (BIRD: 30).")] = 30.0,
    max_bytes: Annotated[int, Opt(help="Per-query result limit in bytes; over it, wrong.")] = 256 * 2**20,
    report: Annotated[str | None, Opt(help="Write the JSON report here.")] = None,
    output: Annotated[str | None, Opt("-o", "--output", help="Per-item JSONL here, not stdout.")] = None,
) -> None:
    """Execution accuracy of predictions, by difficulty. Per-item JSONL on stdout; table on stderr."""

    def go() -> None:
        from learnat_cli.stages.eval import EvalSettings, check_report_target, evaluate, write_report

        if report:
            check_report_target(report)
        settings = EvalSettings(metric=metric, db=db, db_root=db_root, match_by=match_by,
                                pred_field=pred_field, workers=workers, timeout_s=timeout,
                                max_bytes=max_bytes, keep_distinct=keep_distinct)
        with sink(output) as out, progress() as prog:
            task = prog.add_task("eval")

            def on_record(rec) -> None:
                out.write(rec)
                prog.advance(task)

            _, rep = evaluate(predictions, settings, gold=gold, on_record=on_record)
        _print_report(rep)
        if report:
            write_report(report, rep)

    run(go)


def _print_report(rep) -> None:
    t = Table(title=f"Execution accuracy ({rep.metric}, {rep.metric_chosen_by})")
    for col in ("difficulty", "count", "correct", "accuracy", "pred errors", "gold errors"):
        t.add_column(col, justify="left" if col == "difficulty" else "right")
    for k, b in rep.by_difficulty.items():
        t.add_row(k, str(b.count), str(b.correct), f"{100 * b.accuracy:.1f}%", str(b.errors),
                  str(b.gold_errors))
    console.print(t)
    ge = rep.by_difficulty["all"].gold_errors if "all" in rep.by_difficulty else 0
    if ge:
        console.print(f"[yellow]warning:[/] {ge} item(s) whose gold SQL fails were left out of the accuracy")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
