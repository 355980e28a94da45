"""Dataset loaders: the official Spider and BIRD files, and learnat's own JSONL, as :class:`Example` records.

Detected per row:
- learnat JSONL: ``id``, ``question``, ``gold`` (optional), ``db_id``/``db_path``, ``evidence``,
  ``difficulty``;
- Spider (``dev.json``, ``train_spider.json``): ``db_id``, ``question``, ``query`` -> id
  ``<file stem>-<index>`` (0-based position in the file, e.g. ``dev-0``);
- BIRD (``dev.json``, mini-dev): ``question_id``, ``db_id``, ``question``, ``evidence``, ``SQL``,
  ``difficulty`` -> id ``bird-<question_id>``.
Unknown keys are kept (they pass through every stage). A Spider or BIRD row (one with ``query``/``SQL``/
``question_id``) must name its database (``db_id``): without it there is no schema to work on. A gold that is
not a string (``gold: 42``) is a field error, never silently dropped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from learnat_cli.errors import LearnatError
from learnat_cli.jsonl import display_name, parse_record, read_jsonl
from learnat_cli.records import Example

GOLD_KEYS = ("gold", "query", "SQL", "sql")


def to_example(obj: dict[str, Any], index: int, stem: str, file: str, line: int) -> Example:
    row = dict(obj)
    if "question" not in row:
        raise LearnatError("missing required field", file=file, line=line, field="question")
    official = "gold" not in row and any(k in row for k in ("query", "SQL", "question_id"))
    if "gold" not in row:
        for k in GOLD_KEYS[1:]:
            if k in row and row[k] is not None:
                if not isinstance(row[k], str) and k != "sql":
                    raise LearnatError("expected the gold SQL as a string", file=file, line=line, field=k)
                if isinstance(row[k], str):
                    row["gold"] = row.pop(k)
                    break
    if official and not row.get("db_id") and not row.get("db_path"):
        raise LearnatError("missing required field (a Spider/BIRD row names its database)", file=file,
                           line=line, field="db_id")
    if "id" not in row or row["id"] in (None, ""):
        if "question_id" in row:
            row["id"] = f"bird-{row['question_id']}"
        else:
            row["id"] = f"{stem}-{index}"
    row["id"] = str(row["id"])
    return parse_record(Example, row, file, line)


def load_examples(path: str | os.PathLike[str] = "-", *, limit: int | None = None,
                  require_gold: bool = False) -> Iterator[Example]:
    """Yield examples from a Spider/BIRD JSON file or learnat JSONL (``-`` = stdin)."""
    name = display_name(path)
    stem = "stdin" if str(path) == "-" else Path(path).stem
    for index, (line, obj) in enumerate(read_jsonl(path)):
        ex = to_example(obj, index, stem, name, line)
        if require_gold and not ex.gold:
            raise LearnatError("missing gold SQL (gold/query/SQL)", file=name, line=line, field="gold")
        yield ex
        if limit is not None and index + 1 >= limit:
            return
