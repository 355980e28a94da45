"""`learnat build-pairs`: preference pairs (or SFT rows) from decomposition trees."""

from __future__ import annotations

from typing import Optional

import typer

from .common import OutputOpt, console, run, sink


def register(app: typer.Typer) -> None:
    @app.command("build-pairs")
    def build_pairs_cmd(
        input: str = typer.Argument("-", help="`learnat decompose` output or its --trees file; - for stdin."),
        sft: bool = typer.Option(False, "--sft", help="Write SFT chat rows (messages) instead of pairs."),
        min_margin: float = typer.Option(0.05, "--min-margin", help="Drop pairs whose AST margin is smaller."),
        max_per_node: int = typer.Option(3, "--max-per-node", help="Rejected siblings per node at most."),
        include_failed: bool = typer.Option(False, "--include-failed",
                                            help="--sft: also trajectories that did not reach the gold."),
        output: Optional[str] = OutputOpt,
    ) -> None:
        """Chosen/rejected subtasks at the same tree node with their AST margin (TRL preference rows)."""

        def go():
            from learnat_cli.stages.build_pairs import PairsConfig, build

            cfg = PairsConfig(min_margin=min_margin, max_per_node=max_per_node, include_failed=include_failed)
            with sink(output) as out:
                for row in build(input, cfg, sft=sft):
                    out.write(row)
            console.print(f"wrote {out.count} {'SFT rows' if sft else 'preference pairs'}")

        run(go)
