"""Where learnat keeps things: the user cache (``LEARNAT_CACHE``, default ``~/.cache/learnat``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$LEARNAT_CACHE/<parts...>`` (created)."""
    root = Path(os.environ.get("LEARNAT_CACHE") or Path.home() / ".cache" / "learnat").expanduser()
    p = root.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


def folder_identity(folder: Path, wanted: Callable[[str], bool]) -> list:
    """What changes when a model folder's contents change: its resolved path, then the name, size and mtime of
    each file whose name is ``wanted`` (sorted) -- the key of caches derived from a model (CTranslate2
    conversions, reference log-probs)."""
    out: list = [str(folder.resolve())]
    for f in sorted(folder.iterdir()):
        if f.is_file() and wanted(f.name):
            st = f.stat()
            out.append([f.name, st.st_size, st.st_mtime_ns])
    return out
