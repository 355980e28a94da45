"""The ``score`` stage: AST similarity (and execution match) of SQL pairs — the AST reward of LearNAT (paper
sec. 3.2), usable on its own to compare SQL.

Input records: any rows holding a predicted and a gold SQL (fields ``pred``/``gold`` by default). Output: the
same rows, every key kept, in input order and streamed, plus ``parses`` (the prediction parses),
``ast_similarity`` (pq-gram similarity of the normalised ASTs, :func:`learnat_cli.sql.similarity`; 0 when the
prediction does not parse) and, when a database is known (``--db``; ``db_id`` under ``--db-root``; the row's
``db_path``), ``exec_match`` with ``exec_error`` and ``exec_metric``. SQL nested too deeply for the parser (a
RecursionError) is an error for that row (``score_error``), not for the run. Report: a :class:`ScoreReport`.
The metric is ``--metric``, else the input's origin (:func:`learnat_cli.metrics.choose_metric`), as in
``eval``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from learnat_cli import db as dbmod
from learnat_cli.db import resolve_row_db
from learnat_cli.errors import LearnatError
from learnat_cli.jsonl import display_name, read_jsonl
from learnat_cli.metrics import ExecOptions, check_metric, choose_metric, exec_match
from learnat_cli.sql import SqlParseError, parse, similarity, try_parse

TOO_DEEP = "SQL nested too deeply to parse (RecursionError)"


@dataclass
class ScoreConfig(ExecOptions):
    pred_field: str = "pred"
    gold_field: str = "gold"
    dialect: str = "sqlite"

    def check(self) -> None:
        if self.metric is not None:
            check_metric(self.metric)
        if not self.timeout_s > 0:
            raise LearnatError(f"--timeout must be a positive number of seconds, got {self.timeout_s:g}",
                               field="timeout")
        if self.max_bytes < 1:
            raise LearnatError(f"--max-bytes must be at least 1, got {self.max_bytes}", field="max_bytes")


@dataclass
class ScoreReport:
    rows: int = 0
    parsed: int = 0
    similarity_sum: float = 0.0
    exec_rows: int = 0
    exec_correct: int = 0
    errors: int = 0
    metric: str | None = None
    metric_chosen_by: str | None = None

    def add(self, row: dict[str, Any]) -> None:
        self.rows += 1
        self.parsed += bool(row["parses"])
        self.similarity_sum += row["ast_similarity"]
        self.errors += bool(row.get("score_error"))
        if "exec_match" in row:
            self.exec_rows += 1
            self.exec_correct += bool(row["exec_match"])


Rows = str | Iterable[dict[str, Any]]


def _similarity(pred: str, gold: str, dialect: str) -> tuple[bool, float, str | None]:
    try:
        parses = try_parse(pred, dialect) is not None
        return parses, (round(similarity(pred, gold, dialect), 6) if parses else 0.0), None
    except RecursionError:
        return False, 0.0, TOO_DEEP


def score(rows: Rows, cfg: ScoreConfig | None = None) -> tuple[Iterator[dict[str, Any]], ScoreReport]:
    """The stage: rows (a JSONL path or dicts) in, scored rows out (a lazy iterator, so output streams), and a
    report filled as they are consumed. Options are checked here, before anything runs."""
    cfg = cfg or ScoreConfig()
    cfg.check()
    report = ScoreReport()
    if isinstance(rows, str):
        name, numbered = display_name(rows), read_jsonl(rows)
    else:
        name, numbered = "<rows>", enumerate(rows, 1)

    def records() -> Iterator[dict[str, Any]]:
        for line, obj in numbered:
            if report.metric is None:
                report.metric, report.metric_chosen_by = choose_metric(cfg.metric, [obj], name)
            out = score_row(obj, cfg, report.metric, name, line)
            report.add(out)
            yield out

    return records(), report


def score_row(obj: dict[str, Any], cfg: ScoreConfig, metric: str, name: str = "<rows>",
              line: int | None = None) -> dict[str, Any]:
    for f in (cfg.pred_field, cfg.gold_field):
        if f not in obj:
            raise LearnatError("missing required field", file=name, line=line, field=f)
    pred, gold = obj[cfg.pred_field], obj[cfg.gold_field]
    if not isinstance(gold, str) or not gold.strip():
        raise LearnatError("expected the gold SQL as a non-empty string", file=name, line=line,
                           field=cfg.gold_field)
    if pred is not None and not isinstance(pred, str):
        raise LearnatError("expected a SQL string or null", file=name, line=line, field=cfg.pred_field)
    out = dict(obj)
    try:
        parse(gold, cfg.dialect)
        out["parses"], out["ast_similarity"], err = _similarity(pred or "", gold, cfg.dialect)
    except SqlParseError as e:
        raise LearnatError(f"gold {e.message}", file=name, line=line, field=cfg.gold_field) from None
    except RecursionError:
        out["parses"], out["ast_similarity"], err = False, 0.0, TOO_DEEP
    if err:
        out["score_error"] = err
    if cfg.db or obj.get("db_path") or (obj.get("db_id") and (cfg.db_root or dbmod.os.environ.get(
            "LEARNAT_DB_ROOT"))):
        try:
            path = resolve_row_db(obj, cfg.db, cfg.db_root)
        except LearnatError as e:
            field = "db_id" if obj.get("db_id") else "db_path"
            raise LearnatError(e.message, file=name, line=line, field=field) from None
        ok, exec_err = exec_match(path, pred or "", gold, metric, cfg.timeout_s,
                                  keep_distinct=cfg.keep_distinct, max_bytes=cfg.max_bytes)
        out["exec_match"], out["exec_error"], out["exec_metric"] = ok, exec_err, metric
    return out
