"""`learnat decompose`: MCTS decomposition synthesis with AST pruning."""

from __future__ import annotations

import asyncio
from typing import Optional

import typer

from .common import DbRootOpt, DialectOpt, OutputOpt, console, progress, run, sink


def _shard(s: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in s.split("/"))
        if not 0 <= i < n:
            raise ValueError
        return i, n
    except ValueError:
        from learnat_cli.errors import LearnatError

        raise LearnatError(f"--shard must be I/N with 0 <= I < N, got {s!r}", field="shard") from None


def register(app: typer.Typer) -> None:
    @app.command("decompose")
    def decompose_cmd(
        input: str = typer.Argument("-", help="Examples with gold SQL (learnat JSONL, Spider/BIRD JSON); - stdin."),
        teacher: str = typer.Option("ast", "--teacher", help="ast | local | hf:PATH | glm-4-plus | openai:MODEL | "
                                    "a model name served at --teacher-url."),
        teacher_url: Optional[str] = typer.Option(None, "--teacher-url", help="OpenAI-compatible base URL (…/v1)."),
        teacher_model: Optional[str] = typer.Option(None, "--teacher-model", help="Model name at --teacher-url."),
        api_key: Optional[str] = typer.Option(None, "--api-key", help="API key (default: the preset's env var)."),
        concurrency: int = typer.Option(8, "--concurrency", help="Teacher requests in flight."),
        workers: int = typer.Option(4, "--workers", help="Examples searched concurrently."),
        temperature: float = typer.Option(0.8, "--temperature", help="Teacher sampling temperature."),
        simulations: int = typer.Option(50, "--simulations", help="MCTS simulations per example (paper: 50)."),
        max_depth: int = typer.Option(5, "--max-depth", help="Maximum decomposition depth (paper: 5)."),
        children: int = typer.Option(4, "--children", help="Candidates proposed per expansion."),
        c_uct: float = typer.Option(1.41, "--c", help="UCT exploration constant (paper: 1.41)."),
        alpha: float = typer.Option(0.7, "--alpha", help="Reward weight of node coverage (paper: 0.7)."),
        prune: bool = typer.Option(True, "--prune/--no-prune", help="Expand only progressive nodes."),
        early_stop: bool = typer.Option(True, "--early-stop/--no-early-stop", help="Stop at the first gold match."),
        db: Optional[str] = typer.Option(None, "--db", help="One .sqlite file for every example."),
        db_root: Optional[str] = DbRootOpt,
        tables: Optional[str] = typer.Option(None, "--tables", help="tables.json for schemas without databases."),
        trees: Optional[str] = typer.Option(None, "--trees", help="Also write the full scored trees here."),
        slim: bool = typer.Option(False, "--slim", help="Leave the tree nodes out of the main output."),
        show_tree: bool = typer.Option(False, "--show-tree", help="Render each search tree on stderr."),
        limit: Optional[int] = typer.Option(None, "--limit", help="At most this many examples."),
        shard: str = typer.Option("0/1", "--shard", help="I/N: this machine's share of the examples."),
        cache: bool = typer.Option(True, "--cache/--no-cache", help="Cache teacher calls on disk."),
        cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Teacher cache folder."),
        prompts: Optional[str] = typer.Option(None, "--prompts", help="Folder overriding prompt templates."),
        seed: int = typer.Option(0, "--seed"),
        dialect: str = DialectOpt,
        output: Optional[str] = OutputOpt,
    ) -> None:
        """Search decompositions of each example; write best trajectories (with their trees) as JSONL."""

        def go():
            from learnat_cli.stages.decompose import DecomposeConfig, decompose_all, select_examples
            from learnat_cli.jsonl import done_ids
            from learnat_cli.synthesis.mcts import MctsConfig
            from learnat_cli.synthesis.teachers import default_cache, make_teacher

            cfg = DecomposeConfig(
                mcts=MctsConfig(simulations=simulations, max_depth=max_depth, c=c_uct, children=children,
                                alpha=alpha, prune=prune, early_stop=early_stop),
                db=db, db_root=db_root, tables=tables, dialect=dialect, limit=limit, shard=_shard(shard),
                workers=workers)
            t = make_teacher(teacher, url=teacher_url, model=teacher_model, api_key=api_key,
                             concurrency=concurrency, temperature=temperature,
                             cache=default_cache(cache, cache_dir), dialect=dialect, seed=seed,
                             prompts_dir=prompts)
            resume = output not in (None, "-")
            skip = done_ids(output) if resume else set()
            if skip:
                console.print(f"resuming: {len(skip)} example(s) already in {output}")
            examples = list(select_examples(input, cfg, skip))
            stats = {"n": 0, "gold": 0, "calls": 0}
            tree_sink = sink(trees, append=trees not in (None, "-")) if trees else None
            with sink(output, append=resume) as out, progress() as prog:
                tsink = tree_sink.__enter__() if tree_sink else None
                task = prog.add_task("decompose", total=len(examples))
                try:
                    def on_done(rec):
                        full = rec.model_dump(mode="json")
                        if tsink is not None:
                            tsink.write(full)
                        if slim:
                            full = {k: v for k, v in full.items() if k != "nodes"}
                        out.write(full)
                        stats["n"] += 1
                        stats["gold"] += int(rec.reached_gold)
                        stats["calls"] += rec.teacher_calls
                        if show_tree:
                            from .tree_view import render_tree

                            console.print(render_tree(rec))
                        prog.advance(task)

                    asyncio.run(decompose_all(examples, t, cfg, on_done))
                finally:
                    if tree_sink:
                        tree_sink.__exit__(None, None, None)
            n = stats["n"]
            if n:
                console.print(f"decomposed {n} example(s): {stats['gold']} reached the gold "
                              f"({100 * stats['gold'] / n:.1f}%), {stats['calls'] / n:.2f} teacher calls each")

        run(go)
