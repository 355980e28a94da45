"""Decomposition synthesis with the AST teacher on Spider train and on BIRD dev schemas: examples/s, the
fraction reaching the gold, and teacher calls per example with AST pruning on vs off.

    python benchmarks/bench_decompose.py --spider ../shared/spider [--bird ../shared/bird] [--n 500] [--quick]

Schemas come from tables.json / dev_tables.json (no database needed). Pruning off keeps invalid/redundant
children selectable and expandable (each expansion is a teacher call); both runs use the paper's MCTS settings
(50 simulations, depth 5, c = 1.41) and stop at the first gold match, on the same seeded sample. The script
also runs against the pre-reorganisation layout (``learnat_cli.decompose``), so that a checkout of an older
commit can be measured with the same code (``PYTHONPATH=/tmp/old python benchmarks/bench_decompose.py ...``).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path


def _api():
    try:
        from learnat_cli.stages.decompose import DecomposeConfig, decompose_all
        from learnat_cli.synthesis.ast_teacher import gold_ladder
        from learnat_cli.synthesis.mcts import MctsConfig
        from learnat_cli.synthesis.teachers import AstTeacher
    except ImportError:  # an older checkout (flat layout)
        from learnat_cli.ast_steps import gold_ladder  # type: ignore
        from learnat_cli.decompose import DecomposeConfig, decompose_all  # type: ignore
        from learnat_cli.mcts import MctsConfig  # type: ignore
        from learnat_cli.teachers import AstTeacher  # type: ignore
    return DecomposeConfig, decompose_all, MctsConfig, AstTeacher, gold_ladder


def run(examples, prune: bool, tables: str):
    DecomposeConfig, decompose_all, MctsConfig, AstTeacher, _ = _api()
    cfg = DecomposeConfig(mcts=MctsConfig(prune=prune), tables=tables, workers=8)
    recs: list = []
    t0 = time.perf_counter()
    asyncio.run(decompose_all(examples, AstTeacher(), cfg, recs.append))
    return recs, time.perf_counter() - t0


def audit(recs) -> tuple[int, int, int]:
    """(wrong steps accepted, reward drops, never-ending searches): progressive nodes whose SQL is none of the
    gold's ladder steps (a perturbed variant the pruner let through), progressive children whose reward is
    below their progressive parent's, and examples not reaching the gold although the ladder's gold step was
    proposed."""
    from learnat_cli.sql import GoldAst

    gold_ladder = _api()[4]
    wrong = drops = stuck = 0
    for r in recs:
        ladder = {p.sql for p in gold_ladder(r.gold, r.question)}
        g = GoldAst(r.gold)
        by_id = {n.node_id: n for n in r.nodes}
        for n in r.nodes:
            if n.status != "progressive" or n.step is None:
                continue
            if n.step.sql not in ladder and not g.matches(n.step.sql):
                wrong += 1
            par = by_id.get(n.parent)
            if par is not None and par.status == "progressive" and n.reward < par.reward - 1e-9:
                drops += 1
        if not r.reached_gold and any(n.step and g.matches(n.step.sql) for n in r.nodes):
            stuck += 1
    return wrong, drops, stuck


def containment_audit(golds) -> str:
    """Issue 10 cases over real golds: a step keeping the first conjunct of a top-level WHERE ... AND ...
    (should
    be accepted), and a step swapping the literals of two predicates (should be rejected)."""
    from sqlglot import exp

    from learnat_cli.sql import GoldAst, parse

    n_and = ok_and = n_swap = bad_swap = 0
    for g in golds:
        tree = parse(g)
        where = tree.args.get("where") if isinstance(tree, exp.Select) else None
        if where is None:
            continue
        gold = GoldAst(g)
        if isinstance(where.this, exp.And):
            step = tree.copy()
            first = where.this
            while isinstance(first, exp.And):
                first = first.this
            step.set("where", exp.Where(this=first.copy()))
            n_and += 1
            ok_and += gold.contains(step.sql(dialect="sqlite"))
        preds = [c for c in where.find_all(exp.EQ, exp.GT, exp.LT, exp.GTE, exp.LTE, exp.NEQ)
                 if isinstance(c.expression, exp.Literal) and c.find_ancestor(exp.Select) is tree]
        lits = [c.expression.this for c in preds]
        if len(preds) >= 2 and lits[0] != lits[1] and where.find(exp.Or) is None:
            step = tree.copy()
            sp = [c for c in step.args["where"].find_all(exp.EQ, exp.GT, exp.LT, exp.GTE, exp.LTE, exp.NEQ)
                  if isinstance(c.expression, exp.Literal) and c.find_ancestor(exp.Select) is step]
            a, b = sp[0].expression.copy(), sp[1].expression.copy()
            sp[0].set("expression", b)
            sp[1].set("expression", a)
            n_swap += 1
            bad_swap += gold.contains(step.sql(dialect="sqlite"))
    return (f"one conjunct of an AND filter accepted: {ok_and}/{n_and} golds; "
            f"swapped literals accepted: {bad_swap}/{n_swap} golds")


def bench(name: str, examples_file: Path, tables: Path, n: int, seed: int) -> None:
    from learnat_cli.datasets import load_examples
    from learnat_cli.sql import try_parse

    allx = list(load_examples(examples_file))
    sample = random.Random(seed).sample(allx, min(n, len(allx)))
    ok = [e for e in sample if e.gold and try_parse(e.gold) is not None]
    print(f"== {name}: AST teacher on a sample of {len(sample)} "
          f"({len(sample) - len(ok)} gold queries do not parse and are skipped)")
    print(containment_audit([e.gold for e in ok]))
    run(ok, True, str(tables))  # warm-up: parse caches filled for both timed runs
    res = {}
    for prune in (True, False):
        recs, secs = run(ok, prune, str(tables))
        recs = [r for r in recs if not getattr(r, "error", None)]
        k = max(1, len(recs))
        calls = sum(r.teacher_calls for r in recs) / k
        nodes = sum(len(r.nodes) for r in recs) / k
        gold = sum(r.reached_gold for r in recs) / k
        steps = sum(len(r.steps) for r in recs if r.reached_gold) / max(1, sum(r.reached_gold for r in recs))
        res[prune] = calls
        wrong, drops, stuck = audit(recs)
        print(f"pruning {'on ' if prune else 'off'}: {len(recs) / secs:,.1f} examples/s, reached gold "
              f"{100 * gold:.1f}%, {calls:.2f} teacher calls/example, {nodes:.1f} nodes/example, "
              f"{steps:.2f} steps per success; wrong steps accepted {wrong}, reward drops {drops}, "
              f"gold proposed but not reached {stuck}")
    print(f"teacher calls saved by pruning: {100 * (1 - res[True] / res[False]):.1f}%   (target >= 50%)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spider", required=True)
    ap.add_argument("--bird", default=None,
                    help="BIRD folder (dev.json, dev_tables.json); default: beside --spider")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.quick:
        args.n = 100
    root = Path(args.spider)
    bench("Spider train", root / "train_spider.json", root / "tables.json", args.n, args.seed)
    bird = Path(args.bird) if args.bird else root.parent / "bird"
    if (bird / "dev.json").exists() and (bird / "dev_tables.json").exists():
        bench("BIRD dev", bird / "dev.json", bird / "dev_tables.json", args.n, args.seed)
    else:
        print(f"== BIRD dev: skipped ({bird} has no dev.json + dev_tables.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
