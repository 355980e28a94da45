"""Training benchmarks for `learnat sft` / `learnat mdpo` (issue 4).

1. MDPO step time vs TRL's stock DPOTrainer step time, on the same tiny Qwen2 model, LoRA config and batch
   (target: MDPO within 10% of DPO). Per-step wall times come from a TrainerCallback; the first steps are
   warm-up and dropped; the two trainers run interleaved rounds so machine noise hits both alike.
2. SFT tokens/s on the embedded 0.5B student (``learnat_cli.models.resolve_model(None)``, or ``--model PATH``)
   with LoRA on this CPU, through learnat's SFTTrainer setup, against a plain PyTorch loop (forward, backward,
   AdamW step) on the same LoRA model and batches as the baseline.

    python benchmarks/bench_train.py [--quick] [--model PATH] [--threads 2] [--skip-sft]

Nothing here needs /work/shared: the data are the student prompts built from learnat's own templates.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _pairs(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        age = 20 + i
        rows.append({
            "id": f"b{i}",
            "prompt": "Database schema: CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT, age INTEGER)"
                      "\n"
                      f"Question: How many singers are older than {age}?\n",
            "chosen": f"Step 1: Which singers are older than {age}?\n"
                      f"SQL: SELECT name FROM singer WHERE age > {age}\n"
                      f"Final SQL: SELECT COUNT(*) FROM singer WHERE age > {age}\n",
            "rejected": "Step 1: List the names.\nSQL: SELECT name FROM singer\n"
                        "Final SQL: SELECT name FROM singer\n",
            "margin": round(0.1 + 0.05 * (i % 10), 3),
        })
    return rows


def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self._t = 0.0

        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self._t)

    return StepTimer()


def bench_mdpo_vs_dpo(steps: int, rounds: int, batch: int, hidden: int, workdir: Path) -> dict:
    import contextlib

    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig

    from learnat_cli.tiny import build_tiny_model
    from learnat_cli.training.mdpo_trainer import comparison_trainer
    from learnat_cli.training.runner import quiet_libraries

    quiet_libraries()
    model_dir = build_tiny_model(workdir / "tiny", hidden_size=hidden, layers=2)
    rows = _pairs(batch)

    def make(kind: str):
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        tok = AutoTokenizer.from_pretrained(model_dir)
        args = DPOConfig(output_dir=str(workdir / kind), per_device_train_batch_size=batch,
                         gradient_accumulation_steps=1, max_steps=steps, learning_rate=1e-4, beta=0.1,
                         use_cpu=True, bf16=False, report_to="none", disable_tqdm=True, logging_steps=1,
                         save_strategy="no", gradient_checkpointing=False, seed=0, dataloader_num_workers=0)
        lora = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM",
                          lora_dropout=0.0)
        timer = _step_timer()
        tr = comparison_trainer(kind, model, tok, args, rows, lora, [timer])
        return tr, timer

    times = {"dpo": [], "mdpo": []}
    for r in range(rounds):
        for kind in (("dpo", "mdpo") if r % 2 == 0 else ("mdpo", "dpo")):
            tr, timer = make(kind)
            with contextlib.redirect_stdout(sys.stderr):
                tr.train()
            times[kind].extend(timer.times[2:])  # drop warm-up steps
    dpo = statistics.median(times["dpo"])
    mdpo = statistics.median(times["mdpo"])
    return {"dpo_step_s": dpo, "mdpo_step_s": mdpo, "ratio": mdpo / dpo, "steps_timed": len(times["mdpo"]),
            "batch_pairs": batch, "hidden": hidden}


def _sft_rows(n: int) -> list[dict]:
    from learnat_cli.prompts import format_answer, student_messages

    schema = ("CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);\n"
              "CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, concert_name TEXT, stadium_id INTEGER, "
              "year TEXT);\nCREATE TABLE singer_in_concert (concert_id INTEGER, singer_id INTEGER);")
    rows = []
    for i in range(n):
        age = 20 + i
        q = f"How many singers from France are older than {age}?"
        msgs = student_messages(q, schema)
        ans = format_answer([(f"Which singers are older than {age}?",
                              f"SELECT * FROM singer WHERE age > {age}")],
                            f"SELECT COUNT(*) FROM singer WHERE age > {age} AND country = 'France'")
        rows.append({"messages": msgs + [{"role": "assistant", "content": ans}]})
    return rows


def bench_sft_tokens(model_spec, steps: int, workdir: Path) -> dict:
    import contextlib

    import torch

    from learnat_cli.models import resolve_model
    from learnat_cli.training.runner import SftConfig, build_sft_trainer

    try:
        path = resolve_model(model_spec)
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        return {"skipped": f"no 0.5B student: {e}"}
    rows = _sft_rows(steps + 2)
    cfg = SftConfig(input="-", output_dir=str(workdir / "sft"), model=path, batch_size=1, grad_accum=1,
                    max_steps=steps + 1, cpu=True, logging_steps=1)
    t0 = time.perf_counter()
    trainer, info = build_sft_trainer(cfg, rows=rows)
    load_s = time.perf_counter() - t0
    timer = _step_timer()
    trainer.add_callback(timer)
    with contextlib.redirect_stdout(sys.stderr):
        trainer.train()
    tok_per_step = [int(sum(len(x) for x in trainer.train_dataset[i:i + 1]["input_ids"]))
                    for i in range(len(trainer.train_dataset))]
    # Tokens actually processed per step, from TRL's own counter (logged every step).
    counts = [e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e]
    per_step_tokens = [b - a for a, b in zip([0] + counts[:-1], counts, strict=False)]
    timed = timer.times[1:]
    toks = per_step_tokens[1:len(timer.times)]
    trl_tps = sum(toks) / sum(timed)

    # Baseline: plain PyTorch loop on the same LoRA model and the same tokenised examples.
    model = trainer.model
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    base_times, base_tokens = [], []
    collator = trainer.data_collator
    ds = trainer.train_dataset
    for i in range(min(steps + 1, len(ds))):
        b = collator([ds[i]])
        t = time.perf_counter()
        out = model(input_ids=b["input_ids"], attention_mask=b.get("attention_mask"), labels=b["labels"])
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i > 0:
            base_times.append(time.perf_counter() - t)
            base_tokens.append(int(b["input_ids"].numel()))
    base_tps = sum(base_tokens) / sum(base_times)
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"model": path, "params": n_params, "trainable": n_train, "steps_timed": len(timed),
            "tokens_per_example": statistics.mean(tok_per_step), "sft_tokens_per_s": trl_tps,
            "torch_loop_tokens_per_s": base_tps, "ratio": trl_tps / base_tps, "load_s": load_s,
            "step_s": statistics.median(timed), "loss_mode": info["loss_mode"]}


def bench_levers(model_spec, steps: int, workdir: Path, threads: list[int]) -> dict:
    """Issue 15 part 2, CPU training-speed levers on the 0.5B student (LoRA SFT, interleaved A/B rounds):
    LoRA on the upper layers only (``--lora-layers``), length-grouped batches (``--group-by-length``: padded
    tokens per example), torch thread counts. Examples/hour from the median step time."""
    import contextlib

    import torch

    from learnat_cli.models import resolve_model
    from learnat_cli.training.runner import SftConfig, build_sft_trainer

    try:
        path = resolve_model(model_spec)
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        return {"skipped": f"no 0.5B student: {e}"}
    rows = _sft_rows(16)
    # Varied lengths, as real schemas are: repeat the question a varying number of times.
    for i, r in enumerate(rows):
        r["messages"][-2]["content"] += "\n" + "Note: count each singer once. " * (i * 6)

    def time_steps(**kw) -> tuple[float, object]:
        cfg = SftConfig(output_dir=str(workdir / "lev"), model=path, batch_size=1, grad_accum=1,
                        max_steps=steps + 1, cpu=True, save_steps=0, **kw)
        trainer, _ = build_sft_trainer(cfg, rows=rows)
        timer = _step_timer()
        trainer.add_callback(timer)
        with contextlib.redirect_stdout(sys.stderr):
            trainer.train()
        return statistics.median(timer.times[1:]), trainer

    out: dict = {"model": path, "steps_timed": steps}
    t_all, trainer = time_steps()
    n_layers = trainer.model.config.num_hidden_layers
    upper = max(1, n_layers // 4)
    t_upper, _ = time_steps(lora_layers=upper)
    t_all2, _ = time_steps()
    base = statistics.mean([t_all, t_all2])
    out["lora_all_layers_examples_per_h"] = 3600 / base
    out[f"lora_last_{upper}_layers_examples_per_h"] = 3600 / t_upper
    out["lora_upper_speedup"] = base / t_upper
    # Length grouping: padded tokens per example over one epoch at batch 4 (no training needed).
    for grouped in (False, True):
        cfg = SftConfig(output_dir=str(workdir / "grp"), model=path, batch_size=4, cpu=True,
                        group_by_length=grouped, max_steps=1, save_steps=0)
        tr, _ = build_sft_trainer(cfg, rows=rows)
        padded = sum(int(b["input_ids"].numel()) for b in tr.get_train_dataloader())
        out["tokens_per_example_" + ("grouped" if grouped else "random")] = padded / len(rows)
    out["tokens_per_example_unpadded"] = statistics.mean(len(x) for x in tr.train_dataset["input_ids"])
    for n in threads:
        torch.set_num_threads(n)
        out[f"threads_{n}_step_s"] = time_steps()[0]
    return out


def _peak_fp32_gflops(seconds: float = 3.0) -> float:
    """This machine's float32 matmul rate (GFLOP/s), the bound the training rates are compared with."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * 1024 ** 3 * n / (time.perf_counter() - t0) / 1e9


LEVERS = ("today", "scoring", "compact", "layers", "grouped", "all", "threads1", "compile")


def bench_levers_real(model_spec, rows_sql: Path, rows_compact: Path | None, n: int, workdir: Path,
                      lora_layers: int = 6, batch: int = 4, seed: int = 0,
                      which: tuple[str, ...] = ("today", "scoring", "compact", "layers", "all")) -> dict:
    """Issue 15 part 2 on real SFT rows (``build-pairs --sft`` of Spider train decompositions): examples per
    CPU hour of LoRA SFT on the 0.5B, today's settings (CREATE TABLE schema, LoRA on every layer, batch 1)
    against the levers (compact schema, LoRA on the last ``lora_layers`` layers, length-grouped batches of
    ``batch``), each over the same ``n`` examples (the compact rows are the same ids rendered compactly);
    tokens per example, and the achieved FLOP rate as a fraction of this machine's float32 matmul peak."""
    import contextlib
    import random

    import torch

    from learnat_cli.models import resolve_model
    from learnat_cli.training.runner import SftConfig, build_sft_trainer, score_label_positions_only

    path = resolve_model(model_spec)

    def load(p: Path) -> dict[str, dict]:
        return {r["id"]: r for r in (json.loads(ln) for ln in p.read_text().splitlines() if ln.strip())}

    sql = load(rows_sql)
    compact = load(rows_compact) if rows_compact else {}
    ids = sorted(set(sql) & set(compact)) if compact else sorted(sql)
    ids = random.Random(seed).sample(ids, min(n, len(ids)))
    # "today" is TRL's scoring of every position through the LM head; every lever below keeps learnat's
    # scoring of the labelled positions only (score_label_positions_only) and adds one change.
    # Batches of several rows buy nothing on CPU (compute-bound; one row a step has no padding at all) and
    # cost memory: length-grouped batches of 4 CREATE-TABLE rows with LoRA on every layer went past 24 GB and
    # were killed (2026-11-27), so "grouped" is not in the default set and "all levers" trains one row a step.
    table = {"today": ("today: sql schema, all layers, batch 1", sql, {"score_all": True}, 1),
             "scoring": ("LM head on labelled positions only", sql, {}, 1),
             "compact": ("+ compact schema", compact, {}, 1),
             "layers": (f"+ LoRA on the last {lora_layers} layers only", sql,
                        {"lora_layers": lora_layers}, 1),
             "grouped": (f"+ length-grouped batches of {batch}", sql, {"group_by_length": True}, batch),
             "all": ("all levers (compact, upper LoRA, labelled positions, batch 1)", compact,
                     {"lora_layers": lora_layers}, 1),
             # the two levers the issue names last, on top of all the others: the torch thread count (this
             # machine's cores, against one), and --compile-layers (torch.compile of each decoder layer,
             # dynamic shapes, as every row has its own length; the rows run twice and the second pass is
             # timed, the first, compiling, reported apart)
             "threads1": ("all levers, 1 torch thread", compact,
                          {"lora_layers": lora_layers, "threads": 1}, 1),
             "compile": ("all levers + torch.compile of the layers", compact,
                         {"lora_layers": lora_layers, "compile_layers": True}, 1)}
    configs = [table[c] for c in which]
    peak = _peak_fp32_gflops()
    out: dict = {"model": path, "examples": len(ids), "peak_fp32_gflops": round(peak, 1), "configs": []}
    for label, rows_by_id, kw, bs in configs:
        if not rows_by_id:
            continue
        rows = [rows_by_id[i] for i in ids]
        steps = len(rows) // bs
        kw = dict(kw)
        score_all = kw.pop("score_all", False)
        threads, compiled = kw.pop("threads", None), kw.get("compile_layers", False)
        passes = 2 if compiled else 1  # compiled: the rows twice, the second pass timed (every shape warm)
        cfg = SftConfig(output_dir=str(workdir / "lev"), model=path, batch_size=bs, grad_accum=1,
                        max_steps=steps * passes, cpu=True, save_steps=0, max_length=4096, **kw)
        trainer, _ = build_sft_trainer(cfg, rows=rows)
        score_label_positions_only(not score_all)  # consulted at every forward: set after the build
        threads_before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        labelled = sum(int((trainer.data_collator([trainer.train_dataset[i]])["labels"] != -100).sum())
                       for i in range(len(trainer.train_dataset)))
        timer = _step_timer()
        trainer.add_callback(timer)
        with contextlib.redirect_stdout(sys.stderr):
            trainer.train()
        torch.set_num_threads(threads_before)
        counts = [e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e]
        tokens = counts[-1] if counts else None
        warm = steps if compiled else 1  # the first step warms up; compiled: the whole first pass
        timed = timer.times[warm:]
        per_ex = sum(timed) / (len(timed) * bs)
        model = trainer.model
        conf = model.config
        n_all = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        head = conf.vocab_size * conf.hidden_size
        body = n_all - head  # tied embeddings: the head is the embedding matrix, used once as a matmul
        layers_bw = kw.get("lora_layers") or conf.num_hidden_layers
        body_bw = body * layers_bw / conf.num_hidden_layers
        tok_ex = (tokens / (steps * passes * bs)) if tokens else None
        scored_ex = tok_ex if score_all else labelled / len(rows)  # positions through the LM head
        # forward 2*body and backward (activation gradients, down to the lowest LoRA layer) 2*body_bw FLOPs
        # per token; the LM head forward and backward, 4*head per scored position
        flops_ex = (2 * body + 2 * body_bw) * tok_ex + 4 * head * scored_ex if tok_ex else None
        row = {"config": label, "batch": bs, "examples_per_h": round(3600 / per_ex, 1),
               "s_per_example": round(per_ex, 2), "tokens_per_example": round(tok_ex, 1) if tok_ex else None,
               "labelled_per_example": round(labelled / len(rows), 1),
               "gflops_per_s": round(flops_ex / per_ex / 1e9, 1) if flops_ex else None}
        row["fraction_of_peak"] = round(row["gflops_per_s"] / peak, 3) if row["gflops_per_s"] else None
        if compiled:
            row["first_pass_s"] = round(sum(timer.times[:warm]), 1)  # compiling, then the recompiles
        score_label_positions_only()
        if label == table["all"][0]:  # what bounds the rest: the forward pass alone on one batch
            model.eval()
            b = trainer.data_collator([trainer.train_dataset[i] for i in range(bs)])
            with torch.no_grad():
                t0 = time.perf_counter()
                model(input_ids=b["input_ids"], attention_mask=b.get("attention_mask"))
                row["forward_share"] = round((time.perf_counter() - t0) / (per_ex * bs), 3)
        out["configs"].append(row)
        print(f"   {label:<45} {row['examples_per_h']:7.1f} examples/h  {row['tokens_per_example']} tokens/ex"
              f"  {row['fraction_of_peak']} of peak", file=sys.stderr, flush=True)
    base = out["configs"][0]["examples_per_h"]
    for r in out["configs"]:
        r["speedup"] = round(r["examples_per_h"] / base, 2)
    return out


def bench_mdpo_prefix(model_spec, pairs: Path, n: int, workdir: Path, lora_layers: int = 8,
                      seed: int = 0) -> dict:
    """Issue 15: MDPO pairs per CPU hour on the 0.5B, each pair's prompt run once (``--shared-prefix on``)
    against TRL's plain forward of full chosen and rejected rows (``off``), same ``n`` seeded pairs, one pair
    a step, LoRA on the last ``lora_layers`` layers, reference = the adapter disabled (the loop's setting)."""
    import contextlib
    import random

    from learnat_cli.models import resolve_model
    from learnat_cli.training.mdpo_trainer import MdpoConfig, build_mdpo_trainer, load_pairs

    path = resolve_model(model_spec)
    rows = load_pairs(str(pairs))
    rows = random.Random(seed).sample(rows, min(n, len(rows)))
    out: dict = {"pairs": len(rows), "runs": []}
    for mode in ("off", "on"):
        cfg = MdpoConfig(input=str(pairs), output_dir=str(workdir / f"mdpo-{mode}"), model=path, batch_size=1,
                         grad_accum=1, max_steps=len(rows), cpu=True, save_steps=0, max_length=2048,
                         lora_layers=lora_layers, shared_prefix=mode, seed=seed)
        trainer, _ = build_mdpo_trainer(cfg, rows=rows)
        timer = _step_timer()
        trainer.add_callback(timer)
        with contextlib.redirect_stdout(sys.stderr):
            trainer.train()
        timed = timer.times[1:]
        per = sum(timed) / len(timed)
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        out["runs"].append({"shared_prefix": mode, "s_per_pair": round(per, 2),
                            "pairs_per_h": round(3600 / per, 1), "first_loss": losses[0] if losses else None})
        print(f"   shared prefix {mode:3s}: {3600 / per:7.1f} pairs/h ({per:.2f} s a pair)", file=sys.stderr,
              flush=True)
        del trainer
    out["speedup"] = round(out["runs"][0]["s_per_pair"] / out["runs"][1]["s_per_pair"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small run")
    ap.add_argument("--model", default=None,
                    help="student for the SFT throughput part (default: embedded 0.5B)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")),
                    help="torch CPU threads (default: $OMP_NUM_THREADS or 2)")
    ap.add_argument("--skip-sft", action="store_true", help="only the MDPO vs DPO part")
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    ap.add_argument("--levers", action="store_true", help="only the CPU speed levers on the 0.5B (issue 15)")
    ap.add_argument("--rows", default=None, help="--levers on real SFT rows (build-pairs --sft output)")
    ap.add_argument("--rows-compact", default=None, help="the same rows with --schema-format compact")
    ap.add_argument("--n", type=int, default=12, help="--rows: examples per configuration")
    ap.add_argument("--lora-layers", type=int, default=8, help="--rows: the upper-layer LoRA lever")
    ap.add_argument("--mdpo-pairs", default=None,
                    help="time MDPO on these pairs (build-pairs output), shared prefix on vs off (--n pairs)")
    ap.add_argument("--lever-configs", default="today,scoring,compact,layers,all",
                    help=f"--rows: which of {','.join(LEVERS)} (the first is the baseline)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, args.threads))
    steps, rounds = (6, 2) if args.quick else (12, 4)
    results = {}
    with tempfile.TemporaryDirectory(prefix="learnat-bench-train-") as tmp:
        tmp = Path(tmp)
        if args.mdpo_pairs:
            res = bench_mdpo_prefix(args.model, Path(args.mdpo_pairs), args.n, tmp,
                                    lora_layers=args.lora_layers)
            print(f"== MDPO on {res['pairs']} real pairs, LoRA on the last {args.lora_layers} layers of the "
                  f"0.5B (issue 15)")
            for r in res["runs"]:
                print(f"   shared prefix {r['shared_prefix']:3s}: {r['pairs_per_h']:7.1f} pairs/h "
                      f"({r['s_per_pair']} s a pair), first loss {r['first_loss']}")
            print(f"   speed-up {res['speedup']}x")
            if args.json:
                print(json.dumps({"mdpo_prefix": res}))
            return 0
        if args.levers and args.rows:
            lev = bench_levers_real(args.model, Path(args.rows), Path(args.rows_compact) if args.rows_compact
                                    else None, args.n, tmp, lora_layers=args.lora_layers,
                                    which=tuple(args.lever_configs.split(",")))
            print(f"== CPU speed levers on {lev['examples']} real SFT rows, LoRA SFT on the 0.5B, "
                  f"peak fp32 {lev['peak_fp32_gflops']} GFLOP/s (issue 15)")
            print("| configuration | batch | examples/h | speed-up | tokens/example | labelled/example "
                  "| GFLOP/s | of peak |")
            print("|---|---|---|---|---|---|---|---|")
            for r in lev["configs"]:
                print(f"| {r['config']} | {r['batch']} | {r['examples_per_h']} | {r['speedup']}x | "
                      f"{r['tokens_per_example']} | {r['labelled_per_example']} | {r['gflops_per_s']} | "
                      f"{r['fraction_of_peak']} |")
            if "forward_share" in lev["configs"][-1]:
                print(f"all levers: the forward pass is {lev['configs'][-1]['forward_share']:.0%} of a step")
            if args.json:
                print(json.dumps({"levers": lev}))
            return 0
        if args.levers:
            lev = bench_levers(args.model, steps=2 if args.quick else 4, workdir=tmp, threads=[1, 2])
            print("== CPU speed levers, LoRA SFT on the 0.5B (issue 15)")
            for k, v in lev.items():
                print(f"   {k:<40}: {v:.2f}" if isinstance(v, float) else f"   {k:<40}: {v}")
            if args.json:
                print(json.dumps({"levers": lev}))
            return 0
        r = bench_mdpo_vs_dpo(steps=steps, rounds=rounds, batch=8, hidden=64, workdir=tmp)
        results["mdpo_vs_dpo"] = r
        print("== MDPO vs TRL DPO step time (tiny Qwen2 h=64, LoRA r=8, batch of 8 pairs, CPU)")
        print(f"   DPO  (TRL stock) : {r['dpo_step_s'] * 1000:8.1f} ms/step  (median of {r['steps_timed']})")
        print(f"   MDPO (learnat)   : {r['mdpo_step_s'] * 1000:8.1f} ms/step")
        verdict = "OK" if r["ratio"] <= 1.10 else "SLOWER THAN TARGET"
        print(f"   ratio MDPO/DPO   : {r['ratio']:.3f}   (target <= 1.10: {verdict})")
        if not args.skip_sft:
            s = bench_sft_tokens(args.model, steps=2 if args.quick else 4, workdir=tmp)
            results["sft_tokens"] = s
            print("== SFT throughput, LoRA, CPU")
            if "skipped" in s:
                print(f"   skipped: {s['skipped']}")
            else:
                print(f"   model            : {s['model']} ({s['params'] / 1e6:.0f}M params, "
                      f"{s['trainable'] / 1e6:.2f}M trainable)")
                print(f"   tokens/example   : {s['tokens_per_example']:.0f}   loss mode: {s['loss_mode']}")
                print(f"   learnat sft      : {s['sft_tokens_per_s']:8.1f} tokens/s  "
                      f"({s['step_s']:.2f} s/step, {s['steps_timed']} steps timed; load {s['load_s']:.1f} s)")
                print(f"   plain torch loop : {s['torch_loop_tokens_per_s']:8.1f} tokens/s")
                print(f"   ratio            : {s['ratio']:.3f}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
