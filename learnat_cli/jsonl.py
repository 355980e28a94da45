"""JSONL input and output shared by every stage.

- ``read_jsonl(path)`` yields ``(line_number, dict)``; ``-`` reads stdin. A malformed line (invalid JSON, not
  UTF-8, nested too deeply, not an object) raises a :class:`LearnatError` naming the file and line.
- ``parse_record(Model, obj, file, line)`` validates a dict into a pydantic record, naming the field on error.
- ``JsonlSink`` writes records. To a file it either writes ``FILE.partial`` and renames it on success (so a
  failed run never leaves a file that looks complete), or, for resumable stages, appends and flushes each
  record as it is done (``append=True``); ``done_ids(path)`` then tells which ids to skip.
- One writer per output: a file sink holds an exclusive ``flock`` on ``FILE.lock`` (removed when it closes)
  and a second process writing the same file is refused with a one-line error.
- Resuming never drops records silently: ``done_ids`` repairs only a torn *last* line (a crash mid-write) and
  stops with ``FILE:LINE`` on a corrupt line anywhere else.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from pydantic import BaseModel, ValidationError

from learnat_cli.errors import LearnatError

M = TypeVar("M", bound=BaseModel)
PathLike = str | os.PathLike[str]


def display_name(path: PathLike | None) -> str:
    return "<stdin>" if path in (None, "-") else str(path)


def _open_binary(path: PathLike) -> IO[bytes]:
    if str(path) == "-":
        buf: IO[bytes] | None = getattr(sys.stdin, "buffer", None)
        return buf if buf is not None else _TextAsBytes(sys.stdin)  # type: ignore[return-value]
    p = Path(path)
    if not p.exists():
        raise LearnatError("no such file", file=str(p))
    if p.is_dir():
        raise LearnatError("is a directory, expected a JSONL file", file=str(p))
    try:
        return open(p, "rb")
    except OSError as e:
        raise LearnatError(f"cannot read: {e.strerror}", file=str(p)) from None


class _TextAsBytes:
    """A text stream without ``.buffer`` (some test harnesses) seen as bytes."""

    def __init__(self, fh: IO[str]):
        self._fh = fh

    def __iter__(self) -> Iterator[bytes]:
        for line in self._fh:
            yield line.encode("utf-8", "surrogateescape")

    def read(self) -> bytes:
        return self._fh.read().encode("utf-8", "surrogateescape")

    def close(self) -> None:
        pass


def _loads(text: str | bytes, name: str, line: int | None) -> Any:
    """``json.loads`` with every failure turned into a one-line error at ``name:line``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        where = f"column {e.colno}" if line is not None else f"line {e.lineno}, column {e.colno}"
        raise LearnatError(f"invalid JSON: {e.msg} ({where})", file=name, line=line) from None
    except RecursionError:
        raise LearnatError("JSON nested too deeply", file=name, line=line) from None


def _decode(raw: bytes, name: str, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LearnatError(f"not UTF-8 text (byte {e.start + 1} of the line)", file=name, line=line) from None


def read_jsonl(path: PathLike = "-") -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; ``-`` streams stdin. A JSON array file
    (``[...]``, like the official Spider/BIRD ``dev.json``) is accepted too: its "line" is the 1-based
    item."""
    name = display_name(path)
    fh = _open_binary(path)
    try:
        lineno = 0
        seen = False
        for raw in fh:
            lineno += 1
            text = _decode(raw, name, lineno)
            if lineno == 1:
                text = text.lstrip("\ufeff")
            s = text.strip()
            if not s:
                continue
            if s.startswith("[") and not seen:
                yield from _read_array(raw + fh.read(), name, lineno)
                return
            seen = True
            obj = _loads(s, name, lineno)
            if not isinstance(obj, dict):
                raise LearnatError("expected a JSON object per line", file=name, line=lineno)
            yield lineno, obj
    finally:
        if str(path) != "-":
            fh.close()


def _read_array(data: bytes, name: str, first_line: int) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        text = data.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as e:
        line = first_line + data[:e.start].count(b"\n")
        raise LearnatError("not UTF-8 text", file=name, line=line) from None
    items = _loads(text, name, None)
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


def read_records(model: type[M], path: PathLike = "-") -> Iterator[M]:
    name = display_name(path)
    for lineno, obj in read_jsonl(path):
        yield parse_record(model, obj, name, lineno)


def dump_record(rec: BaseModel | dict[str, Any]) -> str:
    obj = rec.model_dump(mode="json", exclude_none=False) if isinstance(rec, BaseModel) else rec
    return json.dumps(obj, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------- one writer


_HELD: dict[str, OutputLock] = {}  # locks this process holds, by resolved output path


class OutputLock:
    """An exclusive, non-blocking ``flock`` on ``FILE.lock``: one writer per output file.

    The lock file is removed on release; a process killed while holding it leaves the file, but not the lock
    (the kernel drops it), so the next run goes ahead. Re-entrant within a process.
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.key = str(self.path.resolve())
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._fd: int | None = None
        self._nested = False

    def acquire(self) -> OutputLock:
        import fcntl

        if self.key in _HELD:
            self._nested = True
            return self
        for _ in range(5):
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise LearnatError(f"cannot write: {e.strerror}", file=str(self.path)) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise LearnatError(f"another process is writing this file (lock {self.lock_path.name} held); "
                                   "wait for it or use another -o", file=str(self.path)) from None
            try:  # the previous holder may have removed the lock file between our open and flock
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                _HELD[self.key] = self
                return self
            os.close(fd)
        raise LearnatError("cannot take the output lock", file=str(self.path))

    def release(self) -> None:
        if self._nested or self._fd is None:
            return
        _HELD.pop(self.key, None)
        with contextlib.suppress(OSError):
            os.unlink(self.lock_path)
        os.close(self._fd)
        self._fd = None


def _check_writable_target(path: Path) -> None:
    if path.is_dir():
        raise LearnatError("is a directory, expected a file to write", file=str(path))
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LearnatError(f"cannot create the folder: {e.strerror}", file=str(parent)) from None
    if not parent.is_dir():
        raise LearnatError("not a folder", file=str(parent))


def done_ids(path: PathLike | None) -> set[str]:
    """Ids already written to a resumable output file.

    A torn last line (a crash mid-write: no newline, not valid JSON) is cut off; a complete last record that
    lacks only its newline gets one. A corrupt line anywhere else stops with ``FILE:LINE`` — records after it
    are never dropped silently. Refused while another process writes the file.
    """
    if path in (None, "-"):
        return set()
    assert path is not None
    p = Path(path)
    if not p.exists():
        return set()
    if p.is_dir():
        raise LearnatError("is a directory, expected a file to write", file=str(p))
    if not p.is_file():  # /dev/null, a FIFO: nothing to resume
        return set()
    lock = OutputLock(p).acquire()
    try:
        return _scan_done(p)
    finally:
        lock.release()


def _scan_done(p: Path) -> set[str]:
    name = str(p)
    ids: set[str] = set()
    with open(p, "rb") as fh:
        lines = fh.read().split(b"\n")
    # ``lines[-1]`` is what follows the last newline: b"" for a clean file, else an unterminated last line.
    pos = 0
    for i, raw in enumerate(lines, 1):
        last = i == len(lines)
        start, pos = pos, pos + len(raw) + (0 if last else 1)
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError) as e:
            if last:  # torn by a crash mid-write: cut it, nothing after it is lost
                with open(p, "r+b") as fh:
                    fh.truncate(start)
                return ids
            why = "not UTF-8" if isinstance(e, UnicodeDecodeError) else "not valid JSON"
            raise LearnatError(f"corrupt record ({why}) in the middle of an output being resumed; fix or "
                               "remove that line, then rerun", file=name, line=i) from None
        if last:  # a complete record whose newline was lost
            with open(p, "ab") as fh:
                fh.write(b"\n")
        if isinstance(obj, dict) and "id" in obj:
            ids.add(str(obj["id"]))
    return ids


class JsonlSink:
    """Where a stage writes its records: stdout (``None`` or ``-``) or a file.

    ``append=False``: written to ``FILE.partial`` and renamed to ``FILE`` by :meth:`close` (``ok=True``);
    an error leaves no ``FILE`` behind. ``append=True``: every record is appended and flushed at once, so a
    resumable stage loses at most the records in flight. A file sink holds the :class:`OutputLock` of its
    output until it closes. Unwritable targets (a folder, ``/proc/...``) are a one-line :class:`LearnatError`.
    """

    def __init__(self, path: PathLike | None = None, *, append: bool = False):
        self.path: Path | None = None if path is None or path == "-" else Path(path)
        self.append = append
        self.count = 0
        self._tmp: Path | None = None
        self._lock: OutputLock | None = None
        self._fh: IO[str]
        if self.path is None:
            self._fh = sys.stdout
            return
        _check_writable_target(self.path)
        if self.path.exists() and not self.path.is_file():  # /dev/null, a FIFO: written directly, not locked
            try:
                self._fh = open(self.path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115
            except OSError as e:
                raise LearnatError(f"cannot write: {e.strerror}", file=str(self.path)) from None
            return
        self._lock = OutputLock(self.path).acquire()
        try:
            if append:
                self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
            else:
                self._tmp = self.path.with_name(self.path.name + ".partial")
                self._fh = open(self._tmp, "w", encoding="utf-8")  # noqa: SIM115 (closed by close())
        except OSError as e:
            self._lock.release()
            raise LearnatError(f"cannot write: {e.strerror}", file=str(self.path)) from None

    def write(self, rec: BaseModel | dict[str, Any]) -> None:
        try:
            line = dump_record(rec)
        except (TypeError, ValueError) as e:
            raise LearnatError(f"record {_rid(rec)} cannot be written as JSON: {e}") from None
        self._fh.write(line + "\n")
        self._fh.flush()
        self.count += 1

    def close(self, ok: bool = True) -> None:
        if self._fh is sys.stdout:
            with contextlib.suppress(BrokenPipeError):
                sys.stdout.flush()
            return
        if self._fh.closed:
            return
        try:
            self._fh.close()
            if self._tmp is not None and self.path is not None:
                if ok:
                    os.replace(self._tmp, self.path)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        self._tmp.unlink()
        finally:
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close(ok=exc_type is None)


def _rid(rec: BaseModel | dict[str, Any]) -> str:
    rid = rec.get("id") if isinstance(rec, dict) else getattr(rec, "id", None)
    return repr(rid) if rid is not None else "(no id)"
