"""`learnat ask`: answer questions on a SQLite database with the student (parsing and printing only; the stage
is learnat_cli.stages.ask)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Annotated

import typer

from .ask_view import model_progress, show_answer
from .common import console, progress, run, sink

Opt = typer.Option


def ask_cmd(
    question: Annotated[str | None, typer.Argument(help="The question; '-': rows from stdin.")] = None,
    db: Annotated[str | None, Opt(help="A .sqlite file, or ROOT/db_id under --db-root.")] = None,
    db_root: Annotated[str | None, Opt(envvar="LEARNAT_DB_ROOT", help="Folder of <db_id>/<db_id>.sqlite")] \
        = None,
    input: Annotated[str | None, Opt("--input", "-i", help="Batch: rows (learnat/Spider/BIRD).")] = None,
    limit: Annotated[int | None, Opt(help="Batch: the first N questions (reruns included).")] = None,
    sample: Annotated[int | None, Opt(help="Batch: N questions drawn at random with --seed.")] = None,
    seed: Annotated[int, Opt(help="Seed of --sample and of --samples.")] = 0,
    index: Annotated[str | None, Opt(help="FAISS demonstration index (learnat index).")] = None,
    k: Annotated[int, Opt("--k", help="Demonstrations to retrieve.")] = 3,
    model: Annotated[str | None, Opt(help="Model folder or hub id (default: embedded 0.5B).")] = None,
    adapter: Annotated[str | None, Opt(help="LoRA adapter from learnat sft/mdpo; none: the plain base "
                                            "(default: the shipped trained student, if any).")] = None,
    backend: Annotated[str, Opt(help="auto (ct2 on CPU when installed) | transformers | ct2 | llamacpp | "
                                     "openai (a served model: --base-url, --model).")] = "auto",
    base_url: Annotated[str | None, Opt(envvar="LEARNAT_STUDENT_URL", help="openai: server URL (.../v1).")] \
        = None,
    api_key: Annotated[str | None, Opt(envvar="LEARNAT_STUDENT_API_KEY", help="openai: API key.")] = None,
    concurrency: Annotated[int, Opt(help="openai: requests in flight at most.")] = 8,
    device: Annotated[str, Opt(help="auto (CUDA if present) | cpu | cuda: student, embedder.")] = "auto",
    decompose: Annotated[str | None, Opt(help="auto (fast path for simple questions) | always | never "
                                              "(default: an adapter's shipped mode, else auto; the "
                                              "embedded 0.5B without adapter: never).")] = None,
    fast_threshold: Annotated[int, Opt(help="auto: decompose when the complexity score exceeds this.")] = 1,
    schema_format: Annotated[str, Opt(help="auto (the adapter's training format, else sql) | sql (CREATE "
                                           "TABLE) | compact (one line per table).")] = "auto",
    schema_values: Annotated[bool, Opt("--schema-values/--no-schema-values", help="Sample values.")] = True,
    evidence: Annotated[str | None, Opt(help="A hint (BIRD evidence).")] = None,
    max_new_tokens: Annotated[int, Opt(help="Answer budget (p99 of training answers).")] = 560,
    batch_size: Annotated[int, Opt(help="Batch: questions generated together (0: auto per engine).")] = 0,
    samples: Annotated[int, Opt(help="Candidates per question, voted by execution result (1: greedy).")] = 1,
    temperature: Annotated[float, Opt(help="--samples: temperature of the sampled candidates.")] = 0.8,
    top_p: Annotated[float, Opt(help="--samples: nucleus sampling threshold.")] = 0.95,
    timeout: Annotated[float, Opt(help="Query time limit in seconds.")] = 30.0,
    retries: Annotated[int, Opt(help="Retries with the error in the prompt.")] = 1,
    rebind: Annotated[bool, Opt("--rebind/--no-rebind", help="Move a column put on the wrong table of a join "
                                                         "to the one table there that has it.")] = True,
    output: Annotated[str | None, Opt("-o", "--output", help="JSONL here (batch: resumable).")] = None,
) -> None:
    """Answer a question: decomposition, SQL, and the result table (stderr); a JSONL record on stdout."""
    opts = SimpleNamespace(**locals())
    run(lambda: _ask(opts))


def _ask(o: SimpleNamespace) -> None:
    from learnat_cli.errors import LearnatError
    from learnat_cli.shipped import adapter_schema_format, default_decompose, resolve_adapter
    from learnat_cli.stages import ask as stage

    adapter = resolve_adapter(o.model, o.adapter, o.backend)
    fmt = (adapter_schema_format(adapter) or "sql") if o.schema_format == "auto" else o.schema_format
    mode = o.decompose or default_decompose(o.model, adapter)
    cfg = stage.AskConfig(decompose=mode, fast_threshold=o.fast_threshold, k_demos=o.k,
                          timeout_s=o.timeout, schema_format=fmt, schema_values=o.schema_values,
                          max_new_tokens=o.max_new_tokens, retries=o.retries, rebind=o.rebind,
                          samples=o.samples, temperature=o.temperature, top_p=o.top_p, seed=o.seed)
    cfg.check()
    stage.resolve_batch_size(o.batch_size or 1, None)  # a bad --batch-size fails before anything loads
    batch = o.input is not None or o.question == "-"
    if not batch and not o.question:
        raise LearnatError("give a question, or '-' / --input FILE for question rows")
    with console.status("loading model...") as spin:
        lm, index = stage.load(o.model, adapter, o.backend, o.device, o.index,
                               progress=model_progress(spin), base_url=o.base_url, api_key=o.api_key,
                               concurrency=o.concurrency)
    if not batch:
        from learnat_cli.db import resolve_db

        with console.status("starting...") as spin:
            rec = stage.ask_one(o.question, resolve_db(o.db, db_root=o.db_root), lm, cfg, evidence=o.evidence,
                                index=index, status=lambda phase: spin.update(f"{phase}..."))
        show_answer(rec)
        with sink(o.output) as out:
            out.write(rec)
        if rec.error:
            raise typer.Exit(1)
        return
    from learnat_cli.datasets import load_examples
    from learnat_cli.jsonl import done_ids

    rows = stage.select(load_examples(o.input or "-"), limit=o.limit, sample=o.sample, seed=o.seed)
    resume = o.output not in (None, "-")
    report = stage.AskReport()
    with sink(o.output, append=resume) as out, progress() as prog:
        task = prog.add_task("ask", total=len(rows))
        for rec in stage.ask(rows, lm, cfg, report, db=o.db, db_root=o.db_root, evidence=o.evidence,
                             index=index, skip=done_ids(o.output) if resume else (), batch_size=o.batch_size):
            out.write(rec)
            prog.advance(task)
        prog.update(task, completed=len(rows))
    console.print(report.summary())


def register(app: typer.Typer) -> None:
    app.command("ask")(ask_cmd)
