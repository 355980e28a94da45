"""`learnat sft` (placeholder until issue 4 lands)."""

from __future__ import annotations

import typer

from .common import not_available


def register(app: typer.Typer) -> None:
    @app.command("sft", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def sft_cmd(ctx: typer.Context) -> None:
        """Not available yet (issue 4)."""
        not_available("sft", "issue 4")
