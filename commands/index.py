"""`learnat index`: embed demonstration questions into a FAISS index folder (parsing and printing only; the
stage is learnat_cli.stages.index)."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import console, progress, run

Opt = typer.Option


def index_cmd(
    input: Annotated[str, typer.Argument(
        help="Demonstrations: decompose trajectories, learnat/Spider/BIRD rows.")] = "-",
    output: Annotated[str, Opt("-o", "--output",
        help="Index folder to create (or extend with --append).")] = ...,
    append: Annotated[bool, Opt(help="Add rows to an existing index.")] = False,
    embedder: Annotated[str | None, Opt(
        help="sentence-transformers model folder (default all-MiniLM-L6-v2).")] = None,
    limit: Annotated[int | None, Opt(help="Index at most this many rows.")] = None,
    device: Annotated[str, Opt(help="auto (CUDA when present) | cpu | cuda, for the embedder.")] = "auto",
) -> None:
    """Embed demonstration questions (with their SQL and decomposition) into a FAISS index."""

    def go() -> None:
        from learnat_cli.stages.index import index

        with progress() as prog:
            task = prog.add_task("index", total=limit)
            info = index(input, output, embedder=embedder, append=append, limit=limit, device=device,
                         on_progress=lambda n: prog.advance(task, n))
        console.print(f"index {output}: {info.count} demonstrations, dim {info.dim}, "
                      f"embedder {info.embedder}")

    run(go)


def register(app: typer.Typer) -> None:
    app.command("index")(index_cmd)
