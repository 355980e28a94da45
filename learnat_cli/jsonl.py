"""JSONL input and output shared by every stage.

- ``read_jsonl(path)`` yields ``(line_number, dict)``; ``-`` reads stdin. A malformed line raises a
  :class:`LearnatError` naming the file and line.
- ``parse_record(Model, obj, file, line)`` validates a dict into a pydantic record, naming the field on error.
- ``JsonlSink`` writes records. To a file it either writes ``FILE.partial`` and renames it on success (so a
  failed run never leaves a file that looks complete), or, for resumable stages, appends and flushes each
  record as it is done (``append=True``); ``done_ids(path)`` then tells which ids to skip.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator, TypeVar

from pydantic import BaseModel, ValidationError

from learnat_cli.errors import LearnatError

M = TypeVar("M", bound=BaseModel)


def display_name(path: str | os.PathLike | None) -> str:
    return "<stdin>" if path in (None, "-") else str(path)


def _open_text(path: str | os.PathLike):
    if str(path) == "-":
        return sys.stdin
    p = Path(path)
    if not p.exists():
        raise LearnatError("no such file", file=str(p))
    if p.is_dir():
        raise LearnatError("is a directory, expected a JSONL file", file=str(p))
    try:
        return open(p, encoding="utf-8")
    except OSError as e:
        raise LearnatError(f"cannot read: {e.strerror}", file=str(p)) from None


def read_jsonl(path: str | os.PathLike = "-") -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; ``-`` streams stdin. A JSON array file
    (``[...]``, like the official Spider/BIRD ``dev.json``) is accepted too: its "line" is the 1-based item."""
    name = display_name(path)
    fh = _open_text(path)
    try:
        lineno = 0
        seen = False
        for line in fh:
            lineno += 1
            s = line.strip()
            if not s:
                continue
            if s.startswith("[") and not seen:
                yield from _read_array(line + fh.read(), name)
                return
            seen = True
            try:
                obj = json.loads(s)
            except json.JSONDecodeError as e:
                raise LearnatError(f"invalid JSON: {e.msg} (column {e.colno})", file=name, line=lineno) from None
            if not isinstance(obj, dict):
                raise LearnatError("expected a JSON object per line", file=name, line=lineno)
            yield lineno, obj
    except UnicodeDecodeError:
        raise LearnatError("not UTF-8 text", file=name) from None
    finally:
        if fh is not sys.stdin:
            fh.close()


def _read_array(text: str, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise LearnatError(f"invalid JSON: {e.msg} (line {e.lineno}, column {e.colno})", file=name) from None
    if not isinstance(items, list):
        raise LearnatError("expected a JSON array or JSON lines", file=name)
    for i, obj in enumerate(items, 1):
        if not isinstance(obj, dict):
            raise LearnatError("expected a JSON object", file=name, line=i)
        yield i, obj


def parse_record(model: type[M], obj: dict[str, Any], file: str | None = None, line: int | None = None) -> M:
    """Validate ``obj`` into ``model``; on failure raise a one-line error naming file, line and field."""
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ())) or None
        msg = err.get("msg", "invalid value")
        if err.get("type") == "missing":
            msg = "missing required field"
        raise LearnatError(msg, file=file, line=line, field=field) from None


def read_records(model: type[M], path: str | os.PathLike = "-") -> Iterator[M]:
    name = display_name(path)
    for lineno, obj in read_jsonl(path):
        yield parse_record(model, obj, name, lineno)


def dump_record(rec: BaseModel | dict[str, Any]) -> str:
    if isinstance(rec, BaseModel):
        obj = rec.model_dump(mode="json", exclude_none=False)
    else:
        obj = rec
    return json.dumps(obj, ensure_ascii=False)


def done_ids(path: str | os.PathLike | None) -> set[str]:
    """Ids already written to a resumable output file. A truncated last line (a crash mid-write) is cut off."""
    if path in (None, "-"):
        return set()
    p = Path(path)
    if not p.exists():
        return set()
    ids: set[str] = set()
    good_end = 0
    with open(p, "rb") as fh:
        pos = 0
        for raw in fh:
            pos += len(raw)
            s = raw.strip()
            if not s:
                good_end = pos
                continue
            try:
                obj = json.loads(s)
            except json.JSONDecodeError:
                break
            if not raw.endswith(b"\n"):
                break
            good_end = pos
            if isinstance(obj, dict) and "id" in obj:
                ids.add(str(obj["id"]))
    if good_end != p.stat().st_size:
        with open(p, "r+b") as fh:
            fh.truncate(good_end)
    return ids


class JsonlSink:
    """Where a stage writes its records: stdout (``None`` or ``-``) or a file.

    ``append=False``: written to ``FILE.partial`` and renamed to ``FILE`` by :meth:`close` (``ok=True``);
    an error leaves no ``FILE`` behind. ``append=True``: every record is appended and flushed at once, so a
    resumable stage loses at most the records in flight.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, append: bool = False):
        self.path = None if path in (None, "-") else Path(path)
        self.append = append
        self.count = 0
        if self.path is None:
            self._fh = sys.stdout
            self._tmp = None
        else:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            if append:
                self._tmp = None
                self._fh = open(self.path, "a", encoding="utf-8")
            else:
                self._tmp = self.path.with_name(self.path.name + ".partial")
                self._fh = open(self._tmp, "w", encoding="utf-8")

    def write(self, rec: BaseModel | dict[str, Any]) -> None:
        self._fh.write(dump_record(rec) + "\n")
        self._fh.flush()
        self.count += 1

    def close(self, ok: bool = True) -> None:
        if self._fh is sys.stdout:
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                pass
            return
        if self._fh.closed:
            return
        self._fh.close()
        if self._tmp is not None:
            if ok:
                os.replace(self._tmp, self.path)
            else:
                try:
                    self._tmp.unlink()
                except FileNotFoundError:
                    pass

    def __enter__(self) -> "JsonlSink":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)
