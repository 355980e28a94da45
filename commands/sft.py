"""`learnat sft`: LoRA (or full) supervised fine-tuning of the student on chat trajectories.

Reads SftRow JSONL (`learnat build-pairs --sft`), writes an adapter folder and prints one manifest record.
The core is `learnat_cli.training.runner`; scale-out goes through `learnat_cli.training.launch` (accelerate launch).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import typer

from .common import console, run


def parse_modules(value: str | None) -> list[str] | None:
    if not value:
        return None
    mods = [m.strip() for m in value.split(",") if m.strip()]
    return mods or None


def execute(stage: str, cfg: Any, *, gpus: int, nodes: int, node_rank: int, master_addr: str | None,
            master_port: int | None, deepspeed: str | None) -> None:
    """Train in this process, or under `accelerate launch` for several processes / DeepSpeed; print the manifest."""
    from learnat_cli.training import launch
    from learnat_cli.errors import LearnatError

    if deepspeed is not None and deepspeed not in launch.ZERO_STAGES:
        raise LearnatError(f"unknown DeepSpeed stage {deepspeed!r} (expected zero2 or zero3)", field="deepspeed")
    if launch.needs_launch(gpus, nodes, deepspeed):
        console.print(f"[bold]learnat {stage}[/]: launching {gpus * nodes} process(es) with accelerate",
                      highlight=False)
        manifest = launch.launch(stage, dataclasses.asdict(cfg), gpus=gpus, nodes=nodes, node_rank=node_rank,
                                 master_addr=master_addr, master_port=master_port, deepspeed=deepspeed)
    else:
        manifest = launch.run_stage(stage, dataclasses.asdict(cfg))
    console.print(f"[green]learnat {stage}[/]: {manifest.get('steps')} steps, final loss "
                  f"{manifest.get('final_loss')}, saved to {manifest.get('output_dir')}", highlight=False)
    typer.echo(json.dumps(manifest, ensure_ascii=False))


def register(app: typer.Typer) -> None:
    @app.command("sft")
    def sft_cmd(
        input: str = typer.Argument("-", help="SFT rows (JSONL with `messages`, or `prompt`/`completion`); - is stdin."),
        output_dir: str = typer.Option("learnat-sft", "-o", "--output-dir", help="Adapter/model output folder."),
        model: str | None = typer.Option(None, "--model", help="Student: local folder, hub id, or name "
                                            "(default: the embedded Qwen2.5-Coder-0.5B-Instruct)."),
        full: bool = typer.Option(False, "--full", help="Full fine-tuning instead of LoRA."),
        lora_r: int = typer.Option(16, "--lora-r", help="LoRA rank."),
        lora_alpha: int = typer.Option(32, "--lora-alpha", help="LoRA alpha."),
        lora_dropout: float = typer.Option(0.05, "--lora-dropout", help="LoRA dropout."),
        target_modules: str | None = typer.Option(None, "--target-modules",
                                                     help="Comma-separated LoRA target modules (default: all linear)."),
        epochs: float = typer.Option(3.0, "--epochs", help="Training epochs."),
        max_steps: int = typer.Option(-1, "--max-steps", help="Stop after this many optimizer steps (-1: epochs)."),
        lr: float = typer.Option(2e-4, "--lr", help="Learning rate."),
        batch_size: int = typer.Option(1, "--batch-size", help="Per-device batch size."),
        grad_accum: int = typer.Option(8, "--grad-accum", help="Gradient accumulation steps."),
        max_length: int = typer.Option(4096, "--max-length", help="Max tokens per example (truncated after)."),
        warmup_ratio: float = typer.Option(0.0, "--warmup-ratio", help="Linear warmup as a fraction of the steps."),
        save_steps: int = typer.Option(0, "--save-steps", help="Checkpoint every K steps (0: none)."),
        resume: bool = typer.Option(False, "--resume", help="Resume from the last checkpoint in --output-dir."),
        merge: bool = typer.Option(False, "--merge", help="Also write the merged model to OUTPUT_DIR/merged."),
        seed: int = typer.Option(42, "--seed"),
        cpu: bool = typer.Option(False, "--cpu", help="Train on CPU even when a GPU is present."),
        bf16: bool | None = typer.Option(None, "--bf16/--no-bf16", help="bf16 mixed precision (default: on GPUs)."),
        gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing"),
        limit: int | None = typer.Option(None, "--limit", help="Use only the first N rows."),
        gpus: int = typer.Option(1, "--gpus", help="Processes (GPUs) per node; >1 runs through accelerate launch "
                                 "(with --cpu: CPU processes over gloo)."),
        nodes: int = typer.Option(1, "--nodes", help="Number of machines."),
        node_rank: int = typer.Option(0, "--node-rank", help="This machine's rank."),
        master_addr: str | None = typer.Option(None, "--master-addr", help="Rank-0 machine address."),
        master_port: int | None = typer.Option(None, "--master-port", help="Rank-0 port (default 29500)."),
        deepspeed: str | None = typer.Option(None, "--deepspeed", help="zero2 or zero3: write a DeepSpeed "
                                                "config and train with it."),
    ) -> None:
        """Fine-tune the student on chat trajectories (loss on assistant turns); print one manifest record."""
        from learnat_cli.training.runner import SftConfig

        def body() -> None:
            cfg = SftConfig(input=input, output_dir=output_dir, model=model, full=full, lora_r=lora_r,
                            lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                            target_modules=parse_modules(target_modules), epochs=epochs, max_steps=max_steps,
                            learning_rate=lr, batch_size=batch_size, grad_accum=grad_accum, max_length=max_length,
                            warmup_ratio=warmup_ratio, save_steps=save_steps, resume=resume, merge=merge, seed=seed,
                            cpu=cpu, bf16=bf16, gradient_checkpointing=gradient_checkpointing, limit=limit)
            execute("sft", cfg, gpus=gpus, nodes=nodes, node_rank=node_rank, master_addr=master_addr,
                    master_port=master_port, deepspeed=deepspeed)

        run(body)
