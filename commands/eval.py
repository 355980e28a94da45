"""`learnat eval`: execution accuracy (BIRD / Spider semantics) overall and by difficulty."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import DbRootOpt, OutputOpt, console, progress, run, sink


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        predictions: str = typer.Argument("-", help="Prediction JSONL (id, pred[, gold, db_id]); - for stdin."),
        gold: Optional[str] = typer.Option(None, "--gold", help="Gold file (Spider/BIRD JSON or learnat JSONL)."),
        db_root: Optional[str] = DbRootOpt,
        db: Optional[str] = typer.Option(None, "--db", help="One .sqlite file for every item."),
        metric: str = typer.Option("bird", "--metric", help="bird: set equality; spider: test-suite multiset."),
        match_by: str = typer.Option("id", "--match-by", help="Match predictions to gold by 'id' or 'order'."),
        pred_field: str = typer.Option("pred", "--pred-field", help="Field holding the predicted SQL."),
        workers: int = typer.Option(0, "--workers", help="Worker processes (0 = all cores)."),
        timeout: float = typer.Option(30.0, "--timeout", help="Per-query time limit in seconds (BIRD: 30)."),
        report: Optional[str] = typer.Option(None, "--report", help="Write the JSON report here."),
        output: Optional[str] = OutputOpt,
    ) -> None:
        """Execution accuracy of predictions, by difficulty. Per-item JSONL on stdout; table on stderr."""

        def go():
            from learnat_cli.metrics import EvalConfig, evaluate
            from learnat_cli.stages.eval import build_items

            items = build_items(predictions, gold=gold, db=db, db_root=db_root, metric=metric,
                                match_by=match_by, pred_field=pred_field)
            cfg = EvalConfig(metric=metric, workers=workers, timeout_s=timeout)
            with sink(output) as out, progress() as prog:
                task = prog.add_task("eval", total=len(items))

                def on_result(item, r):
                    out.write({"id": item.id, "correct": r["correct"], "error": r["error"],
                               "gold_error": r["gold_error"], "difficulty": item.difficulty,
                               "db_path": item.db_path, "pred": item.pred, "gold": item.gold})
                    prog.advance(task)

                rep = evaluate(items, cfg, on_result=on_result)
            _print_report(rep)
            if report:
                Path(report).parent.mkdir(parents=True, exist_ok=True)
                Path(report).write_text(json.dumps(rep, indent=2) + "\n")

        run(go)


def _print_report(rep: dict) -> None:
    t = Table(title=f"Execution accuracy ({rep['metric']})")
    for col in ("difficulty", "count", "correct", "accuracy", "pred errors", "gold errors"):
        t.add_column(col, justify="left" if col == "difficulty" else "right")
    for k, b in rep["by_difficulty"].items():
        t.add_row(k, str(b["count"]), str(b["correct"]), f"{100 * b['accuracy']:.1f}%", str(b["errors"]),
                  str(b["gold_errors"]))
    console.print(t)
    ge = rep["by_difficulty"].get("all", {}).get("gold_errors", 0)
    if ge:
        console.print(f"[yellow]warning:[/] {ge} item(s) whose gold SQL fails were left out of the accuracy")
