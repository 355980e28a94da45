"""`learnat decompose` (placeholder until issue 3 lands)."""

from __future__ import annotations

import typer

from .common import not_available


def register(app: typer.Typer) -> None:
    @app.command("decompose", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def decompose_cmd(ctx: typer.Context) -> None:
        """Not available yet (issue 3)."""
        not_available("decompose", "issue 3")
