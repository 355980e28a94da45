"""Where learnat keeps things: the user cache (``LEARNAT_CACHE``, default ``~/.cache/learnat``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$LEARNAT_CACHE/<parts...>`` (created)."""
    root = Path(os.environ.get("LEARNAT_CACHE") or Path.home() / ".cache" / "learnat").expanduser()
    p = root.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p
