"""`learnat build-pairs` (placeholder until issue 3 lands)."""

from __future__ import annotations

import typer

from .common import not_available


def register(app: typer.Typer) -> None:
    @app.command("build-pairs", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def build_pairs_cmd(ctx: typer.Context) -> None:
        """Not available yet (issue 3)."""
        not_available("build-pairs", "issue 3")
