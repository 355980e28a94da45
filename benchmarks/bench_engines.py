"""CPU engines for the student (issue 14.4): transformers float32 (the default path) against CTranslate2 int8
(:mod:`learnat_cli.engines_ct2`) and llama.cpp (only when ``llama_cpp`` is importable), on the same seeded
Spider dev questions, the same prompts and the same ``ask`` pipeline.

    python benchmarks/bench_engines.py --shared ../shared [--n 20] [--seed 0]
        [--engines transformers,ct2,llamacpp] [--decompose never|auto|always] [--max-new-tokens 256]
        [--threads N]

Inputs: ``<shared>/spider/dev.json`` and ``<shared>/spider/database``; the embedded student (``--model``, and
``--adapter`` for a LoRA adapter, merged before the CT2 conversion). Each question goes through
:func:`learnat_cli.stages.ask.answer` (learnat's own prompt: schema rendering, ``student_prompt``, the fast
path, validation, one retry, stop at the ``Final SQL:`` line), zero-shot (no demonstrations) and ``--decompose
never`` by default, i.e. the configuration whose llama.cpp p50 (2.4 s) is in docs/BENCHMARKS.md. The engines
run in turn on each question (interleaved, so that load from other processes on a shared machine hits them
alike).

Outputs: a table on stdout per engine: load time, EX (Spider execution semantics,
:func:`learnat_cli.metrics.exec_match`), p50/p95 latency per question (the whole ``answer``: schema,
generation, retry, execution), p50 on the questions Spider labels "easy", generated tokens/s, same-SQL
agreement with transformers, and ratios against transformers run in the same process;
``bench-results/engines-n<N>.json`` with the summary and every question's row.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ENGINES = ("transformers", "ct2", "llamacpp")


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def _ro_rows(db: Path, sql: str):
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.text_factory = lambda b: b.decode(errors="ignore")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def ex_match(db: Path, pred, gold: str) -> bool:
    """Spider execution match through learnat's metrics; if that API moved, multisets of rows read-only."""
    if not pred:
        return False
    try:
        from learnat_cli.metrics import exec_match

        return bool(exec_match(db, pred, gold, "spider", 30.0)[0])
    except (ImportError, TypeError, AttributeError):
        try:
            return Counter(_ro_rows(db, pred)) == Counter(_ro_rows(db, gold))
        except sqlite3.Error:
            return False


def report(rows: list[dict], load_s: dict, title: str) -> dict:
    """Per-engine summary of ``rows`` (only questions every engine answered) and its table on stdout."""
    names = list(dict.fromkeys(r["engine"] for r in rows))
    ids = [i for i in dict.fromkeys(r["id"] for r in rows)
           if all(any(r["id"] == i and r["engine"] == n for r in rows) for n in names)]
    summary = {}
    base_pred = {r["id"]: r["pred"] for r in rows if r["engine"] == "transformers"}
    for name in names:
        rs = [r for r in rows if r["engine"] == name and r["id"] in ids]
        lat = [r["latency_s"] for r in rs]
        easy = [r["latency_s"] for r in rs if r["hardness"] == "easy"]
        gen_s, toks = sum(r["gen_s"] for r in rs), sum(r["new_tokens"] for r in rs)
        summary[name] = {
            "n": len(rs), "load_s": load_s.get(name), "ex": sum(r["ok"] for r in rs) / len(rs),
            "p50_s": statistics.median(lat), "p95_s": pct(lat, 0.95),
            "p50_easy_s": statistics.median(easy) if easy else None, "n_easy": len(easy),
            "tokens_per_s": toks / gen_s if gen_s else 0.0, "new_tokens": toks, "gen_s": round(gen_s, 2),
            "errors": sum(r["error"] is not None for r in rs),
            "prompt_tokens": sum(r.get("prompt_tokens", 0) for r in rs),
            "same_sql_as_transformers": (sum(r["pred"] == base_pred.get(r["id"]) for r in rs) / len(rs)
                                         if base_pred else None)}
    ref = summary.get("transformers")
    print(f"\n== {len(ids)} of {title}")
    print("| engine | load | EX | p50 | p95 | p50 easy (n) | tokens/s | same SQL as tf | p50 speed-up "
          "| tok/s ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, s in summary.items():
        sp = f"{ref['p50_s'] / s['p50_s']:.2f}x" if ref and s["p50_s"] else "-"
        tr = f"{s['tokens_per_s'] / ref['tokens_per_s']:.2f}x" if ref and ref["tokens_per_s"] else "-"
        agree = s["same_sql_as_transformers"]
        same = f"{100 * agree:.0f}%" if agree is not None else "-"
        easy = f"{s['p50_easy_s']:.2f} s ({s['n_easy']})" if s["p50_easy_s"] is not None else "-"
        load = f"{s['load_s']:.1f} s" if s["load_s"] is not None else "-"
        print(f"| {name} | {load} | {100 * s['ex']:.1f}% | {s['p50_s']:.2f} s | {s['p95_s']:.2f} s | "
              f"{easy} | {s['tokens_per_s']:.1f} | {same} | {sp} | {tr} |")
    return summary


class Timed:
    """Wraps an engine as ask's ``generate(messages, max_new_tokens, temperature) -> text``, counting time and
    generated tokens."""

    def __init__(self, lm):
        self.lm, self.gen_s, self.tokens, self.prompt_tokens = lm, 0.0, 0, 0

    def __call__(self, messages, n_tokens, temperature):
        t = time.perf_counter()
        out = self.lm.chat(messages, max_new_tokens=n_tokens, temperature=temperature, stop_at_final=True)[0]
        self.gen_s += time.perf_counter() - t
        self.tokens += int(getattr(self.lm, "last_new_tokens", 0) or 0)
        self.prompt_tokens += int(getattr(self.lm, "last_prompt_tokens", 0) or 0)
        return out


def load_engine(name: str, model, adapter, threads: int):
    if name == "transformers":
        from learnat_cli.models import ChatModel

        return ChatModel(model, adapter, "transformers", threads=threads, device="cpu")
    if name == "ct2":
        from learnat_cli.engines_ct2 import Ct2Generator

        return Ct2Generator(model, adapter, threads=threads)
    from learnat_cli.models import ChatModel

    return ChatModel(model, adapter, "llamacpp", threads=threads, device="cpu")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--model", default=None)
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--decompose", default="never", choices=("never", "auto", "always"))
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--from-rows", default=None, help="only summarise the rows JSONL of an earlier run")
    args = ap.parse_args(argv)
    if args.from_rows:
        lines = [json.loads(x) for x in Path(args.from_rows).read_text().splitlines() if x.strip()]
        load = next((x["load_s"] for x in lines if "load_s" in x and "engine" not in x), {})
        report([x for x in lines if "engine" in x], load, f"the questions in {args.from_rows}")
        return 0
    names = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not names or any(e not in ENGINES for e in names):
        ap.error(f"--engines takes a comma-separated subset of {','.join(ENGINES)}")
    if "llamacpp" in names:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            print("llama_cpp is not importable: llama.cpp skipped", file=sys.stderr)
            names.remove("llamacpp")
    if "ct2" in names:
        from learnat_cli.engines_ct2 import available

        if not available():
            print("ctranslate2 is not installed: ct2 skipped", file=sys.stderr)
            names.remove("ct2")

    from learnat_cli.datasets import load_examples
    from learnat_cli.metrics import spider_hardness
    from learnat_cli.stages.ask import AskConfig, answer

    root = Path(args.shared) / "spider"
    dev = list(load_examples(root / "dev.json"))
    sample = random.Random(args.seed).sample(dev, min(args.n, len(dev)))
    cfg = AskConfig(decompose=args.decompose, k_demos=0, max_new_tokens=args.max_new_tokens)

    engines, load_s = {}, {}
    for name in names:
        gc.collect()
        t = time.perf_counter()
        engines[name] = Timed(load_engine(name, args.model, args.adapter, args.threads))
        load_s[name] = time.perf_counter() - t
        print(f"loaded {name} in {load_s[name]:.1f} s", file=sys.stderr, flush=True)

    out = Path(args.out or f"bench-results/engines-n{len(sample)}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    live = out.with_suffix(".rows.jsonl")  # every row as it is measured (a run stopped early keeps them)
    live.write_text(json.dumps({"load_s": load_s}) + "\n")
    rows: list[dict] = []
    for qi, ex in enumerate(sample):
        db = root / "database" / ex.db_id / f"{ex.db_id}.sqlite"
        hard = spider_hardness(ex.gold)
        for name, eng in engines.items():
            g0, k0, p0 = eng.gen_s, eng.tokens, eng.prompt_tokens
            ans = answer(ex.question, db, eng, cfg)
            ok = ans.error is None and ex_match(db, ans.pred, ex.gold)
            rows.append({"engine": name, "id": ex.id, "db_id": ex.db_id, "question": ex.question,
                         "gold": ex.gold,
                         "hardness": hard, "pred": ans.pred, "error": ans.error, "ok": bool(ok),
                         "attempts": ans.attempts, "latency_s": round(ans.latency_s, 3),
                         "gen_s": round(eng.gen_s - g0, 3), "new_tokens": eng.tokens - k0,
                         "prompt_tokens": eng.prompt_tokens - p0})
            with live.open("a") as f:
                f.write(json.dumps(rows[-1]) + "\n")
        line = "  ".join(f"{r['engine']} {'ok ' if r['ok'] else 'bad'} {r['latency_s']:5.1f}s"
                         for r in rows[-len(engines):])
        print(f"[{qi + 1}/{len(sample)}] {hard:6s} {line}", file=sys.stderr, flush=True)

    machine = {"cores": os.cpu_count(), "arch": platform.machine()}
    summary = report(rows, load_s, f"{len(sample)} Spider dev questions (seed {args.seed}), --decompose "
                     f"{args.decompose}, zero-shot, {args.threads} threads, {machine['arch']}, "
                     f"{machine['cores']} cores")
    out.write_text(json.dumps({"args": vars(args), "machine": machine,
                               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "summary": summary, "rows": rows}, indent=1))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
