"""`learnat index` (placeholder until issue 5 lands)."""

from __future__ import annotations

import typer

from .common import not_available


def register(app: typer.Typer) -> None:
    @app.command("index", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def index_cmd(ctx: typer.Context) -> None:
        """Not available yet (issue 5)."""
        not_available("index", "issue 5")
