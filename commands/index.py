"""`learnat index`: embed demonstration questions into a FAISS index folder."""

from __future__ import annotations

from typing import Optional

import typer

from .common import console, progress, run


def register(app: typer.Typer) -> None:
    @app.command("index")
    def index_cmd(
        input: str = typer.Argument("-", help="Demonstrations: decompose trajectories, learnat/Spider/BIRD rows."),
        output: str = typer.Option(..., "-o", "--output", help="Index folder to create (or extend with --append)."),
        append: bool = typer.Option(False, "--append", help="Add rows to an existing index."),
        embedder: Optional[str] = typer.Option(None, "--embedder",
                                               help="sentence-transformers model folder (default all-MiniLM-L6-v2)."),
        limit: Optional[int] = typer.Option(None, "--limit", help="Index at most this many rows."),
    ) -> None:
        """Embed demonstration questions (with their SQL and decomposition) into a FAISS index."""

        def go():
            from learnat_cli.jsonl import display_name, read_jsonl
            from learnat_cli.stages.index import build_index, demo_from_record

            name = display_name(input)

            def rows():
                for n, (line, obj) in enumerate(read_jsonl(input)):
                    if limit is not None and n >= limit:
                        return
                    if not isinstance(obj.get("question"), str):
                        from learnat_cli.errors import LearnatError

                        raise LearnatError("missing required field", file=name, line=line, field="question")
                    d = demo_from_record(obj)
                    if not d["id"]:
                        d["id"] = f"{name}-{line}"
                    yield d

            with progress() as prog:
                task = prog.add_task("index", total=limit)
                info = build_index(rows(), output, embedder, append=append,
                                   on_progress=lambda n: prog.advance(task, n))
            console.print(f"index {output}: {info.count} demonstrations, dim {info.dim}, embedder {info.embedder}")

        run(go)
