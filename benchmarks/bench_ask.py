"""`learnat ask` with the embedded Qwen2.5-Coder-0.5B on a Spider dev sample: execution accuracy zero-shot,
with retrieved demonstrations from a Spider train index, and with decomposition; latency p50/p95 with the
adaptive fast path on (auto) and off (always decompose); and the fast-path rule against Spider's hardness
labels.

    python benchmarks/bench_ask.py --spider ../shared/spider [--n 100] [--quick] [--index DIR]
                                   [--backend auto|transformers|ct2|llamacpp]
                                   [--configs zero,demos,always,auto,vote] [--samples 8]
                                   [--throughput N --runs transformers:1,transformers:8,ct2:8]

``vote``: zero-shot with execution-guided self-consistency (``--samples`` candidates: the greedy one and
samples at ``--temperature``/``--top-p``, voted by executed result), to compare with ``zero`` (greedy).

``--throughput N`` only times batch ask (zero-shot, greedy, ``learnat_cli.stages.ask.ask``) on N of the
sampled questions for each ``ENGINE:BATCH[:SCHEMA]`` of ``--runs`` (the first is the baseline: today's
sequential transformers path; SCHEMA sql or compact, default ``--schema-format``), and prints questions per
second, the speed-up over the baseline, EX, and whether runs on the same engine and schema gave the same
predictions.

Accuracy uses Spider test-suite execution semantics (learnat_cli.metrics). The Spider train index is built
once (into --index, default bench-results/spider-train-index) with the default MiniLM embedder. Every answered
question is appended to --rows (default bench-results/ask-<backend>-n<N>.jsonl) as it finishes, and a rerun
with the same file skips what is there, so a long run can be stopped and resumed.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

CONFIGS = ("zero", "demos", "always", "auto", "vote")


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spider", required=True)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--index", default="bench-results/spider-train-index")
    ap.add_argument("--model", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=560)
    ap.add_argument("--throughput", type=int, default=0,
                    help="only time batched vs sequential ask on N questions")
    ap.add_argument("--runs", default="transformers:1,transformers:8,ct2:8",
                    help="--throughput: ENGINE:BATCH runs, the first is the baseline")
    ap.add_argument("--backend", default="transformers",
                    choices=("auto", "transformers", "ct2", "llamacpp"))
    ap.add_argument("--samples", type=int, default=8, help="candidates of the vote configuration")
    ap.add_argument("--schema-format", default="sql", choices=("sql", "compact"))
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--configs", default="zero,demos,always,auto",
                    help=f"which of {','.join(CONFIGS)} to run (comma-separated)")
    ap.add_argument("--rows", default=None, help="per-question results JSONL (appended; resumes)")
    args = ap.parse_args(argv)
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    if not names or any(c not in CONFIGS for c in names):
        ap.error(f"--configs takes a comma-separated subset of {','.join(CONFIGS)}")
    if args.quick:
        args.n = 10
    from learnat_cli.datasets import load_examples
    from learnat_cli.metrics import exec_match, spider_hardness
    from learnat_cli.models import open_student
    from learnat_cli.schema import load_schema
    from learnat_cli.stages.ask import AskConfig, answer, complexity
    from learnat_cli.stages.index import DemoIndex, build_index, demo_from_record

    root = Path(args.spider)
    dev = list(load_examples(root / "dev.json"))
    if args.throughput:
        return throughput(args, dev, root)

    def db_of(ex):
        return root / "database" / ex.db_id / f"{ex.db_id}.sqlite"

    # 1. the fast-path rule on all of Spider dev (no model needed)
    print("== fast-path rule vs Spider hardness (all dev questions)")
    schemas = {}
    for thr in (0, 1, 2):
        tp = fp = fn = tn = 0
        for ex in dev:
            s = schemas.setdefault(ex.db_id, load_schema(db_of(ex)))
            simple_pred = complexity(ex.question, s) <= thr
            simple_true = spider_hardness(ex.gold) == "easy"
            tp += simple_pred and simple_true
            fp += simple_pred and not simple_true
            fn += (not simple_pred) and simple_true
            tn += (not simple_pred) and not simple_true
        hard_fast = sum(1 for ex in dev if complexity(ex.question, schemas[ex.db_id]) <= thr
                        and spider_hardness(ex.gold) in ("hard", "extra"))
        print(f"threshold {thr}: fast path for {100 * (tp + fp) / len(dev):.1f}% of questions; "
              f"precision (easy among fast) {100 * tp / max(1, tp + fp):.1f}%, "
              f"recall of easy {100 * tp / max(1, tp + fn):.1f}%, hard/extra sent to fast path: {hard_fast}")

    # 2. the index over Spider train
    idx_dir = Path(args.index)
    index = None
    needs_index = any(c in ("demos", "always", "auto") for c in names)
    if needs_index and not (idx_dir / "info.json").exists():
        t0 = time.perf_counter()
        rows = (demo_from_record(e.model_dump()) for e in load_examples(root / "train_spider.json"))
        info = build_index(rows, idx_dir)
        print(f"\n== built Spider train index: {info.count} demonstrations in "
              f"{time.perf_counter() - t0:.1f} s")
    if needs_index:
        index = DemoIndex(idx_dir)

    sample = random.Random(args.seed).sample(dev, args.n)
    t0 = time.perf_counter()
    gen = open_student(args.model, backend=args.backend)
    print(f"\n== ask on {args.n} Spider dev questions (seeded), {args.backend} backend, "
          f"schema {args.schema_format}, "
          f"model loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    fmt = "" if args.schema_format == "sql" else f"-{args.schema_format}"
    rows_path = Path(args.rows or f"bench-results/ask-{args.backend}{fmt}-n{args.n}.jsonl")
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    done: dict[tuple[str, str], dict] = {}
    if rows_path.exists():
        lines = rows_path.read_text().splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines):  # a run killed mid-write: that question is answered again
                    continue
                ap.error(f"{rows_path}:{n}: not a JSON line")
            done[(r["config"], r["id"])] = r

    all_configs = {"zero": ("zero-shot", "never", None, 1), "demos": ("demos (k=3)", "never", index, 1),
                   "always": ("demos + decomposition (fast path off)", "always", index, 1),
                   "auto": ("demos + adaptive (fast path on)", "auto", index, 1),
                   "vote": (f"zero-shot + vote (N={args.samples})", "never", None, args.samples)}
    configs = [all_configs[c] for c in names]
    results = {}
    for name, mode, idx, n_samples in configs:
        cfg = AskConfig(decompose=mode, max_new_tokens=args.max_new_tokens, k_demos=3 if idx else 0,
                        schema_format=args.schema_format, samples=n_samples, temperature=args.temperature,
                        top_p=args.top_p, seed=args.seed)
        correct, lat, decomposed, errors = 0, [], 0, 0
        by_level: dict[str, list[int]] = {}
        for ex in sample:
            r = done.get((name, ex.id))
            if r is None:
                ans = answer(ex.question, db_of(ex), gen, cfg, index=idx)
                ok = False
                if ans.error is None and ans.pred:
                    ok, _ = exec_match(db_of(ex), ans.pred, ex.gold, "spider", 30.0)
                r = {"config": name, "id": ex.id, "question": ex.question, "gold": ex.gold, "pred": ans.pred,
                     "error": ans.error, "ok": bool(ok), "latency_s": ans.latency_s,
                     "decomposed": ans.decomposed,
                     "hardness": spider_hardness(ex.gold)}
                if ans.vote is not None:
                    r["vote"] = ans.vote.model_dump()
                    r["candidates"] = [c.model_dump() for c in ans.candidates]
                with rows_path.open("a") as f:
                    f.write(json.dumps(r) + "\n")
            errors += r["error"] is not None
            correct += r["ok"]
            lat.append(r["latency_s"])
            decomposed += r["decomposed"]
            by_level.setdefault(r["hardness"], []).append(int(r["ok"]))
        results[name] = (correct / len(sample), lat)
        levels = {k: f"{100 * sum(v) / len(v):.0f}% of {len(v)}" for k, v in sorted(by_level.items())}
        print(f"{name:40s} EX {100 * correct / len(sample):5.1f}%  p50 {statistics.median(lat):5.1f} s  "
              f"p95 {pct(lat, 0.95):5.1f} s  decomposed {decomposed}/{len(sample)}  errors {errors}  "
              f"{levels}",
              flush=True)
    on = results.get("demos + adaptive (fast path on)")
    off = results.get("demos + decomposition (fast path off)")
    if on and off:
        print(f"fast path: p50 latency {statistics.median(on[1]) / statistics.median(off[1]):.2f}x of "
              f"always-decompose, "
              f"accuracy {100 * on[0]:.1f}% vs {100 * off[0]:.1f}%")
    return 0


def throughput(args, dev, root) -> int:
    """Batch ask, zero-shot greedy, for each ENGINE:BATCH of ``--runs`` (module docstring)."""
    import gc

    from learnat_cli.metrics import exec_match
    from learnat_cli.models import open_student
    from learnat_cli.stages.ask import AskConfig, AskReport, ask

    runs = []
    for item in args.runs.split(","):
        engine, _, rest = item.strip().partition(":")
        bs, _, fmt = rest.partition(":")
        runs.append((engine, int(bs or 1), fmt or args.schema_format))
    sample = random.Random(args.seed).sample(dev, args.throughput)
    db_root = str(root / "database")
    preds: dict[tuple[str, int, str], list] = {}
    base_t = None
    lm, lm_engine = None, None
    for engine, bs, fmt in runs:
        cfg = AskConfig(decompose="never", k_demos=0, max_new_tokens=args.max_new_tokens, schema_format=fmt)
        if engine != lm_engine:
            lm = None
            gc.collect()
            lm, lm_engine = open_student(args.model, backend=engine), engine
        t0 = time.perf_counter()
        recs = list(ask(sample, lm, cfg, AskReport(), db_root=db_root, batch_size=bs))
        dt = time.perf_counter() - t0
        base_t = base_t or dt
        ok = sum(exec_match(root / "database" / r.db_id / f"{r.db_id}.sqlite", r.pred, r.gold, "spider",
                            30.0)[0] for r in recs if r.pred and r.error is None)
        preds[(engine, bs, fmt)] = [(r.pred, r.error) for r in recs]
        same = [f"{e}:{b}" for (e, b, f), p in preds.items() if e == engine and b != bs and f == fmt
                and p == preds[(engine, bs, fmt)]]
        print(f"{engine:12s} batch {bs:3d} schema {fmt:7s}: {len(sample)} questions in {dt:7.1f} s = "
              f"{len(sample) / dt:.3f} q/s "
              f"({base_t / dt:.2f}x the baseline), EX {100 * ok / len(sample):.1f}%"
              + (f", same predictions as {', '.join(same)}" if same else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
