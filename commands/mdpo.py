"""`learnat mdpo`: margin-aware DPO on AST-margin preference pairs, after `learnat sft`; paper sec. 3.3.

Reads PreferencePair JSONL (`learnat build-pairs`), writes an adapter folder and prints one manifest record on
stdout. The options are the fields of `learnat_cli.training.config.MdpoConfig` (the shared training options
plus beta, gamma, margin form...), plus `--config FILE`; the work is `learnat_cli.stages.mdpo.mdpo`.
"""

from __future__ import annotations

import typer

from learnat_cli.training.config import MdpoConfig

from .common import config_command, print_manifest, train_progress


@config_command(MdpoConfig)
def mdpo(cfg: MdpoConfig) -> None:
    """Margin-aware DPO on preference pairs; print one manifest record."""
    from learnat_cli.stages.mdpo import mdpo as run_mdpo

    with train_progress("mdpo") as on_event:
        manifest = run_mdpo(cfg, on_event=on_event)
    print_manifest(manifest)


def register(app: typer.Typer) -> None:
    app.command("mdpo")(mdpo)
