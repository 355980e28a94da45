"""`learnat mdpo` (placeholder until issue 4 lands)."""

from __future__ import annotations

import typer

from .common import not_available


def register(app: typer.Typer) -> None:
    @app.command("mdpo", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def mdpo_cmd(ctx: typer.Context) -> None:
        """Not available yet (issue 4)."""
        not_available("mdpo", "issue 4")
