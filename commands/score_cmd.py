"""`learnat score` (placeholder until issue 2 lands)."""

from __future__ import annotations

import typer

from .common import not_available


def register(app: typer.Typer) -> None:
    @app.command("score", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def score_cmd(ctx: typer.Context) -> None:
        """Not available yet (issue 2)."""
        not_available("score", "issue 2")
