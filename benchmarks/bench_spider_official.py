"""Check: learnat's ``--metric spider`` verdicts and Spider hardness against an independent, from-scratch
reference of the official procedures (github taoyds/test-suite-sql-eval: ``exec_eval.eval_exec_match`` driven
by ``evaluation.py --etype exec``, and ``Evaluator.eval_hardness``), item for item. No code of the official
tools is copied: the reference below re-implements their documented rules in a different way (a character
scanner for the DISTINCT removal, the official brute-force permutation product for the comparison, and the
hardness counted on the parsed ``sql`` dictionaries that Spider's ``dev.json`` ships, i.e. the official
parser's own output).

    python benchmarks/bench_spider_official.py --spider ../shared/spider [--preds preds.jsonl] [--quick]

Inputs: Spider ``dev.json`` and ``database/``; optional prediction rows (``id`` = ``dev-<index>``, ``pred``),
e.g. from ``learnat ask --input``. Predictions judged: those rows, plus systematic rewrites of every gold
(DISTINCT removed / added, ORDER BY direction flipped, ``order  by`` spacing, columns reversed, LIMIT changed,
``count(DISTINCT x)`` to ``count(x)``, the gold itself). Output: counts of agreement and every disagreement.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path

# ------------------------------------------------------------------------------------------- hardness (dict)

_AGG_NONE, _LIKE = 0, 9  # AGG_OPS[0] = 'none'; WHERE_OPS.index('like') = 9


def _has_agg(unit) -> bool:
    return unit[0] != _AGG_NONE  # as the official has_agg: also true for not_op=True and for 'and'/'or'


def official_hardness(sql: dict) -> str:
    conds = sql["from"]["conds"][::2] + sql["where"][::2] + sql["having"][::2]
    ops = sql["from"]["conds"][1::2] + sql["where"][1::2] + sql["having"][1::2]
    c1 = sum([len(sql["where"]) > 0, len(sql["groupBy"]) > 0, len(sql["orderBy"]) > 0,
              sql["limit"] is not None])
    c1 += max(0, len(sql["from"]["table_units"]) - 1)
    c1 += ops.count("or") + sum(1 for c in conds if c[1] == _LIKE)
    c2 = sum(isinstance(c[3], dict) for c in conds) + sum(isinstance(c[4], dict) for c in conds)
    c2 += sum(sql[k] is not None for k in ("intersect", "except", "union"))
    agg = sum(map(_has_agg, sql["select"][1])) + sum(map(_has_agg, sql["where"][::2]))
    agg += sum(map(_has_agg, sql["groupBy"]))
    if sql["orderBy"]:
        units = [u[1] for u in sql["orderBy"][1] if u[1]] + [u[2] for u in sql["orderBy"][1] if u[2]]
        agg += sum(map(_has_agg, units))
    agg += sum(map(_has_agg, sql["having"]))
    others = (agg > 1) + (len(sql["select"][1]) > 1) + (len(sql["where"]) > 1) + (len(sql["groupBy"]) > 1)
    if c1 <= 1 and others == 0 and c2 == 0:
        return "easy"
    if (others <= 2 and c1 <= 1 and c2 == 0) or (c1 <= 2 and others < 2 and c2 == 0):
        return "medium"
    if (others > 2 and c1 <= 2 and c2 == 0) or (2 < c1 <= 3 and others <= 2 and c2 == 0) or \
            (c1 <= 1 and others == 0 and c2 <= 1):
        return "hard"
    return "extra"


# ------------------------------------------------------------------------------------- exec match (reference)


def ref_remove_distinct(s: str) -> str:
    """A character scanner: drop each bare word 'distinct' outside strings, quoted names and comments; keep
    the first statement only (up to and including its ';')."""
    out, i, n = [], 0, len(s)
    while i < n:
        ch = s[i]
        if ch in "'\"`[":
            close = "]" if ch == "[" else ch
            j = i + 1
            while j < n:
                if s[j] == close:
                    if close in "'\"" and j + 1 < n and s[j + 1] == close:
                        j += 2
                        continue
                    break
                j += 1
            out.append(s[i:j + 1])
            i = j + 1
        elif s.startswith("--", i):
            j = s.find("\n", i)
            j = n if j < 0 else j
            out.append(s[i:j])
            i = j
        elif s.startswith("/*", i):
            j = s.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(s[i:j])
            i = j
        elif ch == ";":
            out.append(ch)
            break
        elif ch.isalnum() or ch in "_$#" or ch in "@:?":
            j = i + 1
            while j < n and (s[j].isalnum() or s[j] in "_$#"):
                j += 1
            word = s[i:j]
            if word.lower() != "distinct":
                out.append(word)
            i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _ref_exec(path: str, q: str):
    q = re.sub(r"YEAR\s*\(\s*CURDATE\s*\(\s*\)\s*\)\s*", "2020", q, flags=re.IGNORECASE)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.text_factory = lambda b: b.decode(errors="ignore")
    deadline = time.monotonic() + 30
    conn.set_progress_handler(lambda: time.monotonic() > deadline, 10000)
    try:
        return "result", conn.execute(q).fetchall()
    except Exception as e:  # noqa: BLE001 - the official tool catches everything the same way
        return "exception", e
    finally:
        conn.close()


def _ref_result_eq(r1, r2, order_matters: bool) -> bool:
    if not r1 and not r2:
        return True
    if len(r1) != len(r2) or len(r2[0]) != len(r1[0]):
        return False
    key = lambda x: str(x) + str(type(x))  # noqa: E731
    s1 = [tuple(sorted(r, key=key)) for r in r1]
    s2 = [tuple(sorted(r, key=key)) for r in r2]
    if (s1 != s2) if order_matters else (set(s1) != set(s2)):
        return False
    n = len(r1[0])
    cols1 = [{r[i] for r in r1} for i in range(n)]
    allowed = [[j for j in range(n) if all(r[j] in cols1[i] for r in r2)] for i in range(n)]
    for perm in itertools.product(*allowed):
        if len(set(perm)) != n:
            continue
        p2 = [tuple(r[j] for j in perm) for r in r2]
        if order_matters:
            if r1 == p2:
                return True
        elif Counter(r1) == Counter(p2):
            return True
    return False


def reference_verdict(db_path: str, pred: str, gold: str, keep_distinct: bool = False):
    """1, 0, or 'gold error' (the official tool asserts there)."""
    p = pred.strip().replace(" value ", " 1 ")
    p = p.replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")
    g = gold.strip().replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")
    if not keep_distinct:
        p, g = ref_remove_distinct(p), ref_remove_distinct(g)
    order_matters = "order by" in g.lower()
    folder = os.path.dirname(db_path)
    for name in os.listdir(folder):
        if not name.endswith(".sqlite"):
            continue
        f = os.path.join(folder, name)
        gf, gr = _ref_exec(f, g)
        if gf == "exception":
            return "gold error"
        pf, pr = _ref_exec(f, p)
        if pf == "exception" or not _ref_result_eq(gr, pr, order_matters):
            return 0
    return 1


# ------------------------------------------------------------------------------------------------- rewrites


def rewrites(gold: str) -> dict[str, str]:
    out = {"gold": gold}
    if re.search(r"\bdistinct\b", gold, re.I):
        out["no_distinct"] = re.sub(r"\bdistinct\s+", "", gold, flags=re.I)
    else:
        out["add_distinct"] = re.sub(r"^\s*select\s+", "SELECT DISTINCT ", gold, count=1, flags=re.I)
    if re.search(r"\border\s+by\b", gold, re.I):
        flipped = re.sub(r"\bdesc\b", "ASC", gold, flags=re.I) if re.search(r"\bdesc\b", gold, re.I) else \
            re.sub(r"(\border\s+by\s+[^;]*?)(\s+limit\b|\s*$)", r"\1 DESC\2", gold, count=1, flags=re.I)
        out["order_flipped"] = flipped
        out["order_spacing"] = re.sub(r"\border\s+by\b", "ORDER  BY", gold, flags=re.I)
    m = re.match(r"^\s*select\s+(.*?)\s+from\s", gold, re.I | re.S)
    if m and "," in m.group(1) and "(" not in m.group(1) and " from " not in gold[m.end():].lower():
        cols = [c.strip() for c in m.group(1).split(",")]
        out["cols_reversed"] = gold[:m.start(1)] + ", ".join(reversed(cols)) + gold[m.end(1):]
    if re.search(r"\blimit\s+\d+", gold, re.I):
        out["limit_changed"] = re.sub(r"\blimit\s+(\d+)", lambda k: f"LIMIT {int(k.group(1)) + 1}", gold,
                                      flags=re.I)
    if re.search(r"count\s*\(\s*distinct\b", gold, re.I):
        out["count_no_distinct"] = re.sub(r"count\s*\(\s*distinct\s+", "count(", gold, flags=re.I)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spider", required=True)
    ap.add_argument("--preds", help="JSONL prediction rows with id dev-<index> and pred")
    ap.add_argument("--quick", action="store_true", help="every 5th dev question only")
    ap.add_argument("--no-rewrites", action="store_true")
    args = ap.parse_args(argv)
    from learnat_cli.metrics import Semantics, _judge, spider_hardness

    root = Path(args.spider)
    dev = json.loads((root / "dev.json").read_text())
    bad = [(i, r["query"], official_hardness(r["sql"]), spider_hardness(r["query"]))
           for i, r in enumerate(dev) if official_hardness(r["sql"]) != spider_hardness(r["query"])]
    print(f"== hardness: {len(dev) - len(bad)} of {len(dev)} Spider dev golds classed as the official rules "
          "do")
    for i, q, want, got in bad[:20]:
        print(f"  dev-{i}: official {want}, learnat {got}: {q}")

    jobs = []  # (label, db_path, pred, gold)
    idx = range(0, len(dev), 5) if args.quick else range(len(dev))
    if not args.no_rewrites:
        for i in idx:
            r = dev[i]
            path = str(root / "database" / r["db_id"] / f"{r['db_id']}.sqlite")
            for name, sql in rewrites(r["query"]).items():
                jobs.append((name, path, sql, r["query"]))
    if args.preds:
        for line in Path(args.preds).read_text().splitlines():
            row = json.loads(line)
            i = int(str(row["id"]).split("-")[-1])
            r = dev[i]
            path = str(root / "database" / r["db_id"] / f"{r['db_id']}.sqlite")
            jobs.append(("model", path, row.get("pred") or "", r["query"]))
    sem = Semantics(metric="spider")
    conns: dict = {}
    agree = Counter()
    total = Counter()
    right = Counter()
    mism = []
    t0 = time.perf_counter()
    keep = Semantics(metric="spider", keep_distinct=True)
    jobs += [(name + "+keep", path, pred, gold) for name, path, pred, gold in jobs
             if "distinct" in name or name == "model"]
    for name, path, pred, gold in jobs:
        kd = name.endswith("+keep")
        ref = reference_verdict(path, pred, gold, kd) if pred.strip() else 0
        got = _judge(path, pred, gold, keep if kd else sem, conns)
        ours = "gold error" if got["gold_error"] else int(got["correct"])
        total[name] += 1
        right[name] += ref == 1
        if ref == ours:
            agree[name] += 1
        else:
            mism.append((name, pred, gold, ref, ours))
    print(f"== exec verdicts vs the reference ({len(jobs)} items, {time.perf_counter() - t0:.0f} s)")
    for name in total:
        print(f"  {name:18s} {agree[name]:5d} / {total[name]:5d} agree; official correct {right[name]}")
    for name, pred, gold, ref, ours in mism[:20]:
        print(f"  MISMATCH {name}: reference {ref}, learnat {ours}\n    pred: {pred}\n    gold: {gold}")
    print(f"total: {sum(agree.values())} / {len(jobs)} agree, {len(mism)} disagree")
    return 1 if bad or mism else 0


if __name__ == "__main__":
    sys.exit(main())
