"""`learnat ask`: answer questions on a SQLite database with the student model."""

from __future__ import annotations

from typing import Optional

import typer
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table

from .common import DbRootOpt, console, progress, run, sink


def _model_progress():
    """A Rich bar for the one-time join/convert of the embedded model."""
    state = {}

    def cb(phase: str, done: int, total: int):
        if "prog" not in state:
            state["prog"] = progress(disable=False if console.is_terminal else True)
            state["prog"].start()
            console.print("[dim]preparing the embedded model (first use only)...[/]")
        prog = state["prog"]
        if phase not in state:
            state[phase] = prog.add_task(f"model: {phase}", total=total)
        prog.update(state[phase], completed=done, total=total)
        if phase == "convert" and done >= total:
            prog.stop()

    return cb


def show(rec: dict) -> None:
    for i, s in enumerate(rec.get("steps") or [], 1):
        console.print(f"[bold]Step {i}:[/] {s['question']}", highlight=False)
        console.print(Syntax(s["sql"], "sql", word_wrap=True))
    if rec.get("pred"):
        console.print(Panel(Syntax(rec["pred"], "sql", word_wrap=True),
                            title="SQL" + (" (decomposed)" if rec.get("decomposed") else " (fast path)")))
    if rec.get("error"):
        console.print(f"[bold red]error:[/] {rec['error']}", highlight=False)
        return
    t = Table(*rec.get("columns", []), show_lines=False)
    for r in rec.get("rows", []):
        t.add_row(*("NULL" if v is None else str(v) for v in r))
    console.print(t)
    if rec.get("truncated"):
        console.print("[dim](more rows not shown)[/]")


def register(app: typer.Typer) -> None:
    @app.command("ask")
    def ask_cmd(
        question: Optional[str] = typer.Argument(None, help="The question; '-' reads question rows (JSONL) "
                                                 "from stdin."),
        db: Optional[str] = typer.Option(None, "--db", help="A .sqlite file, or ROOT/db_id under --db-root."),
        db_root: Optional[str] = DbRootOpt,
        input: Optional[str] = typer.Option(None, "--input", "-i", help="Batch: question rows (learnat/Spider/"
                                            "BIRD) from this file."),
        index: Optional[str] = typer.Option(None, "--index", help="FAISS demonstration index (learnat index)."),
        k: int = typer.Option(3, "--k", help="Demonstrations to retrieve."),
        model: Optional[str] = typer.Option(None, "--model", help="Model folder or hub id (default: embedded "
                                            "Qwen2.5-Coder-0.5B-Instruct)."),
        adapter: Optional[str] = typer.Option(None, "--adapter", help="LoRA adapter from learnat sft/mdpo."),
        backend: str = typer.Option("transformers", "--backend", help="transformers | llamacpp."),
        decompose: str = typer.Option("auto", "--decompose", help="auto (fast path for simple questions) | "
                                      "always | never."),
        fast_threshold: int = typer.Option(1, "--fast-threshold", help="auto: decompose when the complexity "
                                           "score exceeds this."),
        evidence: Optional[str] = typer.Option(None, "--evidence", help="A hint (BIRD evidence)."),
        max_new_tokens: int = typer.Option(320, "--max-new-tokens"),
        timeout: float = typer.Option(30.0, "--timeout", help="Query time limit in seconds."),
        retries: int = typer.Option(1, "--retries", help="Retries with the error in the prompt."),
        output: Optional[str] = typer.Option(None, "-o", "--output", help="Write JSONL here (batch: resumable)."),
    ) -> None:
        """Answer a question: decomposition, SQL, and the result table (stderr); a JSONL record on stdout."""

        def go():
            from learnat_cli.stages.ask import AskConfig, answer
            from learnat_cli.db import resolve_db
            from learnat_cli.errors import LearnatError
            from learnat_cli.generation import ChatGenerator

            cfg = AskConfig(decompose=decompose, fast_threshold=fast_threshold, k_demos=k,
                            max_new_tokens=max_new_tokens, timeout_s=timeout, retries=retries)
            if decompose not in ("auto", "always", "never"):
                raise LearnatError("--decompose must be auto, always or never", field="decompose")
            batch = input is not None or question == "-"
            if not batch and not question:
                raise LearnatError("give a question, or '-' / --input FILE for question rows")
            single_db = resolve_db(db, db_root=db_root) if (db and not batch) else None
            demo_index = None
            if index:
                from learnat_cli.stages.index import DemoIndex

                demo_index = DemoIndex(index)
            gen = ChatGenerator(model, adapter, backend, progress=_model_progress())

            def generate(messages, n_tokens, temperature):
                return gen.chat(messages, max_new_tokens=n_tokens, temperature=temperature)[0]

            if not batch:
                ans = answer(question, single_db, generate, cfg, evidence=evidence, index=demo_index)
                rec = ans.record({"id": "ask-0", "question": question, "db_path": str(single_db)}, cfg.show_rows)
                show(rec)
                with sink(output) as out:
                    out.write(rec)
                if rec["error"]:
                    raise typer.Exit(1)
                return
            from learnat_cli.datasets import load_examples
            from learnat_cli.jsonl import done_ids

            src = input or "-"
            resume = output not in (None, "-")
            skip = done_ids(output) if resume else set()
            rows = [ex for ex in load_examples(src) if ex.id not in skip]
            n_ok = 0
            with sink(output, append=resume) as out, progress() as prog:
                task = prog.add_task("ask", total=len(rows))
                for ex in rows:
                    path = resolve_db(db, db_id=ex.db_id, db_root=db_root, db_path=ex.db_path)
                    ans = answer(ex.question, path, generate, cfg, evidence=ex.evidence or evidence,
                                 index=demo_index, exclude_ids=(ex.id,))
                    out.write(ans.record(ex.model_dump(exclude_none=True), cfg.show_rows))
                    n_ok += ans.error is None
                    prog.advance(task)
            console.print(f"answered {len(rows)} question(s); {n_ok} ran without error")

        run(go)
