"""``learnat sft``: supervised fine-tuning of the student on decomposition trajectories -- the paper's SFT stage
(LearNAT, arXiv 2504.02327: "SFT on successful trajectories comes first, then MDPO"; see PAPER.md, MDPO / Order
of training).

Input records: :class:`~learnat_cli.records.SftRow` rows, as written by ``learnat build-pairs --sft``: chat
``messages`` (system, user, assistant), or ``prompt``/``completion`` strings. Output: an adapter folder (LoRA by
default; the whole model with ``full=True``), ``training_config.json`` and ``metrics.json`` in it, optionally a
merged model in ``<output_dir>/merged``, and one manifest record (a dict; the CLI prints it as one JSON line).

Loss is on the assistant turns only:

- when the tokenizer's chat template has ``{% generation %}`` markers (the tiny test model's has), TRL's
  ``assistant_only_loss=True`` masks everything but the assistant turns;
- otherwise (the real Qwen2.5 template has no markers) every ``messages`` row is turned into the conversational
  prompt/completion form -- prompt = the messages before the last assistant turn, completion = that turn -- and
  TRL's ``completion_only_loss=True`` masks the prompt. Earlier assistant turns, if any, are context only.

Also holds what :mod:`learnat_cli.training.mdpo_trainer` shares with SFT: model/adapter loading, the TrainingArguments fields
common to both stages, checkpoint resume, merge, and the config/metrics/manifest files.

Defaults and where they come from (PAPER.md gives no SFT hyper-parameters for LearNAT): LoRA r=16, alpha=32,
dropout 0.05 on all linear layers (common LoRA practice for 0.5B-7B code models), lr 2e-4 (usual LoRA SFT rate),
3 epochs, max length 4096 tokens (the student prompt alone carries a rendered schema of up to 2048 tokens, the
render_schema default budget, plus the question and the answer; truncation keeps the start, so a too-short limit
would cut the answer).
Heavy imports (torch, transformers, trl, peft) happen inside functions.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from learnat_cli.errors import LearnatError
from learnat_cli.jsonl import display_name, read_jsonl

ADAPTER_CONFIG = "adapter_config.json"
CONFIG_FILE = "training_config.json"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"
MERGED_DIR = "merged"


@dataclass
class TrainConfig:
    """Options shared by ``sft`` and ``mdpo`` (the CLI flags of the same names)."""

    input: str = "-"
    output_dir: str = "learnat-sft"
    model: str | None = None  # None -> the embedded default student (models.resolve_model)
    full: bool = False  # full fine-tuning instead of LoRA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] | None = None  # None -> "all-linear"
    epochs: float = 3.0
    max_steps: int = -1
    learning_rate: float = 2e-4
    batch_size: int = 1
    grad_accum: int = 8
    max_length: int = 4096
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    save_steps: int = 0  # 0: no intermediate checkpoints
    save_total_limit: int | None = 2
    resume: bool = False
    merge: bool = False
    seed: int = 42
    cpu: bool = False  # force CPU (else CUDA when present)
    bf16: bool | None = None  # None: bf16 on a GPU that supports it, fp32 on CPU
    gradient_checkpointing: bool = False
    logging_steps: int = 1
    limit: int | None = None
    deepspeed: str | None = None  # path to a DeepSpeed JSON config (see launch.deepspeed_config)
    world_size: int = 1  # informational: processes the launcher started

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class SftConfig(TrainConfig):
    output_dir: str = "learnat-sft"


# --------------------------------------------------------------------------------------------------------------
# Input


def _is_messages(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(m, dict) for m in v)


def check_messages(msgs: Any, name: str, line: int, fld: str) -> list[dict[str, str]]:
    """Validate a chat message list (each ``{"role", "content"}`` with string values); return clean copies."""
    if not isinstance(msgs, list) or not msgs:
        raise LearnatError("expected a non-empty list of chat messages", file=name, line=line, field=fld)
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise LearnatError("expected a {role, content} object", file=name, line=line, field=f"{fld}.{i}")
        for k in ("role", "content"):
            if not isinstance(m.get(k), str):
                msg = "missing required field" if k not in m else "expected a string"
                raise LearnatError(msg, file=name, line=line, field=f"{fld}.{i}.{k}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def load_sft_rows(path: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Read SFT rows into TRL's formats: ``{"messages": [...]}`` (conversational language modelling) or
    ``{"prompt": str, "completion": str}``. All rows of one file must use the same form."""
    name = display_name(path)
    rows: list[dict[str, Any]] = []
    kind = None
    for lineno, obj in read_jsonl(path):
        if "messages" in obj and obj["messages"] is not None:
            msgs = check_messages(obj["messages"], name, lineno, "messages")
            if not any(m["role"] == "assistant" for m in msgs):
                raise LearnatError("no assistant message to learn from", file=name, line=lineno, field="messages")
            row, k = {"messages": msgs}, "messages"
        elif "prompt" in obj or "completion" in obj:
            for f in ("prompt", "completion"):
                if f not in obj:
                    raise LearnatError("missing required field", file=name, line=lineno, field=f)
                if not isinstance(obj[f], str):
                    raise LearnatError("expected a string", file=name, line=lineno, field=f)
            if not obj["completion"]:
                raise LearnatError("empty completion", file=name, line=lineno, field="completion")
            row, k = {"prompt": obj["prompt"], "completion": obj["completion"]}, "prompt_completion"
        else:
            raise LearnatError("missing required field (expected 'messages', or 'prompt' and 'completion')",
                               file=name, line=lineno, field="messages")
        if kind is None:
            kind = k
        elif k != kind:
            raise LearnatError(f"mixed row formats: earlier rows use {kind!r}, this one {k!r}",
                               file=name, line=lineno)
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise LearnatError("no training rows", file=name)
    return rows


def has_generation_markers(tokenizer) -> bool:
    from trl.chat_template_utils import has_generation_markers as _has

    tmpl = getattr(tokenizer, "chat_template", None)
    return bool(tmpl) and _has(tmpl)


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


# --------------------------------------------------------------------------------------------------------------
# Models


def resolve_model_path(spec: str | None) -> str:
    """``--model`` -> a local folder or hub id, via :func:`learnat_cli.models.resolve_model` when available."""
    try:
        from learnat_cli.models import resolve_model  # written by another module; imported lazily
    except ImportError:
        resolve_model = None
    if resolve_model is not None:
        return str(resolve_model(spec))
    if spec is None:
        raise LearnatError("no default student available (learnat_cli.models is missing); pass --model PATH",
                           field="model")
    return spec


def is_adapter_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | os.PathLike) -> str:
    """The base model an adapter folder was trained on (``base_model_name_or_path`` in adapter_config.json)."""
    p = Path(path) / ADAPTER_CONFIG
    try:
        base = json.loads(p.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError) as e:
        raise LearnatError(f"unreadable adapter config: {e}", file=str(p)) from None
    if not base:
        raise LearnatError("adapter config names no base model", file=str(p), field="base_model_name_or_path")
    return base


def device_settings(cfg: TrainConfig) -> tuple[bool, bool]:
    """``(use_cpu, bf16)`` for this machine and config."""
    import torch

    use_cpu = cfg.cpu or not torch.cuda.is_available()
    if cfg.bf16 is None:
        bf16 = (not use_cpu) and torch.cuda.is_bf16_supported()
    else:
        bf16 = bool(cfg.bf16) and not use_cpu
    return use_cpu, bf16


def load_model(spec: str | None, *, bf16: bool, trainable_adapter: bool = True):
    """Load ``(model, tokenizer, base_path, adapter_path)``. A folder with ``adapter_config.json`` (a
    ``learnat sft`` output) loads its base model plus the adapter, trainable when ``trainable_adapter``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(spec)
    if path.startswith("~"):
        path = os.path.expanduser(path)
    adapter = None
    base = path
    if is_adapter_dir(path):
        adapter = path
        base = adapter_base(path)
        if not Path(base).exists():
            # A name or hub id recorded by an earlier run: resolve it the same way as --model.
            base = resolve_model_path(base)
    elif spec is not None and not Path(path).exists() and path.startswith((".", "/", "~")):
        raise LearnatError("no such model folder", file=path, field="model")
    dtype = torch.bfloat16 if bf16 else torch.float32
    try:
        tok_src = adapter if adapter and (Path(adapter) / "tokenizer_config.json").exists() else base
        tokenizer = AutoTokenizer.from_pretrained(tok_src)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    except OSError as e:
        raise LearnatError(f"cannot load model: {e}".splitlines()[0], file=str(base), field="model") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable_adapter)
    return model, tokenizer, base, adapter


def lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules or "all-linear", task_type="CAUSAL_LM")


def common_args(cfg: TrainConfig, use_cpu: bool, bf16: bool) -> dict[str, Any]:
    """TrainingArguments fields shared by SFTConfig and DPOConfig."""
    save = cfg.save_steps and cfg.save_steps > 0
    if not 0.0 <= cfg.warmup_ratio < 1.0:
        raise LearnatError("expected a fraction in [0, 1)", field="warmup_ratio")
    return {
        "output_dir": cfg.output_dir,
        "num_train_epochs": cfg.epochs,
        "max_steps": cfg.max_steps if cfg.max_steps is not None else -1,
        "learning_rate": cfg.learning_rate,
        "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "warmup_steps": cfg.warmup_ratio,  # a float in [0, 1) is a ratio in transformers 5
        "weight_decay": cfg.weight_decay,
        "logging_steps": cfg.logging_steps,
        "save_strategy": "steps" if save else "no",
        "save_steps": cfg.save_steps if save else 500,
        "save_total_limit": cfg.save_total_limit,
        "seed": cfg.seed,
        "use_cpu": use_cpu,
        "bf16": bf16,
        "fp16": False,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "ddp_find_unused_parameters": False,
        "deepspeed": cfg.deepspeed,
        "max_length": cfg.max_length,
    }


def last_checkpoint(output_dir: str | os.PathLike) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not Path(output_dir).is_dir():
        return None
    return get_last_checkpoint(str(output_dir))


def _final_loss(log_history: list[dict[str, Any]]) -> float | None:
    for entry in reversed(log_history):
        if "loss" in entry:
            return float(entry["loss"])
    return None


def run_trainer(trainer, cfg: TrainConfig, *, stage: str, extra_config: dict[str, Any], n_rows: int,
                base: str, adapter_in: str | None, loss_mode: str | None = None) -> dict[str, Any]:
    """Train (resuming from the last checkpoint when asked), save the adapter/model, write the config and metrics
    files, merge when asked, and return the manifest record. Python-level prints of the Trainer go to stderr."""
    if trainer.is_world_process_zero():
        # A manifest left by an earlier run must not make an unfinished run look complete.
        (Path(cfg.output_dir) / MANIFEST_FILE).unlink(missing_ok=True)
    resume_from = None
    if cfg.resume:
        resume_from = last_checkpoint(cfg.output_dir)
        if resume_from is None:
            print(f"learnat {stage}: --resume: no checkpoint in {cfg.output_dir}, starting fresh", file=sys.stderr)
    t0 = time.time()
    with contextlib.redirect_stdout(sys.stderr):
        result = trainer.train(resume_from_checkpoint=resume_from)
        runtime = time.time() - t0
        trainer.save_model(cfg.output_dir)
    out = Path(cfg.output_dir)
    history = list(trainer.state.log_history)
    final_loss = _final_loss(history)
    first_loss = next((float(e["loss"]) for e in history if "loss" in e), None)
    manifest: dict[str, Any] = {
        "stage": stage,
        "output_dir": str(out),
        "adapter_dir": str(out) if not cfg.full else None,
        "model_dir": str(out) if cfg.full else None,
        "merged_dir": None,
        "base_model": base,
        "init_adapter": adapter_in,
        "lora": not cfg.full,
        "examples": n_rows,
        "steps": int(trainer.state.global_step),
        "epochs": float(trainer.state.epoch or 0.0),
        "first_loss": first_loss,
        "final_loss": final_loss,
        "train_loss": float(result.training_loss) if result.training_loss is not None else None,
        "runtime_s": round(runtime, 3),
        "world_size": int(trainer.args.world_size),
        "resumed_from": resume_from,
        "config": str(out / CONFIG_FILE),
        "metrics": str(out / METRICS_FILE),
    }
    if loss_mode:
        manifest["loss_mode"] = loss_mode
    manifest.update(extra_config)
    if trainer.is_world_process_zero():
        import peft
        import transformers
        import trl

        if cfg.merge:
            merged = out / MERGED_DIR
            model = trainer.accelerator.unwrap_model(trainer.model)
            with contextlib.redirect_stdout(sys.stderr):
                if hasattr(model, "merge_and_unload"):
                    model = model.merge_and_unload()
                model.save_pretrained(merged)
                trainer.processing_class.save_pretrained(merged)
            manifest["merged_dir"] = str(merged)
        conf = {"stage": stage, **asdict(cfg), **extra_config, "base_model": base, "init_adapter": adapter_in,
                "loss_mode": loss_mode,
                "versions": {"transformers": transformers.__version__, "trl": trl.__version__,
                             "peft": peft.__version__}}
        (out / CONFIG_FILE).write_text(json.dumps(conf, indent=2, default=str), encoding="utf-8")
        metrics = {"train": _clean(result.metrics), "final_loss": final_loss, "first_loss": first_loss,
                   "log_history": _clean(history)}
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        (out / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")
    return manifest


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def quiet_libraries() -> None:
    """Keep transformers/datasets chatter off the terminal (warnings still show)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import datasets

        datasets.disable_progress_bars()
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - optional niceties
        return


# --------------------------------------------------------------------------------------------------------------
# SFT


def build_sft_trainer(cfg: SftConfig, rows: list[dict[str, Any]] | None = None):
    """Build TRL's SFTTrainer for ``cfg``; returns ``(trainer, info)``."""
    from datasets import Dataset
    from trl import SFTConfig as TrlSFTConfig
    from trl import SFTTrainer

    quiet_libraries()
    if rows is None:
        rows = load_sft_rows(cfg.input, cfg.limit)
    use_cpu, bf16 = device_settings(cfg)
    model, tokenizer, base, adapter = load_model(cfg.model, bf16=bf16)
    data, loss_mode = sft_dataset_format(rows, tokenizer)
    args = TrlSFTConfig(
        **common_args(cfg, use_cpu, bf16),
        assistant_only_loss=(loss_mode == "assistant_only"),
        completion_only_loss=True if loss_mode == "completion_only" else None,
        packing=False,
    )
    peft_config = None if (cfg.full or adapter) else lora_config(cfg)
    if cfg.full and adapter:
        raise LearnatError("--full cannot continue an adapter folder; merge it first (--merge)", field="model")
    with contextlib.redirect_stdout(sys.stderr):
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(data),
                             processing_class=tokenizer, peft_config=peft_config)
    return trainer, {"base": base, "adapter": adapter, "loss_mode": loss_mode, "rows": len(rows)}


def train_sft(cfg: SftConfig) -> dict[str, Any]:
    """Run SFT and return the manifest record."""
    trainer, info = build_sft_trainer(cfg)
    return run_trainer(trainer, cfg, stage="sft", extra_config={}, n_rows=info["rows"], base=info["base"],
                       adapter_in=info["adapter"], loss_mode=info["loss_mode"])
