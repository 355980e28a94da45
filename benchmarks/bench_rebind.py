"""What ``ask --rebind`` is worth, measured on answers a student already gave (``make loop`` runs).

For each ``ask-<config>.jsonl`` of a loop run (made without ``--rebind``), every answer whose final SQL fails
validation is passed through :func:`learnat_cli.sql.rebind_columns` exactly as ``ask`` does (kept only when
the rebound SQL validates), then both sets are scored by ``learnat eval`` in this process: EX before (the
baseline, re-scored here) and after, the questions fixed and broken, and the cost of a rebind against the
validation that precedes it (milliseconds a failing answer). An estimate from the final answers only: in
``ask`` the rebind already acts on the first answer (skipping its retry), which these records do not hold.

    python benchmarks/bench_rebind.py --run runs/spider-0.5b-compact --db-root ../shared/spider/database
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import cache
from pathlib import Path


@cache
def _schema(db: str):
    from learnat_cli.schema import load_schema

    return load_schema(db, n_samples=0)


def rebound(rows: list[dict]) -> tuple[list[dict], int, int, float, float]:
    """(rows with rebound SQL where ask would rebind, how many, how many failed validation, seconds in
    rebind, seconds validating them)."""
    from learnat_cli.sql import rebind_columns
    from learnat_cli.stages.ask import validate_sql

    out, n, failing, t_rebind, t_valid = [], 0, 0, 0.0, 0.0
    for r in rows:
        r = dict(r)
        sql, db = r.get("pred"), r.get("db_path")
        if sql and db and r.get("error"):
            schema = _schema(db)
            t = time.perf_counter()
            err = validate_sql(sql, schema)
            t_valid += time.perf_counter() - t
            if err is not None:
                failing += 1
                t = time.perf_counter()
                fixed = rebind_columns(sql, schema.names()[1])
                t_rebind += time.perf_counter() - t
                if fixed is not None and validate_sql(fixed, schema) is None:
                    r["pred"], r["rebound_from"] = fixed, sql
                    n += 1
        out.append(r)
    return out, n, failing, t_rebind, t_valid


def where_unknown_columns(results) -> dict[str, int]:
    """The ``unknown column`` wrong answers of eval ``results`` by where the column is: on another table the
    query reads (a wrong alias: what ``--rebind`` can move), only on tables the query does not read, on no
    table."""
    import re

    from sqlglot import exp

    from learnat_cli.sql import try_parse

    out = {"unknown column": 0, "wrong alias": 0, "table not read": 0, "nowhere": 0}
    for r in results:
        m = re.search(r"no such column: (\S+)", r.error or "")
        if r.failure != "unknown column" or not m or not r.db_path:
            continue
        out["unknown column"] += 1
        name = m.group(1).split(".")[-1].strip('"`[]').lower()
        owners = {t for t, cols in _schema(r.db_path).names()[1].items() if name in cols}
        tree = try_parse(r.pred or "")
        read = {t.name.lower() for t in tree.find_all(exp.Table)} if tree is not None else set()
        out["nowhere" if not owners else "wrong alias" if owners & read else "table not read"] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a make-loop run folder (runs/<name>)")
    ap.add_argument("--db-root", default=None, help="databases by db_id (default: each row's db_path)")
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = ap.parse_args(argv)

    from learnat_cli.stages.eval import EvalSettings, evaluate

    run = Path(args.run)
    files = sorted(run.glob("ask-*.jsonl"))
    if not files:
        print(f"bench_rebind: no ask-*.jsonl in {run}", file=sys.stderr)
        return 2
    settings = EvalSettings(metric="spider", db_root=args.db_root)
    res = []
    print(f"== ask --rebind on the answers of {run.name} (EX, {settings.metric} semantics)")
    print("| configuration | n | rebound | EX before | EX after | change | fixed | broken | ms validate "
          "| ms rebind |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for f in files:
        rows = [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]
        after_rows, n, failing, t_rebind, t_valid = rebound(rows)
        before, rep_b = evaluate(rows, settings)
        after, rep_a = evaluate(after_rows, settings)
        ok_b = {r.id: r.correct for r in before}
        fixed = sum(r.correct and not ok_b[r.id] for r in after)
        broken = sum(ok_b[r.id] and not r.correct for r in after)
        row = {"config": f.stem.removeprefix("ask-"), "n": rep_b.n_items, "rebound": n,
               "ex_before": round(100 * rep_b.accuracy, 1), "ex_after": round(100 * rep_a.accuracy, 1),
               "fixed": fixed, "broken": broken,
               "ms_validate": round(1000 * t_valid / max(1, failing), 2),
               "ms_rebind": round(1000 * t_rebind / max(1, failing), 2),
               "unknown_columns": where_unknown_columns(before)}
        res.append(row)
        print(f"| {row['config']} | {row['n']} | {n} | {row['ex_before']} | {row['ex_after']} | "
              f"{row['ex_after'] - row['ex_before']:+.1f} | {fixed} | {broken} | {row['ms_validate']} | "
              f"{row['ms_rebind']} |",
              flush=True)
    print("\n== where the unknown columns are (wrong answers of each configuration, before)")
    print("| configuration | unknown column | on a table the query reads (wrong alias) | only on tables it "
          "does not read | on no table |")
    print("|---|---|---|---|---|")
    for row in res:
        w = row["unknown_columns"]
        print(f"| {row['config']} | {w['unknown column']} | {w['wrong alias']} | {w['table not read']} | "
              f"{w['nowhere']} |")
    if args.json:
        print(json.dumps({"rebind": res}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
