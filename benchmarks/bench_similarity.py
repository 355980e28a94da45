"""AST similarity throughput: learnat's pq-gram similarity vs zss tree edit distance on Spider dev gold pairs.

    python benchmarks/bench_similarity.py --spider ../shared/spider [--pairs 20000] [--quick]

Both run on the same normalised label trees (learnat_cli.sql.label_tree). learnat is timed cold (parsing and
normalising included, caches cleared) and warm (trees cached); zss (simple_distance, Zhang-Shasha) on a
subset, since it is far slower; rates are compared per pair. Quality check: the Pearson/Spearman correlation
between the pq-gram similarity and 1 - TED / max(|a|, |b|) on the subset.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path


def clear_caches():
    from learnat_cli import sql

    for f in (sql._parse_cached, sql._normalize_cached, sql.label_tree, sql.pq_profile, sql._features):
        f.cache_clear()


def to_zss(node):
    import zss

    z = zss.Node(node.label)
    for ch in node.children:
        z.addkid(to_zss(ch))
    return z


def size(node) -> int:
    return 1 + sum(size(c) for c in node.children)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spider", required=True, help="Spider folder with dev.json")
    ap.add_argument("--pairs", type=int, default=20000)
    ap.add_argument("--zss-pairs", type=int, default=300)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.quick:
        args.pairs, args.zss_pairs = 2000, 100
    import zss

    from learnat_cli.sql import label_tree, similarity, try_parse

    queries = [r["query"] for r in json.loads((Path(args.spider) / "dev.json").read_text())]
    queries = sorted({q for q in queries if try_parse(q) is not None})
    rng = random.Random(args.seed)
    pairs = [(rng.choice(queries), rng.choice(queries)) for _ in range(args.pairs)]

    clear_caches()
    t0 = time.perf_counter()
    sims = [similarity(a, b) for a, b in pairs]
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    for a, b in pairs:
        similarity(a, b)
    warm = time.perf_counter() - t0

    sub = pairs[: args.zss_pairs]
    # zss end to end: parse + normalise + build its trees for the subset (cold), then the distances
    clear_caches()
    t0 = time.perf_counter()
    trees = {q: to_zss(label_tree(q)) for pair in sub for q in pair}
    t_zss_build = time.perf_counter() - t0
    sizes = {q: size(label_tree(q)) for pair in sub for q in pair}
    t0 = time.perf_counter()
    teds = [zss.simple_distance(trees[a], trees[b]) for a, b in sub]
    t_zss = time.perf_counter() - t0
    # learnat on the very same subset, cold, for a like-for-like rate
    clear_caches()
    t0 = time.perf_counter()
    sub_sims = [similarity(a, b) for a, b in sub]
    t_sub_cold = time.perf_counter() - t0

    import numpy as np
    from scipy.stats import pearsonr, spearmanr

    ted_sim = np.array([1 - d / max(sizes[a], sizes[b]) for d, (a, b) in zip(teds, sub, strict=True)])
    r_p = pearsonr(sub_sims, ted_sim).statistic
    r_s = spearmanr(sub_sims, ted_sim).statistic

    rate_cold, rate_warm = len(pairs) / cold, len(pairs) / warm
    rate_zss = len(sub) / t_zss
    rate_zss_e2e = len(sub) / (t_zss + t_zss_build)
    rate_sub_cold = len(sub) / t_sub_cold
    print("== AST similarity (Spider dev gold pairs)")
    print(f"distinct queries: {len(queries)}  pairs: {len(pairs)}  zss subset: {len(sub)}")
    print(f"learnat cold (parse+normalise+pq-grams): {rate_cold:,.0f} pairs/s")
    print(f"learnat warm (cached trees):             {rate_warm:,.0f} pairs/s")
    print(f"learnat cold on the zss subset:          {rate_sub_cold:,.0f} pairs/s")
    print(f"zss end to end (parse + trees + TED):    {rate_zss_e2e:,.1f} pairs/s")
    print(f"zss TED alone (trees prebuilt):          {rate_zss:,.1f} pairs/s")
    print(f"ratio, all pairs cold (each distinct query parsed once) vs zss TED: {rate_cold / rate_zss:,.1f}x")
    print("ratio, worst case (every pair parsed fresh) vs zss end to end: "
          f"{rate_sub_cold / rate_zss_e2e:,.1f}x")
    print(f"ratio, comparison of prepared trees (learnat warm vs zss TED): {rate_warm / rate_zss:,.1f}x"
          "   (target >= 10x)")
    print(f"agreement with 1 - TED/max size: Pearson {r_p:.3f}, Spearman {r_s:.3f}")
    print(f"mean similarity over pairs: {sum(sims) / len(sims):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
