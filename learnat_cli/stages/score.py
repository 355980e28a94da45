"""``learnat score``: AST similarity (and execution match) of SQL pairs.

Input records: any JSONL rows holding a predicted and a gold SQL (fields ``pred``/``gold`` by default). Output:
the same rows, every key kept, plus ``parses`` (the prediction parses), ``ast_similarity`` (pq-gram similarity of
the normalised ASTs, :func:`learnat_cli.sql.similarity`; 0 when the prediction does not parse) and, when a
database is known, ``exec_match`` (BIRD semantics by default) with ``exec_error``.
Paper: the AST reward of LearNAT sec. 3.2, usable on its own to compare SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional

from learnat_cli.db import resolve_db
from learnat_cli.errors import LearnatError
from learnat_cli.jsonl import display_name, read_jsonl
from learnat_cli.sql import SqlParseError, parse, similarity, try_parse


@dataclass
class ScoreConfig:
    pred_field: str = "pred"
    gold_field: str = "gold"
    dialect: str = "sqlite"
    db: Optional[str] = None
    db_root: Optional[str] = None
    metric: str = "bird"
    timeout_s: float = 30.0


def score_rows(path: str, cfg: ScoreConfig) -> Iterator[dict[str, Any]]:
    name = display_name(path)
    for line, obj in read_jsonl(path):
        for f in (cfg.pred_field, cfg.gold_field):
            if f not in obj:
                raise LearnatError("missing required field", file=name, line=line, field=f)
        pred, gold = obj[cfg.pred_field], obj[cfg.gold_field]
        if not isinstance(gold, str):
            raise LearnatError("expected a SQL string", file=name, line=line, field=cfg.gold_field)
        try:
            parse(gold, cfg.dialect)
        except SqlParseError as e:
            raise LearnatError(f"gold {e.message}", file=name, line=line, field=cfg.gold_field) from None
        pred = pred if isinstance(pred, str) else ""
        parses = try_parse(pred, cfg.dialect) is not None
        out = dict(obj)
        out["parses"] = parses
        out["ast_similarity"] = round(similarity(pred, gold, cfg.dialect), 6) if parses else 0.0
        if cfg.db or (cfg.db_root and (obj.get("db_id") or obj.get("db_path"))) or obj.get("db_path"):
            from learnat_cli.metrics import exec_match

            try:
                path_db = resolve_db(cfg.db, db_id=obj.get("db_id"), db_root=cfg.db_root,
                                     db_path=obj.get("db_path"))
            except LearnatError as e:
                raise LearnatError(e.message, file=name, line=line, field="db_id") from None
            ok, err = exec_match(path_db, pred, gold, cfg.metric, cfg.timeout_s)
            out["exec_match"] = ok
            out["exec_error"] = err
        yield out
