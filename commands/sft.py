"""`learnat sft`: fine-tune the student on chat trajectories (LoRA by default); paper sec. 3.3.

Reads SftRow JSONL (`learnat build-pairs --sft`), writes an adapter folder and prints one manifest record on
stdout. The options are the fields of `learnat_cli.training.config.SftConfig` (declared once, shared with
`mdpo`), plus `--config FILE`; the work is `learnat_cli.stages.sft.sft`.
"""

from __future__ import annotations

import typer

from learnat_cli.training.config import SftConfig

from .common import config_command, print_manifest, train_progress


@config_command(SftConfig)
def sft(cfg: SftConfig) -> None:
    """Fine-tune the student on chat trajectories (loss on assistant turns); print one manifest record."""
    from learnat_cli.stages.sft import sft as run_sft

    with train_progress("sft") as on_event:
        manifest = run_sft(cfg, on_event=on_event)
    print_manifest(manifest)


def register(app: typer.Typer) -> None:
    app.command("sft")(sft)
