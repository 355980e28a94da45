"""`learnat build-pairs`: preference pairs (or SFT rows) from decomposition trees (parsing and printing only;
the stage is learnat_cli.stages.build_pairs)."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import console, run, sink

Opt = typer.Option


def build_pairs_cmd(
    input: Annotated[str, typer.Argument(
        help="`learnat decompose` output or its --trees file; - for stdin.")] = "-",
    sft: Annotated[bool, Opt(help="Write SFT chat rows (messages) instead of pairs.")] = False,
    min_margin: Annotated[float, Opt(help="Drop pairs whose AST margin is smaller.")] = 0.05,
    max_per_node: Annotated[int, Opt(help="Rejected siblings per node at most.")] = 3,
    include_failed: Annotated[bool, Opt(
        help="--sft: also trajectories that did not reach the gold.")] = False,
    decompose: Annotated[str, Opt(help="--sft: which prompt each row trains, as ask --decompose: auto "
                                       "(direct rows for simple questions) | always | never.")] = "auto",
    fast_threshold: Annotated[int, Opt(help="auto: decompose when the complexity score exceeds this.")] = 1,
    index: Annotated[str | None, Opt(help="Demonstrations from this FAISS index (learnat index).")] = None,
    demos: Annotated[str | None, Opt(
        help="Demonstrations from this pool (rows as for learnat index).")] = None,
    k: Annotated[int, Opt("--k", help="Demonstrations per prompt (as ask --k).")] = 3,
    device: Annotated[str, Opt(help="auto | cpu | cuda, for the embedder.")] = "auto",
    output: Annotated[str | None, Opt("-o", "--output",
        help="Write JSONL here instead of stdout.")] = None,
) -> None:
    """Chosen/rejected subtasks at the same tree node with their AST margin (TRL preference rows), or SFT
    rows."""

    def go() -> None:
        from learnat_cli.errors import LearnatError
        from learnat_cli.stages.build_pairs import PairsConfig, PairsReport, build_pairs, read_trees
        from learnat_cli.stages.index import DemoIndex, demo_rows

        if index and demos:
            raise LearnatError("give --index or --demos, not both", field="demos")
        cfg = PairsConfig(min_margin=min_margin, max_per_node=max_per_node, include_failed=include_failed,
                          decompose=decompose, fast_threshold=fast_threshold, k_demos=k)
        cfg.check()
        pool = DemoIndex(index, device=device) if index else (
            DemoIndex.from_rows(demo_rows(demos), device=device) if demos else None)
        report = PairsReport()
        with sink(output) as out:
            for row in build_pairs(read_trees(input, sft), cfg, report, sft=sft, index=pool):
                out.write(row)
        console.print(report.summary(sft))

    run(go)


def register(app: typer.Typer) -> None:
    app.command("build-pairs")(build_pairs_cmd)
