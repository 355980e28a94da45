"""`learnat score`: AST similarity and execution match of SQL pairs."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from .common import DbRootOpt, DialectOpt, OutputOpt, console, run, sink


def register(app: typer.Typer) -> None:
    @app.command("score")
    def score_cmd(
        input: str = typer.Argument("-", help="JSONL rows with predicted and gold SQL; - for stdin."),
        pred_field: str = typer.Option("pred", "--pred-field", help="Field holding the predicted SQL."),
        gold_field: str = typer.Option("gold", "--gold-field", help="Field holding the gold SQL."),
        db: Optional[str] = typer.Option(None, "--db", help="A .sqlite file: also compute exec_match."),
        db_root: Optional[str] = DbRootOpt,
        metric: str = typer.Option("bird", "--metric", help="exec_match semantics: bird or spider."),
        dialect: str = DialectOpt,
        output: Optional[str] = OutputOpt,
    ) -> None:
        """Add ast_similarity, parses (and exec_match with a database) to each row."""

        def go():
            from learnat_cli.stages.score import ScoreConfig, score_rows

            cfg = ScoreConfig(pred_field=pred_field, gold_field=gold_field, dialect=dialect, db=db,
                              db_root=db_root, metric=metric)
            n = parsed = 0
            sim = 0.0
            em = em_n = 0
            with sink(output) as out:
                for row in score_rows(input, cfg):
                    out.write(row)
                    n += 1
                    parsed += row["parses"]
                    sim += row["ast_similarity"]
                    if "exec_match" in row:
                        em_n += 1
                        em += row["exec_match"]
            t = Table(title="learnat score")
            for c in ("rows", "parse rate", "mean AST similarity", "exec match"):
                t.add_column(c, justify="right")
            t.add_row(str(n), f"{100 * parsed / n:.1f}%" if n else "-", f"{sim / n:.3f}" if n else "-",
                      f"{100 * em / em_n:.1f}%" if em_n else "-")
            console.print(t)

        run(go)
