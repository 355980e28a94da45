"""``learnat sft``: supervised fine-tuning of the student on decomposition trajectories -- the paper's SFT
stage (LearNAT, arXiv 2504.02327: "SFT on successful trajectories comes first, then MDPO"; see PAPER.md, MDPO
/ Order of training).

Input records: :class:`~learnat_cli.records.SftRow` rows, as written by ``learnat build-pairs --sft``: chat
``messages`` (system, user, assistant), or ``prompt``/``completion`` strings. Output: an adapter folder (LoRA
by default; the whole model with ``full=True``), ``training_config.json`` and ``metrics.json`` in it,
optionally a merged model in ``<output_dir>/merged``, and one manifest record (a dict; the CLI prints it as
one JSON line).

Loss is on the assistant turns only:

- when the tokenizer's chat template has ``{% generation %}`` markers (the tiny test model's has), TRL's
  ``assistant_only_loss=True`` masks everything but the assistant turns;
- otherwise (the real Qwen2.5 template has no markers) every ``messages`` row is turned into the
  conversational prompt/completion form -- prompt = the messages before the last assistant turn, completion =
  that turn -- and TRL's ``completion_only_loss=True`` masks the prompt. Earlier assistant turns, if any, are
  context only.

Also holds what :mod:`learnat_cli.training.mdpo_trainer` shares with SFT (the training kit): model loading
through :func:`learnat_cli.models.load_model`, the TrainingArguments fields common to both stages, the
progress callback (step/total/loss/lr/eta to a plain function), checkpoints (every ``save_steps`` and always
at the end) and resume, an optional eval split, merge, portable adapters (``base_model_name_or_path`` is the
embedded model's id, never a path of the training machine), and the resolved config / metrics / manifest
files.

Defaults and where they come from (PAPER.md gives no SFT hyper-parameters for LearNAT): LoRA r=16, alpha=32,
dropout 0.05 on all linear layers (common LoRA practice for 0.5B-7B code models), lr 2e-4 (usual LoRA SFT
rate), 3 epochs, max length 4096 tokens (the student prompt alone carries a rendered schema of up to 2048
tokens, the render_schema default budget, plus the question and the answer; truncation keeps the start, so a
too-short limit would cut the answer).
Heavy imports (torch, transformers, trl, peft) happen inside functions.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import random
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from learnat_cli.errors import LearnatError
from learnat_cli.jsonl import display_name, parse_record, read_jsonl
from learnat_cli.records import SftRow
from learnat_cli.training.config import SftConfig, TrainConfig, save_resolved

__all__ = ["SftConfig", "TrainConfig", "build_sft_trainer", "load_sft_rows", "train_sft"]

# on_event(kind, info): kind is "message" (info["text"]), "start" (step, total), "tick" (step, total, each
# optimizer step), "step" (step, total, loss, lr, eta_s, epoch, each logged step) or "eval" (step, eval_loss).
EventFn = Callable[[str, dict[str, Any]], None]

ADAPTER_CONFIG = "adapter_config.json"
CONFIG_FILE = "training_config.json"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"
MERGED_DIR = "merged"
TRACKERS = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


# ------------------------------------------------------------------------------------------------------------
# Input


def load_sft_rows(path: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Read :class:`SftRow` records into TRL's formats: ``{"messages": [...]}`` (conversational language
    modelling) or ``{"prompt": str, "completion": str}``. All rows of one file must use the same form."""
    name = display_name(path)
    rows: list[dict[str, Any]] = []
    kind = None
    for lineno, obj in read_jsonl(path):
        rec = parse_record(SftRow, obj, name, lineno)
        try:
            k = rec.form()
        except LearnatError as e:
            raise LearnatError(e.message, file=name, line=lineno, field=e.field) from None
        if k == "messages":
            row: dict[str, Any] = {"messages": [{"role": m.role,
                                                 "content": m.content} for m in rec.messages or []]}
        else:
            row = {"prompt": rec.prompt, "completion": rec.completion}
        if kind is None:
            kind = k
        elif k != kind:
            raise LearnatError(f"mixed row formats: earlier rows use {kind!r}, this one {k!r}", file=name,
                               line=lineno)
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise LearnatError("no training rows", file=name)
    return rows


def split_eval(rows: list[dict[str, Any]], cfg: TrainConfig,
               load: Callable[[str], list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], list | None]:
    """``(train_rows, eval_rows or None)``: ``--eval-file`` rows, or a seeded random ``--eval-split``
    fraction."""
    if cfg.eval_file:
        return rows, load(cfg.eval_file)
    if not cfg.eval_split:
        return rows, None
    n = max(1, round(len(rows) * cfg.eval_split))
    if n >= len(rows):
        raise LearnatError(f"--eval-split {cfg.eval_split} leaves no training rows ({len(rows)} rows)",
                           field="eval_split")
    order = list(range(len(rows)))
    random.Random(cfg.seed).shuffle(order)
    held = set(order[:n])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def has_generation_markers(tokenizer) -> bool:
    from trl.chat_template_utils import has_generation_markers as _has

    tmpl = getattr(tokenizer, "chat_template", None)
    return bool(tmpl) and _has(tmpl)  # type: ignore[arg-type]


def to_prompt_completion(messages: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """Split a chat at its last assistant turn: TRL's conversational prompt/completion form."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return {"prompt": messages[:last], "completion": [messages[last]]}


def sft_dataset_format(rows: list[dict[str, Any]], tokenizer) -> tuple[list[dict[str, Any]], str]:
    """Rows in the form the tokenizer supports for assistant-only loss, and the loss mode used:
    ``assistant_only`` (template has generation markers), ``completion_only`` (prompt/completion)."""
    if "messages" in rows[0]:
        if has_generation_markers(tokenizer):
            return rows, "assistant_only"
        return [to_prompt_completion(r["messages"]) for r in rows], "completion_only"
    return rows, "completion_only"


# ------------------------------------------------------------------------------------------------------------
# Models and arguments


def device_settings(cfg: TrainConfig) -> tuple[bool, bool]:
    """``(use_cpu, bf16)`` for this machine and config."""
    import torch

    use_cpu = cfg.cpu or not torch.cuda.is_available()
    if cfg.bf16 is None:
        bf16 = (not use_cpu) and torch.cuda.is_bf16_supported()
    else:
        bf16 = bool(cfg.bf16) and not use_cpu
    return use_cpu, bf16


def portable_name(spec: str | None, path: str | None = None) -> str | None:
    """The base-model name an adapter records so that any machine resolves it: the embedded model's id when
    ``spec`` (or its resolved ``path``) is an embedded model, a hub id as given, else the absolute folder."""
    from learnat_cli.models import ALIASES, EMBEDDED
    from learnat_cli.paths import cache_dir

    key = ALIASES.get(spec, spec)
    if key in EMBEDDED:
        return key
    for k, e in EMBEDDED.items():
        if path and Path(path).resolve() == (cache_dir("models") / e.name).resolve():
            return k
    if spec and Path(spec).expanduser().exists():
        return str(Path(spec).expanduser().resolve())
    return spec


_TRL_USE_TRITON: Any = None  # TRL's own test, kept while score_label_positions_only is on


def score_label_positions_only(enable: bool = True) -> bool:
    """Have TRL's fused LM head (the SFT loss and the DPO/MDPO log-probabilities) project only the positions
    that carry a label, on CPU too. TRL 1.16 does that on Triton devices only and scores every position
    elsewhere (fixed tile shapes for compiling backends such as Neuron); on CPU that runs the prompt -- the
    schema, most of a row -- through the 151,936-word head and back for nothing: a quarter to a third of a
    LoRA step on the 0.5B (docs/BENCHMARKS.md, "CPU speed levers"). The loss is the same (the masked positions
    are zeroed either way; tests compare both). ``enable=False`` restores TRL's behaviour (benchmarks).
    Returns whether the compact scoring is in place (False when this TRL has no such switch)."""
    global _TRL_USE_TRITON
    try:
        from trl.trainer import utils as trl_utils
    except ImportError:
        return False
    current = getattr(trl_utils, "_use_triton", None)
    if current is None:
        return False
    if not enable:
        if _TRL_USE_TRITON is not None:
            trl_utils._use_triton = _TRL_USE_TRITON
            _TRL_USE_TRITON = None
        return False
    if _TRL_USE_TRITON is None:
        _TRL_USE_TRITON = current

        def compact(device) -> bool:
            return device.type in ("cpu", "mps") or _TRL_USE_TRITON(device)

        trl_utils._use_triton = compact
    return True


def load_model(spec: str | None, *, bf16: bool, trainable_adapter: bool = True):
    """``(model, tokenizer, base, adapter_path)`` through :func:`learnat_cli.models.load_causal_lm`; an
    adapter folder (a ``learnat sft`` output) is kept as a PeftModel, trainable when ``trainable_adapter``,
    and its recorded base is resolved like ``--model``. ``base`` is :func:`portable_name` of the base
    model."""
    import torch

    from learnat_cli.models import load_causal_lm, resolve_model

    path = resolve_model(spec)
    base_spec, adapter = spec, None
    if (Path(path) / ADAPTER_CONFIG).is_file():
        adapter, base_spec = path, adapter_base(path)
    model, tok = load_causal_lm(spec, device=None, dtype=torch.bfloat16 if bf16 else torch.float32,
                                merge_adapter=False, trainable=trainable_adapter)
    return model, tok, portable_name(base_spec, resolve_model(base_spec) if base_spec else None), adapter


def adapter_base(path: str | Path) -> str:
    """The base model an adapter folder was trained on (``base_model_name_or_path`` in
    adapter_config.json)."""
    p = Path(path) / ADAPTER_CONFIG
    try:
        base = json.loads(p.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError) as e:
        raise LearnatError(f"unreadable adapter config: {e}", file=str(p)) from None
    if not base:
        raise LearnatError("adapter config names no base model", file=str(p), field="base_model_name_or_path")
    return base


def lora_config(cfg: TrainConfig, model=None):
    """LoRA on all linear layers (or ``target_modules``), on the last ``lora_layers`` decoder layers only when
    that is set."""
    from peft import LoraConfig

    extra: dict[str, Any] = {}
    if cfg.lora_layers:
        n_layers = int(getattr(getattr(model, "config", None), "num_hidden_layers", 0) or 0)
        if not n_layers:
            raise LearnatError("--lora-layers needs a model whose config has num_hidden_layers",
                               field="lora_layers")
        import torch

        # peft takes layers_to_transform only with named targets: every linear layer but the output head.
        linear = sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                         if isinstance(mod, torch.nn.Linear) and ".layers." in name})
        extra = {"layers_to_transform": list(range(max(0, n_layers - cfg.lora_layers), n_layers)),
                 "layers_pattern": "layers", "target_modules": cfg.target_modules or linear}
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      task_type="CAUSAL_LM",
                      **{"target_modules": cfg.target_modules or "all-linear", **extra})


def compile_layers(model, cpu: bool = True) -> int:
    """``--compile-layers``: compile each decoder layer of ``model`` (a transformers model, PEFT-wrapped or
    not) in place with torch.compile (inductor, dynamic shapes: every row has its own length); the
    embeddings, the LM head and the loss stay eager. Returns the number of layers compiled. Measured on the
    2-core CPU, LoRA SFT of the 0.5B on its last 8 layers: faster steps once compiled, a slower first pass
    over the rows (docs/BENCHMARKS.md, CPU speed levers). On ``cpu`` inductor builds C++ kernels: without a
    working compiler that is a clean error now, not a traceback at the first step."""
    import torch

    if cpu:
        from torch._inductor.cpp_builder import get_cpp_compiler

        try:
            get_cpp_compiler()  # inductor's own check, the one its first compile would fail on
        except Exception as e:  # noqa: BLE001 - InvalidCxxCompiler and whatever the probe raises
            raise LearnatError(f"--compile-layers needs a C++ compiler on CPU (set CXX to one): "
                               f"{str(e).splitlines()[0]}", field="compile_layers") from None
    stacks = [m for name, m in model.named_modules()
              if isinstance(m, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layers", "h", "blocks")]
    if not stacks:
        raise LearnatError("--compile-layers: the model has no decoder-layer list (layers, h or blocks)",
                           field="compile_layers")
    layers = max(stacks, key=len)
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def check_report_to(report_to: str) -> None:
    """``--report-to`` needs its package; say which when it is missing."""
    need = TRACKERS.get(report_to)
    if need and not any(importlib.util.find_spec(p) for p in need):
        raise LearnatError(f"--report-to {report_to} needs the {need[0]} package (pip install {need[0]})",
                           field="report_to")


def common_args(cfg: TrainConfig, use_cpu: bool, bf16: bool, has_eval: bool = False) -> dict[str, Any]:
    """TrainingArguments fields shared by SFTConfig and DPOConfig. Checkpoints: every ``save_steps`` steps and
    always at the last step (transformers saves at the end under the "steps" strategy)."""
    check_report_to(cfg.report_to)
    every = cfg.save_steps if cfg.save_steps > 0 else 10**9
    return {
        "output_dir": cfg.output_dir,
        "num_train_epochs": cfg.epochs,
        "max_steps": cfg.max_steps if cfg.max_steps is not None else -1,
        "learning_rate": cfg.learning_rate,
        "per_device_train_batch_size": cfg.batch_size,
        "per_device_eval_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "warmup_steps": cfg.warmup_ratio,  # a float in [0, 1) is a ratio in transformers 5
        "weight_decay": cfg.weight_decay,
        "logging_steps": cfg.logging_steps,
        "save_strategy": "steps",
        "save_steps": every,
        "save_total_limit": cfg.save_total_limit,
        "eval_strategy": "steps" if has_eval and cfg.save_steps > 0 else "no",
        "eval_steps": every if has_eval and cfg.save_steps > 0 else None,
        "train_sampling_strategy": "group_by_length" if cfg.group_by_length else "random",
        "seed": cfg.seed,
        "use_cpu": use_cpu,
        "bf16": bf16,
        "fp16": False,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "report_to": cfg.report_to,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "ddp_find_unused_parameters": False,
        "deepspeed": cfg.deepspeed_config,
        "max_length": cfg.max_length,
    }


@contextlib.contextmanager
def quiet():
    """Library chatter (warnings, info logs, progress bars, stray prints) off the terminal while training:
    the progress callback is what the user sees; stdout stays for data."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with contextlib.suppress(ImportError):
        import datasets
        from transformers.utils import logging as hf_logging

        datasets.disable_progress_bars()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        yield


def quiet_libraries() -> None:  # kept for benchmarks
    with quiet():
        pass


def progress_callback(on_event: EventFn):
    """A transformers TrainerCallback reporting step/total/loss/lr/eta (rank 0 only) to ``on_event``."""
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.t0, self.step0, self.last = time.time(), state.global_step, {}
            if state.is_world_process_zero:
                on_event("start", {"step": state.global_step, "total": state.max_steps})

        def _eta(self, state) -> float | None:
            done = state.global_step - self.step0
            return (time.time() - self.t0) / done * (state.max_steps - state.global_step) if done else None

        def on_step_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                on_event("tick", {"step": state.global_step, "total": state.max_steps,
                                  "eta_s": self._eta(state)})

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            info = {"step": state.global_step, "total": state.max_steps, "epoch": state.epoch}
            if "eval_loss" in logs:
                on_event("eval", {**info, "eval_loss": logs["eval_loss"]})
            elif "loss" in logs:
                on_event("step", {**info, "loss": logs["loss"], "lr": logs.get("learning_rate"),
                                  "eta_s": self._eta(state)})

    return ProgressCallback()


def print_events(stage: str) -> EventFn:
    """Plain one-line-per-log-step events on stderr (launched processes, Python use without a callback)."""

    def on_event(kind: str, info: dict[str, Any]) -> None:
        if kind == "message":
            print(f"learnat {stage}: {info['text']}", file=sys.stderr, flush=True)
        elif kind in ("step", "eval"):
            stats = "  ".join(f"{k} {info[k]:.4g}" for k in ("loss", "lr", "eval_loss", "eta_s")
                              if info.get(k) is not None)
            print(f"learnat {stage}: step {info['step']}/{info['total']}  {stats}", file=sys.stderr,
                  flush=True)

    return on_event


def attach_time_budget(trainer, max_time_s: float | None) -> None:
    """Stop training once ``max_time_s`` seconds have passed since this call, saving a checkpoint at that
    step (``--max-time``; ``--resume`` goes on from it)."""
    if not max_time_s:
        return
    from transformers import TrainerCallback

    t_end = time.time() + max_time_s

    class _Budget(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if time.time() >= t_end and state.global_step < state.max_steps:
                control.should_training_stop = True
                control.should_save = True
            return control

    trainer.add_callback(_Budget())


def attach_progress(trainer, on_event: EventFn | None) -> None:
    """Replace the Trainer's raw log printing by the progress callback."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if on_event is not None:
        trainer.add_callback(progress_callback(on_event))


# ------------------------------------------------------------------------------------------------------------
# Running


def last_checkpoint(output_dir: str | Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not Path(output_dir).is_dir():
        return None
    return get_last_checkpoint(str(output_dir))


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def make_portable(folder: Path, base: str | None) -> None:
    """Record ``base`` (a name learnat resolves anywhere) as the adapter's base model."""
    p = folder / ADAPTER_CONFIG
    if base and p.is_file():
        conf = json.loads(p.read_text(encoding="utf-8"))
        conf["base_model_name_or_path"] = base
        p.write_text(json.dumps(conf, indent=2, sort_keys=True), encoding="utf-8")


def run_trainer(trainer, cfg: TrainConfig, *, stage: str, n_rows: int, base: str | None,
                adapter_in: str | None,
                loss_mode: str | None = None, on_event: EventFn | None = None,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train (resuming from the last checkpoint when asked), save the adapter/model (portable), evaluate when
    there is eval data, write the resolved config, metrics and manifest, merge when asked; return the
    manifest."""
    out = Path(cfg.output_dir)
    main = trainer.is_world_process_zero()
    if trainer.train_dataset is not None and len(trainer.train_dataset) == 0:
        raise LearnatError(f"no {stage} training rows left after tokenization: {n_rows} row(s) read, none "
                           f"keeps a token to learn within --max-length {cfg.max_length}; raise --max-length",
                           field="max_length")
    if main:
        # A manifest left by an earlier run must not make an unfinished run look complete.
        (out / MANIFEST_FILE).unlink(missing_ok=True)
    resume_from = last_checkpoint(out) if cfg.resume else None
    if cfg.resume and resume_from is None and on_event:
        on_event("message", {"text": f"--resume: no checkpoint in {out}, starting fresh"})
    attach_progress(trainer, on_event)
    attach_time_budget(trainer, cfg.max_time)
    t0 = time.time()
    with quiet():
        result = trainer.train(resume_from_checkpoint=resume_from)
        runtime = time.time() - t0
        trainer.save_model(str(out))
        eval_loss = None
        if trainer.eval_dataset is not None:
            eval_loss = trainer.evaluate().get("eval_loss")
    history = list(trainer.state.log_history)
    peak_gb = None
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available() and not cfg.cpu:
            peak_gb = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    tokens = next((e["num_tokens"] for e in reversed(history) if "num_tokens" in e), None)
    losses = [float(e["loss"]) for e in history if "loss" in e]
    import peft
    import transformers
    import trl

    manifest: dict[str, Any] = {
        "stage": stage, "output_dir": str(out),
        "adapter_dir": None if cfg.full else str(out), "model_dir": str(out) if cfg.full else None,
        "merged_dir": None, "base_model": base, "init_adapter": adapter_in, "lora": not cfg.full,
        "examples": n_rows, "steps": int(trainer.state.global_step),
        "max_steps": int(trainer.state.max_steps),
        "complete": int(trainer.state.global_step) >= int(trainer.state.max_steps),
        "epochs": float(trainer.state.epoch or 0.0),
        "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
        "train_loss": float(result.training_loss) if result.training_loss is not None else None,
        "eval_loss": float(eval_loss) if eval_loss is not None else None,
        "runtime_s": round(runtime, 3), "tokens": tokens,
        "tokens_per_s": round(tokens / runtime, 1) if tokens and runtime > 0 else None,
        "peak_gpu_mem_gb": peak_gb, "world_size": int(trainer.args.world_size), "resumed_from": resume_from,
        "checkpoint": last_checkpoint(out), "loss_mode": loss_mode, "report_to": cfg.report_to,
        "config": str(out / CONFIG_FILE), "metrics": str(out / METRICS_FILE),
        "versions": {"transformers": transformers.__version__, "trl": trl.__version__,
                     "peft": peft.__version__},
        **(extra or {}),
    }
    if main:
        make_portable(out, base)
        if cfg.merge:
            merged = out / MERGED_DIR
            model = trainer.accelerator.unwrap_model(trainer.model)
            with quiet():
                if hasattr(model, "merge_and_unload"):
                    model = model.merge_and_unload()
                model.save_pretrained(merged)
                trainer.processing_class.save_pretrained(merged)
            manifest["merged_dir"] = str(merged)
        save_resolved(cfg, out / CONFIG_FILE)
        metrics = {"train": _clean(result.metrics), "final_loss": manifest["final_loss"],
                   "first_loss": manifest["first_loss"], "eval_loss": manifest["eval_loss"],
                   "log_history": _clean(history)}
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        (out / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")
    return manifest


# ------------------------------------------------------------------------------------------------------------
# SFT


def build_sft_trainer(cfg: SftConfig, rows: list[dict[str, Any]] | None = None):
    """Build TRL's SFTTrainer for ``cfg``; returns ``(trainer, info)``."""
    from datasets import Dataset
    from trl import SFTConfig as TrlSFTConfig
    from trl import SFTTrainer

    score_label_positions_only()
    with quiet():
        if rows is None:
            rows = load_sft_rows(cfg.input, cfg.limit)
        rows, eval_rows = split_eval(rows, cfg, load_sft_rows)
        use_cpu, bf16 = device_settings(cfg)
        args = TrlSFTConfig(**common_args(cfg, use_cpu, bf16, eval_rows is not None), packing=False,
                            assistant_only_loss=False, completion_only_loss=True)
        # Full fine-tuning keeps float32 master weights (bf16 autocast); LoRA: float32 adapters, bf16 base.
        model, tokenizer, base, adapter = load_model(cfg.model, bf16=bf16 and not cfg.full)
        if cfg.full and adapter:
            raise LearnatError("--full cannot continue an adapter folder; merge it first (--merge)",
                               field="model")
        data, loss_mode = sft_dataset_format(rows, tokenizer)
        args.assistant_only_loss = loss_mode == "assistant_only"
        args.completion_only_loss = True if loss_mode == "completion_only" else None
        eval_data = sft_dataset_format(eval_rows, tokenizer)[0] if eval_rows else None
        peft_config = None if (cfg.full or adapter) else lora_config(cfg, model)
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(data),
                             eval_dataset=Dataset.from_list(eval_data) if eval_data else None,
                             processing_class=tokenizer, peft_config=peft_config)
        if cfg.compile_layers:
            compile_layers(trainer.model, cpu=use_cpu)
    return trainer, {"base": base, "adapter": adapter, "loss_mode": loss_mode, "rows": len(rows)}


def train_sft(cfg: SftConfig, rows: list[dict[str, Any]] | None = None,
              on_event: EventFn | None = None) -> dict[str, Any]:
    """Run SFT in this process and return the manifest record."""
    trainer, info = build_sft_trainer(cfg, rows)
    return run_trainer(trainer, cfg, stage="sft", n_rows=info["rows"], base=info["base"],
                       adapter_in=info["adapter"], loss_mode=info["loss_mode"], on_event=on_event)
