"""Where a generated token's time goes on CUDA (issue 16, after the first ``make gpu-check`` run).

The first GPU run (docs/BENCHMARKS.md, "GPU check") decoded the 0.5B-shaped student at 75 to 94 ms per step
on an H200, whatever the batch (1, 8 or 32): a per-step cost that does not grow with the batch is host-side
(Python and kernel launches), not the GPU's arithmetic. This script measures it on the same model, each
figure after a warm-up:

- ``ChatModel.chat`` (transformers ``generate``, greedy, batch 1) and ``chat_batch`` (the shrinking batch,
  8 and 32) in ms per decoding step;
- the bare decoder step (``model(next_token, past_key_values=cache)``) at batch 1 and 32, timed with a device
  sync per step and as host time alone (the time to enqueue the kernels): when the two are equal, the step
  is launch-bound;
- the top operators of five decoder steps by host time (``torch.profiler``);
- optionally (``--runs``) gpu_check training runs that a deadline skipped.

    python benchmarks/gpu_decode.py [--dry-run] [--tokens 64] [--runs mdpo-full-gc] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import gpu_check  # noqa: E402


def _sync(gpu: bool) -> None:
    if gpu:
        import torch

        torch.cuda.synchronize()


def timed(fn, gpu: bool) -> tuple[float, object]:
    _sync(gpu)
    t0 = time.perf_counter()
    out = fn()
    _sync(gpu)
    return time.perf_counter() - t0, out


def bare_steps(cm, prompt_ids, batch: int, steps: int, gpu: bool) -> dict:
    """ms per bare decoder step with a sync each step, and the host time to enqueue one (no sync)."""
    import torch
    from transformers import DynamicCache

    model = cm.model
    ids = prompt_ids.repeat(batch, 1)
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        logits = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        nxt = logits.argmax(-1)[:, None]
        synced, host = [], []
        for _ in range(steps):
            _sync(gpu)
            t0 = time.perf_counter()
            logits = model(input_ids=nxt, past_key_values=cache, use_cache=True).logits[:, -1]
            t1 = time.perf_counter()
            nxt = logits.argmax(-1)[:, None]
            _sync(gpu)
            host.append(t1 - t0)
            synced.append(time.perf_counter() - t0)
    k = len(synced) // 4  # leave the first quarter out (allocator growth)
    return {"batch": batch, "ms_per_step": 1000 * sum(synced[k:]) / len(synced[k:]),
            "host_ms_per_step": 1000 * sum(host[k:]) / len(host[k:])}


def profile_steps(cm, prompt_ids, gpu: bool, top: int = 12) -> list[dict]:
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import DynamicCache

    model = cm.model
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        nxt = model(input_ids=prompt_ids, past_key_values=cache, use_cache=True,
                    logits_to_keep=1).logits[:, -1].argmax(-1)[:, None]
        _sync(gpu)
        with profile(activities=acts) as prof:
            for _ in range(5):
                logits = model(input_ids=nxt, past_key_values=cache, use_cache=True).logits
                nxt = logits[:, -1].argmax(-1)[:, None]
            _sync(gpu)
    rows = []
    for e in sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
        dev = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        rows.append({"op": e.key[:48], "calls": e.count, "self_host_ms": e.self_cpu_time_total / 1000 / 5,
                     "self_device_ms": (dev or 0) / 1000 / 5})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="tiny model on CPU")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--runs", default="", help="gpu_check training runs to do as well (comma-separated)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import torch

    from learnat_cli.models import ChatModel

    gpu = torch.cuda.is_available() and not args.dry_run
    t_start = time.time()
    report: dict = {"device": torch.cuda.get_device_name(0) if gpu else "cpu", "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="learnat-gpu-decode-") as tmp:
        work = Path(tmp)
        model = gpu_check.build_student(work, gpu)
        cm = ChatModel(str(model), device="cuda" if gpu else "cpu")
        report["dtype"] = str(cm.model.dtype)
        msgs = [[{"role": "user", "content": f"Question: How many singers are older than {20 + i}?"}]
                for i in range(32)]
        n = args.tokens
        cm.chat(msgs[0], max_new_tokens=8)
        cm.chat_batch(msgs[:8], max_new_tokens=8)
        fresh = iter(range(1, 1000))

        def cold(b: int) -> list[list[dict]]:
            """Prompts of a length not seen before: their decoding steps' key lengths are all new."""
            k = next(fresh)
            return [[{"role": "user", "content": "Question: " + "how many singers " * (30 * k)
                      + f"are older than {20 + i}?"}] for i in range(b)]

        gen = []
        plain = cm._attention_kernels
        for label, kernels in (("cuDNN attention allowed", contextlib.nullcontext), ("learnat", plain)):
            cm._attention_kernels = kernels
            for b in (1, 8):
                batch = cold(b)
                for state in ("cold", "warm"):  # warm: the same prompts again
                    dt, _o = timed(lambda b=b, batch=batch: cm.chat_batch(batch, max_new_tokens=n), gpu)
                    steps = max(cm.last_token_counts) if b > 1 else max(1, cm.last_new_tokens)
                    gen.append({"path": f"{label}: b{b} {state}", "ms_per_step": 1000 * dt / steps})
        cm._attention_kernels = plain
        dt, _o = timed(lambda: cm.sample(cold(1)[0], 8, temperature=0.8, seed=0, max_new_tokens=n), gpu)
        gen.append({"path": "learnat: sample 8 cold", "ms_per_step": 1000 * dt / n})
        report["generation"] = gen
        prompt = cm.tok.apply_chat_template(msgs[0], add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)["input_ids"].to(cm.model.device)
        report["bare"] = [bare_steps(cm, prompt, b, n, gpu) for b in (1, 32)]
        report["profile"] = profile_steps(cm, prompt, gpu)
        cm = None  # free the GPU for the training runs
        runs = [r for r in args.runs.split(",") if r]
        if runs:
            data = gpu_check.write_data(work, 32)
            report["runs"] = [gpu_check.run_cli(r, model, data, work, 30 if gpu else 2, gpu, timeout=150)
                              for r in runs]
    report["total_s"] = time.time() - t_start
    print(f"decode profile on {report['device']} ({report['dtype']}, torch {report['torch']})")
    for g in report["generation"]:
        print(f"  {g['path']:<36} {g['ms_per_step']:8.1f} ms/step")
    for b in report["bare"]:
        print(f"  bare step b{b['batch']:<18} {b['ms_per_step']:8.1f} ms/step, "
              f"host {b['host_ms_per_step']:.1f} ms")
    print("  top operators by host time per step (host ms, device ms, calls in 5 steps):")
    for r in report["profile"]:
        print(f"    {r['op']:<48} {r['self_host_ms']:7.2f} {r['self_device_ms']:7.2f} {r['calls']:6d}")
    for r in report.get("runs", []):
        print(f"  {r}")
    print(f"total {report['total_s']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
