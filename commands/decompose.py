"""`learnat decompose`: MCTS decomposition synthesis with AST pruning (parsing and printing only; the stage is
learnat_cli.stages.decompose)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Annotated, Optional

import typer

from .common import console, progress, run, sink
from .tree_view import render_tree

Opt = typer.Option
Str = Optional[str]  # noqa: UP045 (a run-time value)


def decompose_cmd(
    input: Annotated[str, typer.Argument(help="Examples with gold SQL (JSONL, Spider/BIRD); - stdin.")] = "-",
    teacher: Annotated[str, Opt(help="ast | ast:fold-joins (no join-only step) | local | hf:PATH | "
                                     "glm-4-plus | openai:MODEL | NAME.")] = "ast",
    teacher_url: Annotated[Str, Opt(help="OpenAI-compatible base URL (…/v1).")] = None,
    teacher_model: Annotated[Str, Opt(help="Model name at --teacher-url.")] = None,
    api_key: Annotated[Str, Opt(help="API key (default: the preset's environment variable).")] = None,
    concurrency: Annotated[int, Opt(help="Teacher requests in flight.")] = 8,
    workers: Annotated[int, Opt(help="Examples searched concurrently.")] = 4,
    temperature: Annotated[float, Opt(help="Teacher sampling temperature.")] = 0.8,
    simulations: Annotated[int, Opt(help="MCTS simulations per example (paper: 50).")] = 50,
    max_depth: Annotated[int, Opt(help="Maximum decomposition depth (paper: 5).")] = 5,
    children: Annotated[int, Opt(help="Candidates proposed per expansion.")] = 4,
    c_uct: Annotated[float, Opt("--c", help="UCT exploration constant (paper: 1.41).")] = 1.41,
    alpha: Annotated[float, Opt(help="Reward weight of node coverage (paper: 0.7).")] = 0.7,
    prune: Annotated[bool, Opt("--prune/--no-prune", help="Expand only progressive nodes.")] = True,
    early_stop: Annotated[bool, Opt("--early-stop/--no-early-stop", help="Stop at the gold.")] = True,
    db: Annotated[Str, Opt(help="One .sqlite file for every example.")] = None,
    db_root: Annotated[Str, Opt(envvar="LEARNAT_DB_ROOT", help="Folder of <db_id>/<db_id>.sqlite.")] = None,
    tables: Annotated[Str, Opt(help="tables.json for schemas without databases.")] = None,
    schema_format: Annotated[str, Opt(help="Schema in the rows: sql | compact (as ask --schema-format).")] \
        = "sql",
    unalias: Annotated[bool, Opt("--unalias/--keep-aliases", help="Search the gold with its table aliases "
                                 "replaced by table names (T2.name -> singer.name): training data whose "
                                 "every column names its table.")] = False,
    trees: Annotated[Str, Opt(help="Write the full search trees here; -o then holds trajectories.")] = None,
    slim: Annotated[bool, Opt(help="Leave the tree nodes out of the main output.")] = False,
    show_tree: Annotated[bool, Opt(help="Render each search tree on stderr (with a legend).")] = False,
    limit: Annotated[int | None, Opt(help="At most this many examples in all (a rerun included).")] = None,
    shard: Annotated[str, Opt(help="I/N: this machine's share of the examples.")] = "0/1",
    cache: Annotated[bool, Opt("--cache/--no-cache", help="Cache teacher calls on disk.")] = True,
    cache_dir: Annotated[Str, Opt(help="Teacher cache folder.")] = None,
    prompts: Annotated[Str, Opt(help="Folder overriding prompt templates.")] = None,
    seed: Annotated[int, Opt(help="Seed of the teacher's sampling (same seed, same output).")] = 0,
    dialect: Annotated[str, Opt(help="sqlglot dialect of the SQL.")] = "sqlite",
    output: Annotated[Str, Opt("-o", "--output", help="Write JSONL here instead of stdout.")] = None,
) -> None:
    """Search decompositions of each example; write the best trajectories (with their trees) as JSONL."""

    def go() -> None:
        from learnat_cli.stages import decompose as st
        from learnat_cli.synthesis.teachers import default_cache

        cfg = st.DecomposeConfig(
            mcts=st.MctsConfig(simulations=simulations, max_depth=max_depth, c=c_uct, children=children,
                            alpha=alpha, prune=prune, early_stop=early_stop),
            db=db, db_root=db_root, tables=tables, dialect=dialect, limit=limit, shard=st.parse_shard(shard),
            schema_format=schema_format, unalias=unalias,
            workers=workers, teacher=teacher,
            teacher_options=dict(url=teacher_url, model=teacher_model, api_key=api_key, seed=seed,
                                 concurrency=concurrency, temperature=temperature, prompts_dir=prompts,
                                 cache=default_cache(cache, cache_dir)))
        cfg.check()
        files = output not in (None, "-")
        skip = st.resume(output, trees) if files else set()
        if skip:
            console.print(f"resuming: {len(skip)} example(s) already in {output}")
        examples = list(st.select_examples(input, cfg, skip))
        records, report = st.run(examples, cfg)
        tree_sink = sink(trees, append=files) if trees else nullcontext()
        with sink(output, append=files) as out, tree_sink as tout, progress() as prog:
            task = prog.add_task("decompose", total=len(examples))
            for rec in records:
                full = rec.model_dump(mode="json")
                if tout is not None:
                    tout.write(full)  # the tree first: a crash in between is repaired by resume()
                out.write({k: v for k, v in full.items() if k != "nodes"} if slim or trees else full)
                if show_tree:
                    console.print(render_tree(rec))
                prog.advance(task)
        console.print(report.summary())

    run(go)


def register(app: typer.Typer) -> None:
    app.command("decompose")(decompose_cmd)
