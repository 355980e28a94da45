"""One training configuration for ``learnat sft`` and ``learnat mdpo`` (paper sec. 3.3: SFT, then MDPO).

:class:`TrainConfig` (a dataclass) is the single place where a training option is declared: its field metadata
(flag, help) generates the shared CLI options of both commands (``commands/common.py`` turns
:func:`cli_fields` into Typer options), and the same fields are the keys of a ``--config FILE`` (YAML or
JSON). Precedence, as in TRL's scripts: dataclass defaults < the config file < the flags given explicitly on
the command line. :class:`MdpoConfig` adds the MDPO fields. Values are checked once, in ``__post_init__``
(``margin_form``, fractions, ``report_to``, ``deepspeed``...), and an unknown key in a config file is an error
naming the file and the key (nothing is dropped silently).

Inputs: a mapping (config file, flags) -> outputs: a validated config; :func:`save_resolved` writes the
resolved config (``training_config.json``) beside the adapter. No heavy imports.
"""

from __future__ import annotations

import json
import math
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from learnat_cli.errors import LearnatError

MARGIN_FORMS = ("linear", "odpo")
REPORT_TO = ("none", "tensorboard", "wandb")
ZERO_STAGES = ("zero2", "zero3")


def opt(default: Any, help: str, *flags: str, cli: bool = True, factory: Any = None) -> Any:
    """A dataclass field with its CLI flag(s) and help (flags default to ``--field-name``)."""
    meta = {"help": help, "flags": flags, "cli": cli}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Options shared by ``sft`` and ``mdpo``; each field is a flag of both commands and a config-file key."""

    input: str = opt("-", "Training rows (JSONL); - is stdin.")
    output_dir: str = opt("learnat-sft", "Adapter/model output folder.", "-o", "--output-dir")
    model: str | None = opt(None, "Student: an embedded name, a local folder, a hub id, or a learnat adapter "
                                  "folder (default: the embedded Qwen2.5-Coder-0.5B-Instruct).")
    full: bool = opt(False, "Full fine-tuning instead of LoRA.")
    lora_r: int = opt(16, "LoRA rank.")
    lora_alpha: int = opt(32, "LoRA alpha.")
    lora_dropout: float = opt(0.05, "LoRA dropout.")
    target_modules: list[str] | None = opt(None, "Comma-separated LoRA target modules (default: all linear).")
    lora_layers: int | None = opt(None, "LoRA on the last N decoder layers only (default: all layers).")
    epochs: float = opt(3.0, "Training epochs.")
    max_steps: int = opt(-1, "Stop after this many optimizer steps (-1: epochs).")
    learning_rate: float = opt(2e-4, "Learning rate.", "--lr", "--learning-rate")
    batch_size: int = opt(1, "Per-device batch size.")
    grad_accum: int = opt(8, "Gradient accumulation steps.")
    max_length: int = opt(4096, "Max tokens per example (truncated after).")
    warmup_ratio: float = opt(0.0, "Linear warmup as a fraction of the steps.")
    weight_decay: float = opt(0.0, "AdamW weight decay.")
    group_by_length: bool = opt(False, "Batch examples of similar length together (less padding).")
    save_steps: int = opt(50, "Checkpoint every N steps (and always at the end; 0: at the end only).")
    save_total_limit: int | None = opt(2, "Checkpoints kept.")
    resume: bool = opt(False, "Resume from the last checkpoint in --output-dir.")
    max_time: float | None = opt(None, "Stop after this many seconds of training, with a checkpoint; "
                                       "--resume continues (a run spread over several sittings).")
    merge: bool = opt(False, "Also write the merged model to OUTPUT_DIR/merged.")
    eval_file: str | None = opt(None, "Held-out rows (JSONL) whose loss is reported.")
    eval_split: float = opt(0.0, "Hold out this fraction of the input for an eval loss (0: none).")
    report_to: str = opt("none", "Experiment tracker: none, tensorboard or wandb.")
    seed: int = opt(42, "Random seed.")
    cpu: bool = opt(False, "Train on CPU even when a GPU is present.")
    bf16: bool | None = opt(None, "bf16 mixed precision (default: on GPUs that support it).")
    gradient_checkpointing: bool = opt(False, "Recompute activations in the backward pass (less memory).")
    compile_layers: bool = opt(False, "torch.compile each decoder layer (inductor, dynamic shapes): on CPU "
                                      "1.1x faster steps after a slower first pass (docs/BENCHMARKS.md).")
    logging_steps: int = opt(1, "Log loss/lr every N steps.")
    limit: int | None = opt(None, "Use only the first N rows.")
    gpus: int = opt(1, "Processes (GPUs) per node; >1 runs through accelerate launch (with --cpu: gloo).")
    nodes: int = opt(1, "Number of machines.")
    node_rank: int = opt(0, "This machine's rank.")
    master_addr: str | None = opt(None, "Rank-0 machine address.")
    master_port: int | None = opt(None, "Rank-0 port (default 29500).")
    deepspeed: str | None = opt(None, "zero2 or zero3: train with a generated DeepSpeed config.")
    deepspeed_config: str | None = opt(None, "", cli=False)  # written by the launcher
    world_size: int = opt(1, "", cli=False)  # informational: processes the launcher started

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, str):
            self.target_modules = [m.strip() for m in self.target_modules.split(",") if m.strip()] or None
        checks = [
            (0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", "expected a fraction in [0, 1)"),
            (0.0 <= self.eval_split < 1.0, "eval_split", "expected a fraction in [0, 1)"),
            (self.report_to in REPORT_TO, "report_to", f"expected one of {', '.join(REPORT_TO)}"),
            (self.deepspeed in (None, *ZERO_STAGES), "deepspeed", "expected zero2 or zero3"),
            (self.gpus >= 1 and self.nodes >= 1, "gpus", "--gpus and --nodes must be at least 1"),
            (self.batch_size >= 1 and self.grad_accum >= 1, "batch_size", "expected at least 1"),
            (self.lora_layers is None or self.lora_layers >= 1, "lora_layers", "expected at least 1"),
            (self.max_time is None or self.max_time > 0, "max_time", "expected seconds above 0"),
            (not (self.eval_file and self.eval_split), "eval_split",
             "give --eval-file or --eval-split, not both"),
        ]
        for ok, name, msg in checks:
            if not ok:
                raise LearnatError(f"{msg} (got {getattr(self, name)!r})", field=name)

    # ----------------------------------------------------------------------------------------------- building

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str | None = None,
                  flags: dict[str, Any] | None = None):
        """A config from a mapping (``source`` names it in errors: unknown keys, ill-typed values), with
        ``flags`` (already typed, from the command line) taking precedence."""
        hints = typing.get_type_hints(cls)
        known = {f.name for f in fields(cls)}
        values = {}
        for key, value in data.items():
            name = {"lr": "learning_rate"}.get(str(key).replace("-", "_"), str(key).replace("-", "_"))
            if name not in known:
                raise LearnatError(f"unknown option {key!r} for {cls.__name__}", file=source, field=str(key))
            values[name] = _coerce(value, hints[name], source, str(key))
        values.update(flags or {})
        try:
            return cls(**values)
        except LearnatError as e:
            from_file = e.field in values and e.field not in (flags or {})
            raise LearnatError(e.message, file=source if from_file else None, field=e.field) from None

    @classmethod
    def resolve(cls, config_file: str | None = None, flags: dict[str, Any] | None = None):
        """Defaults < ``config_file`` < ``flags`` (pass only the flags given explicitly)."""
        data = read_config_file(config_file) if config_file else {}
        return cls.from_dict(data, source=config_file, flags=flags)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SftConfig(TrainConfig):
    """``learnat sft`` (no fields beyond :class:`TrainConfig`)."""


@dataclass
class MdpoConfig(TrainConfig):
    """``learnat mdpo``: :class:`TrainConfig` plus the margin-aware DPO fields (defaults: see
    mdpo_trainer)."""

    input: str = opt("-", "Preference pairs (JSONL: prompt, chosen, rejected, margin); - is stdin.")
    output_dir: str = opt("learnat-mdpo", "Adapter/model output folder.", "-o", "--output-dir")
    learning_rate: float = opt(5e-6, "Learning rate.", "--lr", "--learning-rate")
    epochs: float = opt(1.0, "Training epochs.")
    beta: float = opt(0.1, "DPO temperature beta.")
    gamma: float = opt(1.0, "Margin scale: loss -log s(beta*h - gamma*margin); 0 = plain DPO.")
    margin_form: str = opt("linear",
                           "linear (paper) or odpo (-log s(beta*h - alpha*log margin), margin > 0).")
    odpo_alpha: float = opt(1.0, "alpha of the odpo margin form.")
    ref_model: str | None = opt(None, "Reference model (default: the policy with its adapter disabled).")
    precompute_ref: bool = opt(False, "Compute reference log-probs once before training.")
    ref_cache: str = opt("auto", "Keep each pair's reference log-probs on disk for the next run with the "
                                 "same pairs and reference (e.g. the DPO ablation after MDPO, a resumed "
                                 "run): auto ($LEARNAT_CACHE/ref-logps, one process), off, or a folder "
                                 "to keep them in (e.g. beside a run that moves between machines).")
    shared_prefix: str = opt("auto", "Run each pair's shared prompt once for chosen and rejected: auto "
                                     "(on CPU without gradient checkpointing), on, off.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.ref_cache.strip():
            raise LearnatError("--ref-cache is auto, off or a folder, not empty", field="ref_cache")
        if self.ref_cache not in ("auto", "off") and Path(self.ref_cache).expanduser().is_file():
            raise LearnatError(f"--ref-cache {self.ref_cache}: a file, not a folder", field="ref_cache")
        if self.shared_prefix not in ("auto", "on", "off"):
            raise LearnatError(f"--shared-prefix is auto, on or off, not {self.shared_prefix!r}",
                               field="shared_prefix")
        if self.shared_prefix == "on" and self.gradient_checkpointing:
            raise LearnatError("--shared-prefix on needs the prompt's KV cache, which gradient checkpointing "
                               "drops: use one or the other", field="shared_prefix")
        if self.margin_form not in MARGIN_FORMS:
            raise LearnatError(f"unknown margin form {self.margin_form!r} (expected one of "
                               f"{', '.join(MARGIN_FORMS)})", field="margin_form")


def cli_fields(cls: type[TrainConfig]) -> list[dict[str, Any]]:
    """What the command layer needs to declare one option per field: name, type, default, flags, help."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        if not f.metadata.get("cli", True):
            continue
        default = f.default if f.default is not MISSING else None
        flags = tuple(f.metadata.get("flags") or ()) or ("--" + f.name.replace("_", "-"),)
        out.append({"name": f.name, "type": hints[f.name], "default": default, "flags": flags,
                    "help": f.metadata.get("help", "")})
    return out


def read_config_file(path: str) -> dict[str, Any]:
    """A YAML (``.yaml``/``.yml``) or JSON config file as a mapping."""
    p = Path(path)
    if not p.is_file():
        raise LearnatError("no such config file", file=str(p))
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - yaml and json errors alike become one line
        raise LearnatError(f"cannot parse config: {str(e).splitlines()[0]}", file=str(p)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LearnatError("expected a mapping of option names to values", file=str(p))
    return data


def save_resolved(cfg: TrainConfig, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write the resolved config (every field, plus ``extra``) as JSON; ``--config`` reads it back."""
    Path(path).write_text(json.dumps({**cfg.to_dict(), **(extra or {})}, indent=2, default=str),
                          encoding="utf-8")


def _coerce(value: Any, hint: Any, source: str | None, key: str) -> Any:
    """Check a config value against its field type (ints are accepted for floats)."""
    args = typing.get_args(hint)
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise LearnatError("expected a value, got null", file=source, field=key)
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    origin = typing.get_origin(base)
    if origin is list:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise LearnatError("expected a list of strings", file=source, field=key)
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads 2e-4 as a string
            except ValueError:
                pass
    elif base is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - every field has one of the types above
        return value
    raise LearnatError(f"expected {base.__name__}, got {value!r}", file=source, field=key)
