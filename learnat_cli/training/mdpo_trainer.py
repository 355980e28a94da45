"""``learnat mdpo``: Margin-aware DPO on AST-margin preference pairs -- the paper's MDPO stage (LearNAT, arXiv
2504.02327, "Margin-aware DPO": L = -E[log sigmoid(beta * delta_logratio - delta_r)], trained after SFT).

Input records: :class:`~learnat_cli.records.PreferencePair` rows from ``learnat build-pairs``: ``prompt`` (a
string or a list of chat messages, TRL's conversational form), ``chosen``, ``rejected`` (strings, or assistant
message lists) and ``margin`` (the AST reward gap ``R(s_w) - R(s_l)``; 0 when absent), plus ``id``. Output: an
adapter folder (``training_config.json``, ``metrics.json`` in it, ``merged/`` with ``merge=True``) and one
manifest record.

Loss per pair (``margin_form="linear"``, the paper's form, default)::

    -log sigmoid(beta * ((log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))) - gamma * margin)

``gamma=0`` is plain DPO. ``margin_form="odpo"`` is the released code's ODPO-style
``-log sigmoid(beta * h - alpha * log(margin))`` (alpha = ``odpo_alpha``); it is defined only for margins > 0,
so pairs with ``margin <= 0`` are rejected when the data is read.

How the margin reaches the loss: TRL 1.16's DPOTrainer keeps extra dataset columns through its tokenisation
map, but ``remove_unused_columns`` keeps only its signature columns and its collator drops unknown keys. The
:class:`MdpoTrainer` subclass adds ``margin`` to the signature columns, uses a collator that returns a
``margin`` tensor, keeps it out of the model's keyword arguments, and computes the loss above from the summed
completion-token log-probabilities of the policy and the reference.

Reference model: when the policy is a fresh LoRA on a (merged SFT) model, the same model with the adapter
disabled; when ``--model`` is a ``learnat sft`` adapter folder, TRL keeps a frozen copy of that adapter as the
reference (the SFT model); with ``ref_model=PATH`` that model (an adapter folder is merged into its base).

Reference log-probs are kept on disk (``ref_cache="auto"``, one process): each training pair's reference
log-probs, once computed, are appended to ``$LEARNAT_CACHE/ref-logps/<key>.jsonl`` (``ref_cache=FOLDER``:
``FOLDER/<key>.jsonl``, e.g. inside a run folder that a carry moves to another machine), the key hashing the
pairs (prompt, chosen, rejected, in order), the reference (the model/adapter/ref-model folders' weight,
config, tokenizer and chat-template files: names, sizes, content digests -- not paths or mtimes, so an SFT
adapter restored from a carried run on another machine or in another folder keeps its cache), ``max_length``
and the precision. A later run with the same key -- the plain-DPO ablation after MDPO from the same SFT
adapter, or a resumed run -- reads them instead of running the reference forward pass (:class:`RefLogpsStore`;
same loss and gradients: test).

Defaults and their sources: beta 0.1 (DPO paper / TRL default; PAPER.md gives none), gamma 1.0 (the paper's
loss subtracts the unscaled reward gap), odpo alpha 1.0 (the released code), lr 5e-6 (common LoRA DPO rate;
TRL's own default is 1e-6), 1 epoch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from learnat_cli.errors import LearnatError
from learnat_cli.jsonl import display_name, parse_record, read_jsonl
from learnat_cli.paths import cache_dir, folder_content_identity
from learnat_cli.records import PreferencePair
from learnat_cli.training.config import MARGIN_FORMS, MdpoConfig
from learnat_cli.training.runner import (
    EventFn,
    adapter_base,
    common_args,
    compile_layers,
    device_settings,
    load_model,
    lora_config,
    quiet,
    run_trainer,
    score_label_positions_only,
    split_eval,
)

__all__ = ["MARGIN_FORMS", "MdpoConfig", "RefLogpsStore", "build_mdpo_trainer", "load_pairs", "mdpo_losses",
           "train_mdpo"]
# ------------------------------------------------------------------------------------------------------------
# Input


def load_pairs(path: str, limit: int | None = None, margin_form: str = "linear") -> list[dict[str, Any]]:
    """Read :class:`PreferencePair` records into TRL's format plus ``margin`` (float). A string prompt takes
    string completions; a message-list prompt takes message lists or strings (wrapped as one assistant
    message). All rows of one file use the same prompt form."""
    name = display_name(path)
    rows: list[dict[str, Any]] = []
    conv = None
    for lineno, obj in read_jsonl(path):
        rec = parse_record(PreferencePair, obj, name, lineno)
        is_conv = not isinstance(rec.prompt, str)
        row: dict[str, Any] = {}
        for f in ("prompt", "chosen", "rejected"):
            v = getattr(rec, f)
            if isinstance(v, str):
                if is_conv and f != "prompt":
                    v = [{"role": "assistant", "content": v}]
            elif not is_conv:
                raise LearnatError("expected a string (the prompt is a string)", file=name, line=lineno,
                                   field=f)
            else:
                v = [{"role": m.role, "content": m.content} for m in v]
            row[f] = v
        if conv is None:
            conv = is_conv
        elif conv != is_conv:
            raise LearnatError("mixed prompt formats (strings and chat messages) in one file", file=name,
                               line=lineno, field="prompt")
        if margin_form == "odpo" and rec.margin <= 0:
            raise LearnatError("the odpo margin form needs margin > 0 (log of the reward gap)", file=name,
                               line=lineno, field="margin")
        row["margin"] = float(rec.margin)
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise LearnatError("no preference pairs", file=name)
    return rows


# ------------------------------------------------------------------------------------------------------------
# Loss


def mdpo_losses(chosen_logratios, rejected_logratios, margins, *, beta: float, gamma: float = 1.0,
                margin_form: str = "linear", odpo_alpha: float = 1.0):
    """Per-pair MDPO loss from the policy-minus-reference log-ratios (torch tensors, shape ``[B]``)."""
    import torch.nn.functional as F

    h = chosen_logratios - rejected_logratios
    margins = margins.to(h.dtype)
    if margin_form == "linear":
        return -F.logsigmoid(beta * h - gamma * margins)
    if margin_form == "odpo":
        if bool((margins <= 0).any()):
            raise LearnatError("the odpo margin form needs every margin > 0", field="margin")
        return -F.logsigmoid(beta * h - odpo_alpha * margins.log())
    raise LearnatError(f"unknown margin form {margin_form!r} (expected one of {', '.join(MARGIN_FORMS)})",
                       field="margin_form")


def shared_prefix_logps(lm, input_ids, attention_mask, completion_mask):
    """Summed completion log-probabilities of each row of a preference batch -- chosen rows, then rejected
    rows, right-padded, as TRL's collator builds it -- with each pair's shared prompt run once.

    A chosen and a rejected step share their prompt (the schema, the question, the steps so far: hundreds of
    tokens) and differ in a few dozen completion tokens. The plain path runs the prompt twice (and twice more
    for the reference); here the prompt but its last token runs once into a KV cache, the cache is repeated
    for the two rows, and only the rest (last prompt token + completion) runs per row, continuing the
    positions.
    Only the completion positions go through the LM head. Gradients flow through the cached keys and values,
    so the result and its gradients equal the plain path's (tests). ``lm``: the causal LM or a PeftModel over
    it (its LoRA layers, enabled or disabled, apply as in a plain forward). Needs the cache, so not under
    gradient checkpointing."""
    import torch
    from transformers import DynamicCache

    causal = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    body = getattr(causal, causal.base_model_prefix)
    head = causal.get_output_embeddings()
    n = input_ids.shape[0] // 2
    out: list = [None] * (2 * n)
    for i in range(n):
        rows = [i, n + i]
        lens = [int(attention_mask[r].sum()) for r in rows]
        starts = [int(completion_mask[r].nonzero()[0]) if bool(completion_mask[r].any()) else lens[k]
                  for k, r in enumerate(rows)]
        m = min(starts)
        differ = (input_ids[i, :m] != input_ids[n + i, :m]).nonzero()
        p = max(0, (int(differ[0]) if len(differ) else m) - 1)  # shared tokens run once
        end = max(lens)
        cache = DynamicCache(config=causal.config)
        if p > 0:
            body(input_ids=input_ids[i:i + 1, :p], past_key_values=cache, use_cache=True)
            cache.batch_repeat_interleave(2)
        mask = torch.cat([attention_mask.new_ones((2, p)), attention_mask[rows, p:end]], dim=1)
        pos = torch.arange(p, end, device=input_ids.device).unsqueeze(0).expand(2, -1)
        hidden = body(input_ids=input_ids[rows, p:end], attention_mask=mask, position_ids=pos,
                      past_key_values=cache, use_cache=True).last_hidden_state
        for k, r in enumerate(rows):
            target = input_ids[r, p + 1:lens[k]]
            keep = completion_mask[r, p + 1:lens[k]].bool()
            logits = head(hidden[k, :lens[k] - p - 1][keep]).float()
            out[r] = torch.log_softmax(logits, dim=-1).gather(-1, target[keep].unsqueeze(-1)).sum()
    return torch.stack(out)


# ------------------------------------------------------------------------------------------------------------
# Reference log-probs kept between runs


def _folder_fingerprint(path: str | None) -> list | None:
    """A model folder's weight, config, tokenizer and chat-template files by content
    (:func:`folder_content_identity`: not by path or mtime, so a copied or carried adapter keeps its cache); a
    name that is no folder (a hub id) as itself."""
    if not path:
        return None
    p = Path(path).expanduser()
    if not p.is_dir():
        return [str(path)]
    return folder_content_identity(p, lambda name: name.endswith((".json", ".jinja", ".safetensors", ".bin")))


class RefLogpsStore:
    """Each training pair's reference log-probs (chosen, rejected) in an append-only JSONL file keyed by
    everything they depend on (module docstring). ``known`` maps a pair's index in the training rows to its
    values; :meth:`annotate` adds ``pair_index`` and the known values (NaN where unknown) to the rows, and
    :meth:`record` appends new ones as training computes them."""

    VERSION = 2  # 2: folders identified by content, not path and mtime

    def __init__(self, path: Path):
        self.path = path
        self.known: dict[int, tuple[float, float]] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    d = json.loads(line)
                    self.known[int(d["i"])] = (float(d["c"]), float(d["r"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by an interrupted run: computed again

    @classmethod
    def for_run(cls, cfg: MdpoConfig, rows: list[dict[str, Any]], model_path: str | None,
                adapter: str | None, bf16: bool) -> RefLogpsStore | None:
        """The store for this run, or None when it does not apply (``--ref-cache off``, precomputed reference
        log-probs, several processes)."""
        if cfg.ref_cache == "off" or cfg.precompute_ref or int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
            return None
        h = hashlib.sha256()
        ident = {"v": cls.VERSION, "model": _folder_fingerprint(model_path),
                 "adapter": _folder_fingerprint(adapter), "ref_model": _folder_fingerprint(cfg.ref_model),
                 "full": cfg.full,
                 "max_length": cfg.max_length, "bf16": bf16}
        h.update(json.dumps(ident, sort_keys=True).encode())
        for r in rows:
            h.update(json.dumps([r["prompt"], r["chosen"], r["rejected"]], sort_keys=True).encode())
        folder = cache_dir("ref-logps") if cfg.ref_cache == "auto" else Path(cfg.ref_cache).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder / f"{h.hexdigest()[:20]}.jsonl")

    def annotate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nan = float("nan")
        out = []
        for i, r in enumerate(rows):
            c, rj = self.known.get(i, (nan, nan))
            out.append({**r, "pair_index": i, "ref_chosen_logps": c, "ref_rejected_logps": rj})
        return out

    def record(self, indices, chosen, rejected) -> None:
        new = []
        for i, c, r in zip(indices, chosen, rejected, strict=True):
            i, c, r = int(i), float(c), float(r)
            if i not in self.known and math.isfinite(c) and math.isfinite(r):
                self.known[i] = (c, r)
                new.append(json.dumps({"i": i, "c": c, "r": r}) + "\n")
        if new:
            with self.path.open("a", encoding="utf-8") as f:
                f.write("".join(new))


@lru_cache(maxsize=1)
def trainer_classes():
    """``(MarginCollator, MdpoTrainer)``, built on first use so that importing this module stays light."""
    import torch
    from accelerate.utils import is_peft_model
    from trl import DPOTrainer
    from trl.models.utils import disable_gradient_checkpointing
    from trl.trainer.dpo_trainer import DataCollatorForPreference
    from trl.trainer.utils import use_adapter

    class MarginCollator(DataCollatorForPreference):
        """TRL's preference collator plus a float ``margin`` tensor (0 for rows without one)."""

        def torch_call(self, examples):
            out = super().torch_call(examples)
            out["margin"] = torch.tensor([float(e.get("margin", 0.0) or 0.0) for e in examples],
                                         dtype=torch.float32)
            if "pair_index" in examples[0]:
                out["pair_index"] = torch.tensor([int(e["pair_index"]) for e in examples], dtype=torch.long)
            return out

    class MdpoTrainer(DPOTrainer):
        """DPOTrainer whose loss is MDPO's ``-log sigmoid(beta * h - gamma * margin)`` (see module doc)."""

        _tag_names = ("trl", "dpo", "mdpo", "learnat")

        def __init__(self, *args, gamma: float = 1.0, margin_form: str = "linear", odpo_alpha: float = 1.0,
                     shared_prefix: bool = False, ref_store: RefLogpsStore | None = None, **kwargs):
            self.gamma = float(gamma)
            self.ref_store = ref_store
            self.ref_forward_rows = 0  # rows whose reference log-probs were computed, not read from the store
            self.shared_prefix = bool(shared_prefix)
            self._prefix_now = False
            self.margin_form = margin_form
            self.odpo_alpha = float(odpo_alpha)
            targs = kwargs.get("args")
            if kwargs.get("data_collator") is None and targs is not None:
                tok = kwargs.get("processing_class")
                tok = getattr(tok, "tokenizer", tok)
                if tok is not None and tok.pad_token is None:
                    tok.pad_token = tok.eos_token
                if tok is not None:
                    kwargs["data_collator"] = MarginCollator(
                        pad_token_id=tok.pad_token_id, max_length=targs.max_length,
                        truncation_mode=targs.truncation_mode, pad_to_multiple_of=targs.pad_to_multiple_of)
            super().__init__(*args, **kwargs)
            if self.loss_types != ["sigmoid"] or self.f_divergence_type != "reverse_kl" or self.ld_alpha:
                raise LearnatError("MdpoTrainer supports loss_type='sigmoid' with reverse KL only")

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            extra = [c for c in ("margin", "pair_index") if c not in self._signature_columns]
            if extra:
                self._signature_columns = list(self._signature_columns) + extra

        def compute_ref_log_probs(self, model, inputs):
            inputs = {k: v for k, v in inputs.items() if k not in ("margin", "pair_index")}
            return super().compute_ref_log_probs(model, inputs)

        def _sequence_logps(self, model, model_kwargs, labels, seq_len):
            if self._prefix_now:
                lm = self.accelerator.unwrap_model(model)
                return None, shared_prefix_logps(lm, model_kwargs["input_ids"],
                                                 model_kwargs["attention_mask"], labels != -100)
            out = model(**model_kwargs, labels=labels, fused_lm_head=True)
            return out, out.log_probs[:, -seq_len:].sum(dim=1)

        def _compute_loss(self, model, inputs, return_outputs):
            mode = "train" if self.model.training else "eval"
            skip = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps", "margin", "pair_index"}
            model_kwargs = {k: v for k, v in inputs.items() if k not in skip}
            model_kwargs["use_cache"] = False
            completion_mask = inputs["completion_mask"]
            seq_len = completion_mask.size(1) - 1
            labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
            # the shared-prefix path returns no model outputs: used when none are asked for
            self._prefix_now = self.shared_prefix and not return_outputs and "attention_mask" in model_kwargs
            outputs, logps = self._sequence_logps(model, model_kwargs, labels, seq_len)
            chosen_logps, rejected_logps = logps.chunk(2, dim=0)

            stored = "ref_chosen_logps" in inputs and all(
                bool(torch.isfinite(inputs[k]).all()) for k in ("ref_chosen_logps", "ref_rejected_logps"))
            if self.precompute_ref_logps or stored:
                ref_chosen_logps = inputs["ref_chosen_logps"].to(chosen_logps.device)
                ref_rejected_logps = inputs["ref_rejected_logps"].to(chosen_logps.device)
            else:
                with torch.no_grad(), disable_gradient_checkpointing(self.model,
                                                                     self.args.gradient_checkpointing_kwargs):
                    if is_peft_model(self.model) and self.ref_model is None:
                        unwrapped = self.accelerator.unwrap_model(self.model)
                        name = "ref" if "ref" in unwrapped.peft_config else None
                        with use_adapter(unwrapped, adapter_name=name):
                            _, ref_logps = self._sequence_logps(self.model, model_kwargs, labels, seq_len)
                    else:
                        _, ref_logps = self._sequence_logps(self.ref_model, model_kwargs, labels, seq_len)
                ref_chosen_logps, ref_rejected_logps = ref_logps.chunk(2, dim=0)
                self.ref_forward_rows += int(ref_chosen_logps.shape[0])
                if self.ref_store is not None and mode == "train" and "pair_index" in inputs:
                    self.ref_store.record(inputs["pair_index"].tolist(), ref_chosen_logps.tolist(),
                                          ref_rejected_logps.tolist())

            self._prefix_now = False
            chosen_logratios = chosen_logps - ref_chosen_logps
            rejected_logratios = rejected_logps - ref_rejected_logps
            margins = inputs.get("margin")
            if margins is None:
                margins = torch.zeros_like(chosen_logratios)
            margins = margins.to(chosen_logratios.device)
            losses = mdpo_losses(chosen_logratios, rejected_logratios, margins, beta=self.beta,
                                 gamma=self.gamma,
                                 margin_form=self.margin_form, odpo_alpha=self.odpo_alpha)
            loss = losses.mean()

            # Metrics (the same names as TRL's DPO logs, plus the data margin).
            m = self._metrics[mode]
            gather = self.accelerator.gather_for_metrics
            if mode == "train":
                self._total_train_tokens += int(gather(inputs["attention_mask"].sum()).sum().item())
            m["num_tokens"] = [self._total_train_tokens]
            chosen_rewards = self.beta * chosen_logratios.detach()
            rejected_rewards = self.beta * rejected_logratios.detach()
            m["rewards/chosen"].append(gather(chosen_rewards).mean().item())
            m["rewards/rejected"].append(gather(rejected_rewards).mean().item())
            m["rewards/accuracies"].append(gather((chosen_rewards > rejected_rewards).float()).mean().item())
            m["rewards/margins"].append(gather(chosen_rewards - rejected_rewards).mean().item())
            m["logps/chosen"].append(gather(chosen_logps.detach()).mean().item())
            m["logps/rejected"].append(gather(rejected_logps.detach()).mean().item())
            m["margin/data"].append(gather(margins).mean().item())
            return (loss, outputs) if return_outputs else loss

    return MarginCollator, MdpoTrainer


# ------------------------------------------------------------------------------------------------------------
# Training


def comparison_trainer(kind: str, model, tok, args, rows: list[dict[str, Any]], lora, callbacks: list):
    """For the benchmarks: learnat's MdpoTrainer (``kind="mdpo"``, gamma 1) or TRL's stock DPOTrainer
    (``kind="dpo"``, on the same rows without their margins), same model, arguments, LoRA and callbacks."""
    from datasets import Dataset
    from trl import DPOTrainer

    score_label_positions_only()  # both kinds score the same positions
    _, mdpo_cls = trainer_classes()
    if kind == "mdpo":
        return mdpo_cls(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                        peft_config=lora, callbacks=callbacks, gamma=1.0)
    stock = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]
    return DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(stock), processing_class=tok,
                   peft_config=lora, callbacks=callbacks)


def _load_ref_model(spec: str, bf16: bool):
    model, _tok, _base, adapter = load_model(spec, bf16=bf16, trainable_adapter=False)
    if adapter:
        model = model.merge_and_unload()
    model.eval()
    return model


def build_mdpo_trainer(cfg: MdpoConfig, rows: list[dict[str, Any]] | None = None, *, peft_config=None):
    """Build the :class:`MdpoTrainer` for ``cfg``; returns ``(trainer, info)``. ``peft_config`` overrides the
    LoRA config built from ``cfg`` (tests use a randomly initialised adapter)."""
    from datasets import Dataset
    from trl import DPOConfig

    from learnat_cli.models import resolve_model

    score_label_positions_only()
    with quiet():
        if rows is None:
            rows = load_pairs(cfg.input, cfg.limit, cfg.margin_form)
        rows, eval_rows = split_eval(rows, cfg, lambda p: load_pairs(p, None, cfg.margin_form))
        use_cpu, bf16 = device_settings(cfg)
        args = DPOConfig(**common_args(cfg, use_cpu, bf16, eval_rows is not None), beta=cfg.beta,
                         loss_type=["sigmoid"], precompute_ref_log_probs=cfg.precompute_ref)
        model, tokenizer, base, adapter = load_model(cfg.model, bf16=bf16 and not cfg.full)  # as in SFT
        if cfg.full and adapter:
            raise LearnatError("--full cannot continue an adapter folder; merge it first (sft --merge)",
                               field="model")
        ref_model = _load_ref_model(cfg.ref_model, bf16) if cfg.ref_model else None
        if peft_config is None and not cfg.full and not adapter:
            peft_config = lora_config(cfg, model)
        # the reference: the base with the adapter disabled, the starting adapter frozen, or --ref-model
        base_path = resolve_model(adapter_base(adapter) if adapter else cfg.model)
        ref_store = RefLogpsStore.for_run(cfg, rows, base_path, adapter, bf16)
        if ref_store is not None:
            rows = ref_store.annotate(rows)
        _, MdpoTrainer = trainer_classes()
        trainer = MdpoTrainer(model=model, ref_model=ref_model, args=args, ref_store=ref_store,
                              train_dataset=Dataset.from_list(rows),
                              eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                              processing_class=tokenizer, peft_config=peft_config, gamma=cfg.gamma,
                              margin_form=cfg.margin_form, odpo_alpha=cfg.odpo_alpha,
                              shared_prefix=cfg.shared_prefix == "on" or (
                                  cfg.shared_prefix == "auto" and use_cpu and not cfg.gradient_checkpointing))
        if cfg.compile_layers:
            compile_layers(trainer.model, cpu=use_cpu)
    return trainer, {"base": base, "adapter": adapter, "rows": len(rows)}


def train_mdpo(cfg: MdpoConfig, rows: list[dict[str, Any]] | None = None,
               on_event: EventFn | None = None) -> dict[str, Any]:
    """Run MDPO in this process and return the manifest record."""
    trainer, info = build_mdpo_trainer(cfg, rows)
    extra = {"beta": cfg.beta, "gamma": cfg.gamma, "margin_form": cfg.margin_form,
             "odpo_alpha": cfg.odpo_alpha,
             "ref_model": cfg.ref_model,
             "ref_logps_store": str(trainer.ref_store.path) if trainer.ref_store is not None else None,
             # pairs whose reference log-probs this run reads from the store instead of computing them
             "ref_logps_reused": len(trainer.ref_store.known) if trainer.ref_store is not None else 0}
    return run_trainer(trainer, cfg, stage="mdpo", n_rows=info["rows"], base=info["base"],
                       adapter_in=info["adapter"], on_event=on_event, extra=extra)
