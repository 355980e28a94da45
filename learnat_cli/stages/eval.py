"""Reading ``learnat eval``'s inputs: predictions joined to gold rows and resolved to database files."""

from __future__ import annotations

from typing import Optional

from learnat_cli.datasets import load_examples
from learnat_cli.db import resolve_db
from learnat_cli.errors import LearnatError
from learnat_cli.metrics import EvalItem, spider_hardness
from learnat_cli.jsonl import display_name, read_jsonl


def build_items(predictions: str, *, gold: Optional[str] = None, db: Optional[str] = None,
                db_root: Optional[str] = None, metric: str = "bird", match_by: str = "id",
                pred_field: str = "pred") -> list[EvalItem]:
    name = display_name(predictions)
    preds = list(read_jsonl(predictions))
    golds = None
    if gold:
        golds = list(load_examples(gold))
        if match_by == "order" and len(golds) != len(preds):
            raise LearnatError(f"{len(preds)} predictions but {len(golds)} gold rows (--match-by order)",
                               file=name)
        by_id = {g.id: g for g in golds}
    items = []
    for k, (line, obj) in enumerate(preds):
        if pred_field not in obj:
            raise LearnatError("missing required field", file=name, line=line, field=pred_field)
        pred = obj[pred_field]
        if pred is not None and not isinstance(pred, str):
            raise LearnatError("expected a SQL string or null", file=name, line=line, field=pred_field)
        if golds is not None:
            if match_by == "order":
                g = golds[k]
            else:
                if "id" not in obj:
                    raise LearnatError("missing required field (needed to match gold by id)", file=name,
                                       line=line, field="id")
                g = by_id.get(str(obj["id"]))
                if g is None:
                    raise LearnatError(f"id {obj['id']!r} not in the gold file {gold}", file=name, line=line,
                                       field="id")
            gold_sql, db_id, db_path, diff, rid = g.gold, g.db_id, g.db_path, g.difficulty, g.id
        else:
            gold_sql = obj.get("gold") or obj.get("query") or obj.get("SQL")
            db_id, db_path, diff = obj.get("db_id"), obj.get("db_path"), obj.get("difficulty")
            rid = str(obj.get("id", k))
        if not gold_sql:
            raise LearnatError("no gold SQL for this prediction (give --gold or a 'gold' field)", file=name,
                               line=line, field="gold")
        try:
            path = resolve_db(db, db_id=db_id, db_root=db_root, db_path=db_path)
        except LearnatError as e:
            raise LearnatError(e.message, file=name, line=line, field="db_id") from None
        if metric == "spider" and not diff:
            diff = spider_hardness(gold_sql)
        items.append(EvalItem(id=rid, db_path=str(path), pred=pred, gold=gold_sql, difficulty=diff or "unknown"))
    return items
