"""Where learnat keeps things: the user cache (``LEARNAT_CACHE``, default ``~/.cache/learnat``)."""

from __future__ import annotations

import hashlib
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


#: files up to this size are hashed whole by :func:`folder_content_identity`; larger ones by sampled chunks
FULL_HASH_LIMIT = 64 << 20
_CHUNK = 1 << 20


def file_digest(path: Path, size: int | None = None) -> str:
    """sha256 of a file's bytes; of a file over :data:`FULL_HASH_LIMIT`, of its size and eight 1 MiB chunks
    spread over it (first and last included): a weight file rewritten with other values differs in all of
    them, and a multi-GB checkpoint is identified in milliseconds instead of seconds."""
    size = path.stat().st_size if size is None else size
    h = hashlib.sha256()
    with path.open("rb") as f:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: f.read(_CHUNK), b""):
                h.update(block)
        else:
            h.update(str(size).encode())
            for k in range(8):
                f.seek((size - _CHUNK) * k // 7)
                h.update(f.read(_CHUNK))
    return h.hexdigest()


def folder_content_identity(folder: Path, wanted: Callable[[str], bool]) -> list:
    """What a model folder *holds*: the name, size and :func:`file_digest` of each ``wanted`` file (sorted),
    without the folder's path or the files' mtimes -- the key of caches whose values depend only on the
    weights, so that the same adapter copied, restored from a carried run or checked out again still hits
    (the reference log-probs of ``learnat mdpo``)."""
    out: list = []
    for f in sorted(folder.iterdir()):
        if f.is_file() and wanted(f.name):
            size = f.stat().st_size
            out.append([f.name, size, file_digest(f, size)])
    return out
