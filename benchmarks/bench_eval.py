"""`learnat eval` throughput on Spider dev with the gold SQL as predictions, against a sequential reference
implementation of the official comparison run in the same process.

    python benchmarks/bench_eval.py --spider ../shared/spider [--quick] [--workers 2]

The reference does what the official evaluators do per item: open a connection, run the prediction, run the
gold, compare (Spider test-suite semantics: multisets, ordered when the gold has ORDER BY). learnat runs the
same items with worker processes and per-worker connections. Two runs: predictions textually identical to the
gold (learnat then runs the gold once), and predictions rewritten to differ textually but not in meaning
(``SELECT * FROM (<gold>)`` for queries without ORDER BY), so that the shortcut is not what is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path


def reference(items, timeout_s: float = 60.0) -> tuple[int, int, int]:
    """Sequential reference: correct, wrong, gold errors."""
    from learnat_cli.metrics import gold_is_ordered

    correct = wrong = gold_err = 0
    for it in items:
        def run(sql, path=it.db_path):
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
            deadline = time.monotonic() + timeout_s
            conn.set_progress_handler(lambda: time.monotonic() > deadline, 10000)
            try:
                return conn.execute(sql).fetchall()
            finally:
                conn.close()
        try:
            pred_rows = run(it.pred)
        except Exception:  # noqa: BLE001
            pred_rows = None
        try:
            gold_rows = run(it.gold)
        except Exception:  # noqa: BLE001
            gold_err += 1
            continue
        if pred_rows is None:
            wrong += 1
            continue
        if gold_is_ordered(it.gold):
            ok = pred_rows == gold_rows
        else:
            ok = Counter(map(tuple, pred_rows)) == Counter(map(tuple, gold_rows))
        correct += ok
        wrong += not ok
    return correct, wrong, gold_err


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spider", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args(argv)
    from learnat_cli.metrics import EvalConfig, EvalItem, evaluate, gold_is_ordered, spider_hardness

    root = Path(args.spider)
    rows = json.loads((root / "dev.json").read_text())
    if args.quick:
        rows = random.Random(0).sample(rows, 150)
    items = []
    for i, r in enumerate(rows):
        db = root / "database" / r["db_id"] / f"{r['db_id']}.sqlite"
        items.append(EvalItem(id=str(i), db_path=str(db), pred=r["query"], gold=r["query"],
                              difficulty=spider_hardness(r["query"])))
    variants = []
    for it in items:
        pred = it.gold if gold_is_ordered(it.gold) else f"SELECT * FROM ({it.gold.strip().rstrip(';')})"
        variants.append(EvalItem(id=it.id, db_path=it.db_path, pred=pred, gold=it.gold,
                                 difficulty=it.difficulty))

    print(f"== eval throughput (Spider dev, {len(items)} items, {args.workers} workers)")
    for name, batch in (("identical predictions", items), ("rewritten predictions", variants)):
        t0 = time.perf_counter()
        ref_ok, ref_wrong, ref_gold_err = reference(batch)
        t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        rep = evaluate(batch, EvalConfig(metric="spider", workers=args.workers, timeout_s=60.0))
        t_us = time.perf_counter() - t0
        a = rep["by_difficulty"]["all"]
        print(f"-- {name}")
        print(f"reference (sequential, official per-query connections): {len(batch) / t_ref:,.1f} items/s; "
              f"correct {ref_ok}, wrong {ref_wrong}, gold errors {ref_gold_err}")
        print(f"learnat eval: {len(batch) / t_us:,.1f} items/s; correct {a['correct']} of {a['count']} "
              f"({100 * a['accuracy']:.2f}%), gold errors {a['gold_errors']}")
        print(f"ratio learnat / reference: {t_ref / t_us:.2f}x   (target 2x on 2 cores)")
        by = {k: f"{100 * v['accuracy']:.1f}% of {v['count']}" for k, v in rep["by_difficulty"].items()}
        print(f"by difficulty: {by}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
