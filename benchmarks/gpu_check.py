"""``make gpu-check``: the GPU path of learnat, run for real on one CUDA GPU by one prepared script (issue
16).

On a CUDA GPU (one device, well under 8 minutes) it prints one table:

1. dependencies: every package the run needs, the version pyproject.toml asks for and the one found (a missing
   or mismatched package is reported with the wheels to bring: the GPU machine may have no network);
2. a student with the embedded model's architecture and size (Qwen2.5-Coder-0.5B: hidden 896, 24 layers, 14
   attention heads, 2 KV heads, intermediate 4864, vocabulary 151936, tied embeddings) with random weights,
   built from that config on the GPU (the real weights need not travel; the tokenizer is the tiny offline one,
   whose ids are a subset of the vocabulary);
3. ``learnat sft`` and ``learnat mdpo`` under ``accelerate launch`` with ``--gpus 1``, bf16, LoRA and full
   fine-tuning, gradient checkpointing on and off, a few dozen steps on synthetic rows: loss finite and
   falling, tokens/s, peak GPU memory;
4. the MDPO step time against TRL's stock DPOTrainer on the same model, LoRA config and batch;
5. batched generation (:meth:`learnat_cli.models.ChatModel.chat_batch`, what ``ask --input`` uses) on CUDA
   with the same model: questions/s at several batch sizes.

Without a GPU it says so and does a dry run of the same steps with the tiny test model on CPU, then exits 0
(``--dry-run`` forces that anywhere). Exit 1 when a dependency is missing or a check fails. No network needed.

    python benchmarks/gpu_check.py [--dry-run] [--steps 30] [--runs sft-lora,mdpo-full-gc] [--json FILE]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The embedded student's architecture (Qwen2.5-Coder-0.5B-Instruct's config.json).
QWEN05B = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
               intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True,
               max_position_embeddings=32768,
               rope_theta=1_000_000.0, rms_norm_eps=1e-6, hidden_act="silu")
# Packages the check imports, with the pyproject extra that pins them.
NEEDED = ["torch", "transformers", "peft", "trl", "accelerate", "datasets", "safetensors", "tokenizers",
          "pydantic", "sqlglot", "typer", "rich", "numpy", "PyYAML"]
RUNS = [f"{stage}-{mode}{gc}" for stage in ("sft", "mdpo") for mode in ("lora", "full") for gc in ("", "-gc")]


# ------------------------------------------------------------------------------------------------------------
# Dependencies


def pins() -> dict[str, str]:
    """Requirement strings by lower-case name, from pyproject.toml (dependencies and the ``ml`` extra)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: report versions without the pins
        return {}
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(proj.get("dependencies", [])) + list(proj.get("optional-dependencies", {}).get("ml", []))
    out = {}
    for r in reqs:
        name = r.split("[")[0].split("=")[0].split(">")[0].split("<")[0].split("~")[0].strip()
        out[name.lower()] = r
    return out


def check_dependencies() -> list[dict]:
    """One row per needed package: needed spec, found version, ok. ``torch`` also reports its CUDA build."""
    want = pins()
    rows = []
    for name in NEEDED:
        spec = want.get(name.lower(), name)
        try:
            found = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            rows.append({"package": name, "needed": spec, "found": None, "ok": False, "matches": False})
            continue
        matches = True
        try:
            from packaging.requirements import Requirement

            matches = Requirement(spec).specifier.contains(found, prereleases=True)
        except Exception:  # noqa: BLE001 - no packaging: presence is enough
            pass
        # Another version (the GPU image's own torch/transformers) is reported, not failed: the checks below
        # say whether learnat works with it. Only a missing package stops the run.
        rows.append({"package": name, "needed": spec, "found": found, "ok": True, "matches": matches})
    return rows


def cuda_info() -> dict:
    import torch

    info = {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "available": torch.cuda.is_available()}
    if info["available"]:
        info.update(device=torch.cuda.get_device_name(0), count=torch.cuda.device_count(),
                    capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                    bf16=torch.cuda.is_bf16_supported(), memory_gb=round(
                        torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    return info


# ------------------------------------------------------------------------------------------------------------
# Student and data


def build_student(workdir: Path, gpu: bool) -> Path:
    """The 0.5B-shaped random student on the GPU (saved in bf16), or the tiny model for a dry run."""
    from learnat_cli.tiny import build_tiny_model

    tiny = build_tiny_model(workdir / "tiny")
    if not gpu:
        return tiny
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(**QWEN05B)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    out = workdir / "qwen05b-random"
    model.save_pretrained(out)
    for f in tiny.iterdir():  # the tiny tokenizer: ids < 400, all inside the 151936 vocabulary
        if "token" in f.name or f.name == "chat_template.jinja":
            (out / f.name).write_bytes(f.read_bytes())
    del model
    torch.cuda.empty_cache()
    return out


def write_data(workdir: Path, n: int) -> tuple[Path, Path]:
    """Synthetic SFT rows and preference pairs in learnat's formats (student prompts with a schema)."""
    schema = ("CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);\n"
              "CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, name TEXT, year TEXT);")
    sft, pairs = [], []
    for i in range(n):
        q = f"How many singers from France are older than {20 + i}?"
        gold = f"SELECT COUNT(*) FROM singer WHERE age > {20 + i} AND country = 'France'"
        user = f"Database schema:\n{schema}\nQuestion: {q}"
        answer = (f"Step 1: Which singers are older than {20 + i}?\n"
                  f"SQL: SELECT name FROM singer WHERE age > {20 + i}\nFinal SQL: {gold}")
        sft.append({"id": f"s{i}", "messages": [{"role": "user", "content": user},
                                                 {"role": "assistant", "content": answer}]})
        pairs.append({"id": f"p{i}", "prompt": [{"role": "user", "content": user}], "chosen": answer,
                      "rejected": "Final SQL: SELECT name FROM singer", "margin": round(0.2 + 0.05 * (i % 8),
                                                                                        2)})
    paths = workdir / "sft.jsonl", workdir / "pairs.jsonl"
    for path, rows in zip(paths, (sft, pairs), strict=False):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return paths


# ------------------------------------------------------------------------------------------------------------
# Checks


def commands_path(workdir: Path) -> str:
    """A folder that makes ``learnat_commands`` importable from a plain checkout (pyproject maps it to
    ``commands/``; an installed learnat needs nothing): empty when it already imports."""
    import importlib.util

    if importlib.util.find_spec("learnat_commands") is not None:
        return ""
    shim = workdir / "shim"
    shim.mkdir(exist_ok=True)
    link = shim / "learnat_commands"
    if not link.exists():
        link.symlink_to(ROOT / "commands", target_is_directory=True)
    return str(shim)


def run_cli(name: str, model: Path, data: tuple[Path, Path], workdir: Path, steps: int, gpu: bool,
            timeout: int) -> dict:
    """One ``learnat sft|mdpo`` run under ``accelerate launch`` (one process, ``--gpus 1``); its manifest."""
    stage, mode, gc = name.split("-")[0], name.split("-")[1], name.endswith("-gc")
    out = workdir / name
    lr = {"sft": {"lora": "2e-4", "full": "2e-5"}, "mdpo": {"lora": "5e-5", "full": "5e-6"}}[stage][mode]
    args = [str(data[0] if stage == "sft" else data[1]), "--model", str(model), "-o", str(out), "--gpus", "1",
            "--max-steps", str(steps), "--batch-size", "4", "--grad-accum", "1", "--lr", lr, "--max-length",
            "512",
            "--save-steps", "0", "--logging-steps", "1", "--seed", "0"]
    args += ["--bf16"] if gpu else ["--cpu"]
    args += ["--full"] if mode == "full" else ["--lora-r", "16"]
    args += ["--gradient-checkpointing"] if gc else []
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--module", "learnat_commands.main", stage,
           *args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), commands_path(workdir), os.environ.get("PYTHONPATH", "")) if p))
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False,
                              cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"run": name, "ok": False, "error": f"timed out after {timeout} s"}
    row: dict = {"run": name, "wall_s": round(time.time() - t0, 1)}
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {**row, "ok": False, "error": f"exit {proc.returncode}: {tail[:200]}"}
    man = json.loads(lines[-1])
    hist = json.loads((out / "metrics.json").read_text())["log_history"]
    losses = [e["loss"] for e in hist if "loss" in e and e["loss"] is not None]
    k = max(1, min(5, len(losses) // 3))
    first, last = statistics.mean(losses[:k]), statistics.mean(losses[-k:])
    finite = len(losses) == steps and all(math.isfinite(v) for v in losses)
    row.update(steps=man["steps"], loss_first=first, loss_last=last, finite=finite, falling=last < first,
               tokens_per_s=man.get("tokens_per_s"), peak_gb=man.get("peak_gpu_mem_gb"),
               train_s=man.get("runtime_s"),
               ok=finite and man["steps"] == steps and (last < first or not gpu))
    return row


def mdpo_vs_dpo(model: Path, data: tuple[Path, Path], workdir: Path, steps: int, gpu: bool) -> dict:
    """Median step time of learnat's MdpoTrainer and TRL's DPOTrainer on the same model, LoRA and batch."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig

    from learnat_cli.training.mdpo_trainer import comparison_trainer, load_pairs
    from learnat_cli.training.runner import attach_progress, quiet

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.t = [], 0.0

        def on_step_begin(self, *a, **k):
            if gpu:
                torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            if gpu:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.t)

    rows = load_pairs(str(data[1]), limit=4)
    out = {}
    for kind in ("dpo", "mdpo", "mdpo", "dpo")[: 4 if gpu else 2]:
        args = DPOConfig(output_dir=str(workdir / f"cmp-{kind}"), per_device_train_batch_size=4,
                         max_steps=steps,
                         gradient_accumulation_steps=1, learning_rate=1e-5, beta=0.1, use_cpu=not gpu,
                         bf16=gpu,
                         report_to="none", disable_tqdm=True, save_strategy="no", seed=0, max_length=512,
                         dataloader_num_workers=0)
        lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM",
                          lora_dropout=0.0)
        timer = Timer()
        with quiet():
            m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16 if gpu else torch.float32)
            tok = AutoTokenizer.from_pretrained(model)
            tr = comparison_trainer(kind, m, tok, args, rows, lora, [timer])
            attach_progress(tr, None)
            tr.train()
        out.setdefault(kind, []).extend(timer.times[2:])
        del tr, m
        if gpu:
            torch.cuda.empty_cache()
    dpo, mdpo = statistics.median(out["dpo"]), statistics.median(out["mdpo"])
    # The speed target is enforced on the GPU only (a dry run times a tiny model on a noisy CPU).
    return {"dpo_step_s": dpo, "mdpo_step_s": mdpo, "ratio": mdpo / dpo,
            "ok": mdpo / dpo <= 1.10 if gpu else None}


def generation(model: Path, batch_sizes: list[int], new_tokens: int, gpu: bool) -> list[dict]:
    """Questions/s of ChatModel.chat_batch (the batched ``ask`` path) at several batch sizes."""
    import torch

    from learnat_cli.models import ChatModel

    cm = ChatModel(str(model), device="cuda" if gpu else "cpu")
    dtype = str(cm.model.dtype).replace("torch.", "")
    msgs = [[{"role": "user", "content": f"Question: How many singers are older than {20 + i}?"}]
            for i in range(max(batch_sizes))]
    cm.chat_batch(msgs[:1], max_new_tokens=4)  # warm-up
    rows = []
    for b in batch_sizes:
        if gpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        answers = cm.chat_batch(msgs[:b], max_new_tokens=new_tokens)
        if gpu:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        rows.append({"batch": b, "questions_per_s": b / dt, "s": dt, "ok": len(answers) == b, "dtype": dtype})
    # ask --samples 8: greedy + 7 samples from one prefill (the vote's candidates)
    n = 8
    if gpu:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    cands = cm.sample(msgs[0], n, temperature=0.8, top_p=0.95, seed=0, max_new_tokens=new_tokens)
    if gpu:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    rows.append({"batch": f"sample {n}", "questions_per_s": 1 / dt, "s": dt, "dtype": dtype,
                 "ok": len(cands) == n and all(math.isfinite(c.logprob) for c in cands)})
    return rows


# ------------------------------------------------------------------------------------------------------------
# Report


def print_table(report: dict) -> None:
    dev = report["cuda"]
    head = f"learnat gpu-check  {report['date']}  mode: {report['mode']}  device: " \
           f"{dev.get('device', 'no CUDA GPU')}  torch {dev['torch']} (CUDA {dev['torch_cuda']})"
    print(head)
    print("-" * len(head))
    print(f"{'check':<28}{'result':<54}status")

    def line(check: str, result: str, ok: bool | None) -> None:
        print(f"{check:<28}{result:<54}{'ok' if ok else ('-' if ok is None else 'FAIL')}")

    for d in report["dependencies"]:
        note = "" if d.get("matches", True) or not d["found"] else "  other version"
        line(f"dep {d['package']}", f"found {d['found'] or 'MISSING'}  (pin {d['needed']}){note}", d["ok"])
    for r in report.get("runs", []):
        if "error" in r:
            line(r["run"], r["error"][:52], False)
            continue
        mem = f"{r['peak_gb']:.1f} GB" if r.get("peak_gb") is not None else "-"
        tps = f"{r['tokens_per_s']:.0f}" if r.get("tokens_per_s") else "-"
        line(r["run"], f"loss {r['loss_first']:.3f}->{r['loss_last']:.3f}  {tps} tok/s  peak {mem}", r["ok"])
    if "mdpo_vs_dpo" in report:
        c = report["mdpo_vs_dpo"]
        line("mdpo vs trl dpo step", f"{c['mdpo_step_s'] * 1000:.1f} vs {c['dpo_step_s'] * 1000:.1f} ms "
                                     f"(ratio {c['ratio']:.2f}, target <= 1.10)", c["ok"])
    for g in report.get("generation", []):
        sample = str(g["batch"]).startswith("sample")
        what = f"generate {g['batch']}" if sample else f"generate batch {g['batch']}"
        line(what, f"{g['questions_per_s']:.2f} questions/s ({g['s']:.2f} s, {g.get('dtype', '-')})", g["ok"])
    for r in report.get("skipped", []):
        line(r, "skipped: the --deadline was reached", None)
    missing = [d for d in report["dependencies"] if not d["found"]]
    if missing:
        print("bring as wheels (pip download on a machine with network, pip install --no-index there): "
              + " ".join(f"'{d['needed']}'" for d in missing))
    print(f"total {report['total_s']:.0f} s; {'all checks passed' if report['ok'] else 'SOME CHECKS FAILED'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true",
                    help="the CPU dry run with the tiny model, even on a GPU")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 30 GPU, 3 dry)")
    ap.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {','.join(RUNS)}")
    ap.add_argument("--batch-sizes", default="1,8,32", help="generation batch sizes (GPU; dry run: 1,2)")
    ap.add_argument("--json", default=None, help="also write the report here (after every check)")
    ap.add_argument("--deadline", type=float, default=None,
                    help="seconds after which the remaining training runs are skipped (default 360 on a GPU)")
    args = ap.parse_args(argv)
    t0 = time.time()
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if bad := [r for r in runs if r not in RUNS]:
        print(f"gpu-check: unknown run(s) {', '.join(bad)} (expected some of {', '.join(RUNS)})",
              file=sys.stderr)
        return 2
    deps = check_dependencies()
    report: dict = {"date": time.strftime("%Y-%m-%d"), "dependencies": deps, "mode": "-",
                    "cuda": {"torch": "missing", "torch_cuda": None}}
    if not all(d["found"] for d in deps):
        report.update(ok=False, total_s=time.time() - t0)
        print_table(report)
        return 1
    report["cuda"] = cuda_info()
    gpu = report["cuda"]["available"] and not args.dry_run
    report["mode"] = "gpu" if gpu else "dry run (tiny model, CPU)"
    if not report["cuda"]["available"]:
        print("gpu-check: no CUDA GPU present; dry run of the same steps with the tiny model on CPU",
              file=sys.stderr)
    steps = args.steps or (30 if gpu else 3)
    sizes = [int(b) for b in args.batch_sizes.split(",")] if gpu else [1, 2]
    with tempfile.TemporaryDirectory(prefix="learnat-gpu-check-") as tmp:
        work = Path(tmp)
        model = build_student(work, gpu)
        data = write_data(work, 32)
        deadline = t0 + (args.deadline or (360 if gpu else 1e9))

        def save() -> None:
            if args.json:
                Path(args.json).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")

        # generation first: short, and the one check of ask on CUDA
        report["generation"] = generation(model, sizes, 32 if gpu else 4, gpu)
        save()
        print(f"gpu-check: generation done at {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        report["runs"], report["skipped"] = [], []
        for r in runs:
            if time.time() > deadline:
                report["skipped"].append(r)
                continue
            report["runs"].append(run_cli(r, model, data, work, steps, gpu, timeout=150 if gpu else 240))
            print(f"gpu-check: {r} done at {time.time() - t0:.0f} s: {report['runs'][-1]}", file=sys.stderr,
                  flush=True)
            save()
        if time.time() <= deadline + 60:
            report["mdpo_vs_dpo"] = mdpo_vs_dpo(model, data, work, max(steps // 2, 4), gpu)
        else:
            report["skipped"].append("mdpo vs trl dpo")
    checks = [d["ok"] for d in deps] + [r["ok"] for r in report["runs"]]
    checks += [g["ok"] for g in report["generation"]]
    checks.append(report.get("mdpo_vs_dpo", {}).get("ok") is not False)
    report.update(ok=all(checks), total_s=time.time() - t0)
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
