"""Decomposition synthesis with the AST teacher on Spider train: examples/s, the fraction reaching the gold, and
teacher calls per example with AST pruning on vs off.

    python benchmarks/bench_decompose.py --spider ../shared/spider [--n 500] [--quick]

Schemas come from tables.json (no database needed). Pruning off keeps invalid/redundant children selectable and
expandable (each expansion is a teacher call); both runs use the paper's MCTS settings (50 simulations, depth 5,
c = 1.41) and stop at the first gold match, on the same seeded sample.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path


def run(examples, prune: bool, tables: str):
    from learnat_cli.stages.decompose import DecomposeConfig, decompose_all
    from learnat_cli.synthesis.mcts import MctsConfig
    from learnat_cli.synthesis.teachers import AstTeacher

    cfg = DecomposeConfig(mcts=MctsConfig(prune=prune), tables=tables, workers=8)
    recs = []
    t0 = time.perf_counter()
    asyncio.run(decompose_all(examples, AstTeacher(), cfg, recs.append))
    return recs, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spider", required=True)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.quick:
        args.n = 100
    from learnat_cli.datasets import load_examples
    from learnat_cli.sql import try_parse

    root = Path(args.spider)
    allx = list(load_examples(root / "train_spider.json"))
    sample = random.Random(args.seed).sample(allx, min(args.n, len(allx)))
    ok = [e for e in sample if e.gold and try_parse(e.gold) is not None]
    print(f"== decompose with the AST teacher (Spider train sample of {len(sample)}; "
          f"{len(sample) - len(ok)} gold queries do not parse and are skipped)")
    run(ok, True, str(root / "tables.json"))  # warm-up: parse caches filled for both timed runs
    res = {}
    for prune in (True, False):
        recs, secs = run(ok, prune, str(root / "tables.json"))
        n = len(recs)
        calls = sum(r.teacher_calls for r in recs) / n
        nodes = sum(len(r.nodes) for r in recs) / n
        gold = sum(r.reached_gold for r in recs) / n
        steps = sum(len(r.steps) for r in recs if r.reached_gold) / max(1, sum(r.reached_gold for r in recs))
        res[prune] = calls
        print(f"pruning {'on ' if prune else 'off'}: {n / secs:,.1f} examples/s, reached gold {100 * gold:.1f}%, "
              f"{calls:.2f} teacher calls/example, {nodes:.1f} nodes/example, {steps:.2f} steps per success")
    print(f"teacher calls saved by pruning: {100 * (1 - res[True] / res[False]):.1f}%   (target >= 50%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
