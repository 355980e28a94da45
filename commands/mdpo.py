"""`learnat mdpo`: Margin-aware DPO on AST-margin preference pairs (after `learnat sft`).

Reads PreferencePair JSONL (`learnat build-pairs`), writes an adapter folder and prints one manifest record.
The core is `learnat_cli.training.mdpo_trainer`; scale-out goes through `learnat_cli.training.launch` (accelerate launch).
"""

from __future__ import annotations

import typer

from .common import run
from .sft import execute, parse_modules


def register(app: typer.Typer) -> None:
    @app.command("mdpo")
    def mdpo_cmd(
        input: str = typer.Argument("-", help="Preference pairs (JSONL: prompt, chosen, rejected, margin); - is stdin."),
        output_dir: str = typer.Option("learnat-mdpo", "-o", "--output-dir", help="Adapter/model output folder."),
        model: str | None = typer.Option(None, "--model", help="Policy: a `learnat sft` adapter folder (continued), "
                                            "a model folder, hub id or name (default: the embedded student)."),
        ref_model: str | None = typer.Option(None, "--ref-model", help="Reference model folder (default: the "
                                                "policy with its new adapter disabled / the SFT adapter frozen)."),
        beta: float = typer.Option(0.1, "--beta", help="DPO temperature beta."),
        gamma: float = typer.Option(1.0, "--gamma", help="Margin scale: loss -log s(beta*h - gamma*margin); 0 = DPO."),
        margin_form: str = typer.Option("linear", "--margin-form", help="linear (paper) or odpo "
                                        "(-log s(beta*h - alpha*log margin), needs margin > 0)."),
        odpo_alpha: float = typer.Option(1.0, "--odpo-alpha", help="alpha of the odpo margin form."),
        precompute_ref: bool = typer.Option(False, "--precompute-ref", help="Compute reference log-probs once "
                                            "before training."),
        full: bool = typer.Option(False, "--full", help="Full fine-tuning instead of LoRA."),
        lora_r: int = typer.Option(16, "--lora-r", help="LoRA rank (new adapters)."),
        lora_alpha: int = typer.Option(32, "--lora-alpha", help="LoRA alpha (new adapters)."),
        lora_dropout: float = typer.Option(0.05, "--lora-dropout", help="LoRA dropout (new adapters)."),
        target_modules: str | None = typer.Option(None, "--target-modules",
                                                     help="Comma-separated LoRA target modules (default: all linear)."),
        epochs: float = typer.Option(1.0, "--epochs", help="Training epochs."),
        max_steps: int = typer.Option(-1, "--max-steps", help="Stop after this many optimizer steps (-1: epochs)."),
        lr: float = typer.Option(5e-6, "--lr", help="Learning rate."),
        batch_size: int = typer.Option(1, "--batch-size", help="Per-device batch size (pairs)."),
        grad_accum: int = typer.Option(8, "--grad-accum", help="Gradient accumulation steps."),
        max_length: int = typer.Option(4096, "--max-length", help="Max tokens per prompt+completion."),
        warmup_ratio: float = typer.Option(0.0, "--warmup-ratio", help="Linear warmup as a fraction of the steps."),
        save_steps: int = typer.Option(0, "--save-steps", help="Checkpoint every K steps (0: none)."),
        resume: bool = typer.Option(False, "--resume", help="Resume from the last checkpoint in --output-dir."),
        merge: bool = typer.Option(False, "--merge", help="Also write the merged model to OUTPUT_DIR/merged."),
        seed: int = typer.Option(42, "--seed"),
        cpu: bool = typer.Option(False, "--cpu", help="Train on CPU even when a GPU is present."),
        bf16: bool | None = typer.Option(None, "--bf16/--no-bf16", help="bf16 mixed precision (default: on GPUs)."),
        gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing"),
        limit: int | None = typer.Option(None, "--limit", help="Use only the first N pairs."),
        gpus: int = typer.Option(1, "--gpus", help="Processes (GPUs) per node; >1 runs through accelerate launch "
                                 "(with --cpu: CPU processes over gloo)."),
        nodes: int = typer.Option(1, "--nodes", help="Number of machines."),
        node_rank: int = typer.Option(0, "--node-rank", help="This machine's rank."),
        master_addr: str | None = typer.Option(None, "--master-addr", help="Rank-0 machine address."),
        master_port: int | None = typer.Option(None, "--master-port", help="Rank-0 port (default 29500)."),
        deepspeed: str | None = typer.Option(None, "--deepspeed", help="zero2 or zero3: write a DeepSpeed "
                                                "config and train with it."),
    ) -> None:
        """Margin-aware DPO on preference pairs; print one manifest record."""
        from learnat_cli.errors import LearnatError
        from learnat_cli.training.mdpo_trainer import MARGIN_FORMS, MdpoConfig

        def body() -> None:
            if margin_form not in MARGIN_FORMS:
                raise LearnatError(f"unknown margin form {margin_form!r} (expected linear or odpo)",
                                   field="margin_form")
            cfg = MdpoConfig(input=input, output_dir=output_dir, model=model, ref_model=ref_model, beta=beta,
                             gamma=gamma, margin_form=margin_form, odpo_alpha=odpo_alpha,
                             precompute_ref=precompute_ref, full=full, lora_r=lora_r, lora_alpha=lora_alpha,
                             lora_dropout=lora_dropout, target_modules=parse_modules(target_modules),
                             epochs=epochs, max_steps=max_steps, learning_rate=lr, batch_size=batch_size,
                             grad_accum=grad_accum, max_length=max_length, warmup_ratio=warmup_ratio,
                             save_steps=save_steps, resume=resume, merge=merge, seed=seed, cpu=cpu, bf16=bf16,
                             gradient_checkpointing=gradient_checkpointing, limit=limit)
            execute("mdpo", cfg, gpus=gpus, nodes=nodes, node_rank=node_rank, master_addr=master_addr,
                    master_port=master_port, deepspeed=deepspeed)

        run(body)
