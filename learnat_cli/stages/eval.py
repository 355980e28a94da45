"""The ``eval`` stage (paper sec. 4): execution accuracy of predictions, overall and by difficulty.

Inputs: predictions — :class:`~learnat_cli.records.Prediction` rows (JSONL: ``id``, ``pred``, and ``gold``,
``db_id``, ``db_path`` when there is no gold file) or the official format (``pred.txt``: one SQL per line,
optionally ``SQL<TAB>db_id``, matched by order to the gold file); gold (optional) — Spider/BIRD JSON, learnat
JSONL, or the official ``gold.sql`` (``SQL<TAB>db_id`` per line). Outputs: one
:class:`~learnat_cli.records.EvalResult` per prediction, in input order, and an
:class:`~learnat_cli.records.EvalReport` (overall and by difficulty, with the metric and how it was chosen).

Databases: ``--db`` for all; else ``db_id`` under ``--db-root`` (the override); else the row's ``db_path``
(which ``ask`` writes); else ``db_id`` under ``$LEARNAT_DB_ROOT``. Metric: ``--metric``, else the origin of
the gold file (or of the predictions) — a Spider file gives ``spider``, a BIRD file ``bird``
(:func:`choose_metric`).
Comparison semantics: :mod:`learnat_cli.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learnat_cli.datasets import GOLD_KEYS, to_example
from learnat_cli.db import resolve_row_db
from learnat_cli.errors import LearnatError
from learnat_cli.jsonl import display_name, read_jsonl
from learnat_cli.metrics import (
    EvalConfig,
    EvalItem,
    ExecOptions,
    check_metric,
    choose_metric,
    spider_hardness,
)
from learnat_cli.metrics import evaluate as judge_all
from learnat_cli.records import DifficultyScore, EvalReport, EvalResult

MATCH_BY = ("id", "order")
Rows = str | Iterable[dict[str, Any]]


@dataclass
class EvalSettings(ExecOptions):
    match_by: str = "id"
    pred_field: str = "pred"
    workers: int = 0

    def check(self) -> None:
        if self.metric is not None:
            check_metric(self.metric)
        if self.match_by not in MATCH_BY:
            raise LearnatError(f"--match-by must be id or order, got {self.match_by!r}", field="match_by")
        self.judge_config("bird").check()

    def judge_config(self, metric: str) -> EvalConfig:
        return EvalConfig(metric=metric, workers=self.workers, timeout_s=self.timeout_s,
                          max_bytes=self.max_bytes, keep_distinct=self.keep_distinct)


def _is_text_format(path: str) -> bool:
    """The official one-SQL-per-line format: a .sql/.txt file, or a file whose first character is not JSON."""
    if path == "-":
        return False
    p = Path(path)
    if p.suffix.lower() in (".sql", ".txt"):
        return True
    if p.suffix.lower() in (".json", ".jsonl") or not p.is_file():
        return False
    with open(p, "rb") as fh:
        head = fh.read(4096).lstrip()
    return bool(head) and head[:1] not in (b"{", b"[")


def read_sql_lines(path: str, sql_key: str) -> list[tuple[int, dict[str, Any]]]:
    """``SQL`` or ``SQL<TAB>db_id`` per line (the official pred.txt / gold.sql). A blank line inside the file
    is an error (the official tool reads it as a new session); trailing blank lines are ignored."""
    name = display_name(path)
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise LearnatError("no such file", file=name) from None
    except UnicodeDecodeError:
        raise LearnatError("not UTF-8 text", file=name) from None
    while lines and not lines[-1].strip():
        lines.pop()
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            raise LearnatError("blank line: the official format has one SQL per line", file=name, line=n)
        parts = line.strip().split("\t")
        row: dict[str, Any] = {sql_key: parts[0]}
        if len(parts) > 1 and parts[1].strip():
            row["db_id"] = parts[1].strip()
        rows.append((n, row))
    return rows


def _numbered(rows: Rows, sql_key: str) -> tuple[str, list[tuple[int, dict[str, Any]]]]:
    if isinstance(rows, (str, Path)):
        path = str(rows)
        if _is_text_format(path):
            return display_name(path), read_sql_lines(path, sql_key)
        return display_name(path), list(read_jsonl(path))
    return "<rows>", [(i, r if isinstance(r, dict) else r.model_dump()) for i, r in enumerate(rows, 1)]


def _gold_rows(gold: Rows) -> tuple[str, list[tuple[int, dict[str, Any]]], list[dict[str, Any]]]:
    """(file name, [(line, row with 'gold')], raw rows) — Spider/BIRD keys mapped by the dataset loader."""
    name, raw = _numbered(gold, "gold")
    stem = Path(name).stem if name not in ("<rows>", "<stdin>") else "stdin"
    out = []
    for k, (line, obj) in enumerate(raw):
        g = obj.get("gold")
        if g is None:
            g = next((obj[key] for key in GOLD_KEYS[1:] if key in obj), None)
        if not isinstance(g, str) or not g.strip():
            raise LearnatError("expected the gold SQL as a non-empty string", file=name, line=line,
                               field="gold")
        row = dict(obj)
        row.setdefault("question", "")
        row = to_example(row, k, stem, name, line).model_dump()
        row["gold"] = g
        out.append((line, row))
    return name, out, [obj for _, obj in raw]


def build_items(predictions: Rows, settings: EvalSettings, gold: Rows | None = None
                ) -> tuple[list[EvalItem], str, str]:
    """(items, metric, how the metric was chosen). Errors name the file, line and field they come from: a gold
    row's problems blame the gold file."""
    settings.check()
    pname, preds = _numbered(predictions, settings.pred_field)
    text_preds = isinstance(predictions, (str, Path)) and _is_text_format(str(predictions))
    golds: list[tuple[int, dict[str, Any]]] | None = None
    gname = ""
    if gold is not None:
        gname, golds, graw = _gold_rows(gold)
        metric, how = choose_metric(settings.metric, graw, gname)
    else:
        if text_preds:
            raise LearnatError("the official prediction format (one SQL per line) needs --gold FILE",
                               file=pname)
        metric, how = choose_metric(settings.metric, (o for _, o in preds), pname)
    match_by = "order" if text_preds else settings.match_by
    if golds is not None and match_by == "order" and len(golds) != len(preds):
        raise LearnatError(f"{len(preds)} predictions but {len(golds)} gold rows in {gname} (matched by "
                           "order)", file=pname)
    by_id = {g["id"]: (line, g) for line, g in golds} if golds is not None else {}
    items = []
    for k, (line, obj) in enumerate(preds):
        if settings.pred_field not in obj:
            raise LearnatError("missing required field", file=pname, line=line, field=settings.pred_field)
        pred = obj[settings.pred_field]
        if pred is not None and not isinstance(pred, str):
            raise LearnatError("expected a SQL string or null", file=pname, line=line,
                               field=settings.pred_field)
        if golds is not None:
            if match_by == "order":
                gline, g = golds[k]
            else:
                if "id" not in obj:
                    raise LearnatError("missing required field (needed to match gold by id)", file=pname,
                                       line=line, field="id")
                if str(obj["id"]) not in by_id:
                    raise LearnatError(f"id {obj['id']!r} not in the gold file {gname}", file=pname,
                                       line=line, field="id")
                gline, g = by_id[str(obj["id"])]
            if text_preds and obj.get("db_id") and g.get("db_id") and obj["db_id"] != g["db_id"]:
                raise LearnatError(f"db_id {obj['db_id']!r} but the gold row {gline} has {g['db_id']!r}",
                                   file=pname, line=line, field="db_id")
            where, wline, src = gname, gline, {**g, **{k2: obj[k2] for k2 in ("db_path",) if obj.get(k2)}}
            rid = str(g.get("id"))
        else:
            where, wline, src = pname, line, obj
            gsql = obj.get("gold")
            if gsql is None:
                gsql = next((obj[key] for key in GOLD_KEYS[1:] if key in obj), None)
            if gsql is None:
                raise LearnatError("no gold SQL for this prediction (give --gold FILE or a 'gold' field)",
                                   file=pname, line=line, field="gold")
            if not isinstance(gsql, str) or not gsql.strip():
                raise LearnatError("expected the gold SQL as a non-empty string", file=pname, line=line,
                                   field="gold")
            src = {**obj, "gold": gsql}
            rid = str(obj.get("id", k))
        try:
            path = resolve_row_db(src, settings.db, settings.db_root)
        except LearnatError as e:
            field = "db_id" if src.get("db_id") or not src.get("db_path") else "db_path"
            raise LearnatError(e.message, file=where, line=wline, field=field) from None
        diff = src.get("difficulty")
        if metric == "spider" and not diff:
            diff = spider_hardness(src["gold"])
        items.append(EvalItem(id=rid, db_path=str(path), pred=pred, gold=src["gold"],
                              difficulty=str(diff) if diff else "unknown"))
    return items, metric, how


def evaluate(predictions: Rows, settings: EvalSettings | None = None, *, gold: Rows | None = None,
             on_record: Callable[[EvalResult], None] | None = None
             ) -> tuple[list[EvalResult], EvalReport]:
    """The stage: prediction rows (a file or dicts) in, one :class:`EvalResult` per row out (in input order;
    ``on_record`` sees each as soon as it and all before it are judged), plus the report."""
    settings = settings or EvalSettings()
    items, metric, how = build_items(predictions, settings, gold)
    out: list[EvalResult] = []

    def on_result(it: EvalItem, r: dict) -> None:
        rec = EvalResult(id=it.id, correct=r["correct"], error=r["error"], gold_error=r["gold_error"],
                         failure=r.get("failure"), difficulty=it.difficulty, db_path=it.db_path, pred=it.pred,
                         gold=it.gold)
        out.append(rec)
        if on_record:
            on_record(rec)

    rep = judge_all(items, settings.judge_config(metric), on_result=on_result)
    report = EvalReport(metric=metric, accuracy=rep["accuracy"], n_items=rep["n_items"],
                        timeout_s=rep["timeout_s"],
                        by_difficulty={k: DifficultyScore(**v) for k, v in rep["by_difficulty"].items()},
                        metric_chosen_by=how, keep_distinct=settings.keep_distinct,
                        max_bytes=settings.max_bytes, failures=rep.get("failures", {}))
    return out, report


def check_report_target(path: str) -> None:
    """Fail before judging anything when ``--report`` cannot be written (a folder, a missing parent...)."""
    p = Path(path)
    if p.is_dir():
        raise LearnatError("is a directory, expected a file to write", file=path)
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise LearnatError(f"cannot write: {parent} is not a folder", file=path)


def write_report(path: str, report: EvalReport) -> None:
    """The report as JSON, written to ``PATH.partial`` and renamed, so a failed write leaves no half file."""
    import os

    check_report_target(path)
    p = Path(path)
    tmp = p.with_name(p.name + ".partial")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, p)
    except OSError as e:
        tmp.unlink(missing_ok=True) if tmp.parent.is_dir() else None
        raise LearnatError(f"cannot write: {e.strerror or e}", file=path) from None
