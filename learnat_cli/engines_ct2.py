"""A fast CPU engine for the student: CTranslate2 with int8 weights (issue 14.4), installed from wheels (``pip
install 'learnat[ct2]'``), no compile step.

Inputs: a model spec as :func:`learnat_cli.models.resolve_model` takes it (``None`` = the embedded default, an
embedded name, a local Hugging Face causal-LM folder, or a peft adapter folder whose base is loaded under it)
and an optional LoRA adapter folder (merged into the weights with peft's ``merge_and_unload`` before
conversion).

Outputs: :func:`convert` -> the path of a CTranslate2 model folder (weights quantized to ``int8`` by default,
plus the Hugging Face tokenizer in ``tokenizer/`` and ``learnat_ct2.json``), cached under
``$LEARNAT_CACHE/ct2/`` keyed by the source folder's path and its config/weight files' names, sizes and
mtimes, the adapter's likewise (and the merge format), the quantization and the ctranslate2 version. It is
converted once, into a temporary folder renamed into place (concurrent first runs cannot leave a half-written
folder).
:class:`Ct2Generator` offers the method names and return types of :class:`learnat_cli.models.ChatModel`:
``chat(messages, ...) -> list[str]`` (greedy at temperature 0, else ``n`` seeded samples) and
``chat_batch([messages, ...]) -> list[str]`` (greedy, one ``generate_batch`` call), with ``stop_at_final``
(stop a sequence once its ``Final SQL:`` line is complete) and ``stop`` strings (cut before the first one),
``last_prompt_tokens``/``last_new_tokens``. A missing or unreadable source raises
:class:`~learnat_cli.errors.LearnatError`.

Schema prefixes are prefilled once: the system prompt and the schema (the chat text up to the first user
message's last blank line) go to CTranslate2's static-prompt cache, so every further question on the same
database, and every retry of a question, runs only its own tokens (:meth:`Ct2Generator._split`; the tokens and
the answers are those of the whole prompt; the cache is bounded by ``max_cached`` distinct prefixes per loaded
model).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

from learnat_cli.errors import LearnatError
from learnat_cli.paths import cache_dir, folder_identity

Progress = Optional[Callable[[str, int, int], None]]  # noqa: UP045  (phase, done, total)
QUANTIZATIONS = ("int8", "int8_float32", "int16", "float32", "float16", "bfloat16")
META = "learnat_ct2.json"
_ID_FILES = ("config.json", "adapter_config.json", "generation_config.json")
STATIC_MIN_TOKENS = 64  # shorter shared prefixes are not worth a cache entry
MAX_CACHED_PREFIXES = 32  # distinct schema prefixes kept per loaded model (then it is reloaded)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def available() -> bool:
    """True when ctranslate2 is importable (the ``ct2`` extra)."""
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return False
    return True


def _require_ct2():
    try:
        import ctranslate2
    except ImportError:
        raise LearnatError("--backend ct2 needs CTranslate2: pip install 'learnat[ct2]'") from None
    return ctranslate2


def _identity(folder: Path) -> list:
    """What changes when the folder's model changes: names, sizes, mtimes of its config and weight files."""
    return folder_identity(folder, lambda name: name in _ID_FILES or name.endswith(_WEIGHT_SUFFIXES))


def _resolve_source(spec: str | None, adapter: str | None, progress: Progress) -> tuple[Path, Path | None]:
    from learnat_cli.models import resolve_model

    path = Path(resolve_model(spec, progress)).expanduser()
    if not path.is_dir():
        raise LearnatError("--backend ct2 needs a local model folder (or the embedded model); not found",
                           file=str(path))
    if (path / "adapter_config.json").exists() and not (path / "config.json").exists():
        try:
            base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        except (OSError, ValueError) as e:
            raise LearnatError(f"unreadable adapter_config.json: {e}", file=str(path)) from None
        adapter, path = str(path), Path(resolve_model(base, progress)).expanduser()
        if not path.is_dir():
            raise LearnatError("the adapter's base model is not a local folder", file=str(path))
    if not (path / "config.json").exists():
        raise LearnatError("not a model folder (no config.json)", file=str(path))
    if not any(f.name.endswith(_WEIGHT_SUFFIXES) for f in path.iterdir()):
        raise LearnatError("model folder has no weights (*.safetensors / *.bin)", file=str(path))
    ad = None
    if adapter:
        ad = Path(adapter).expanduser()
        if not (ad / "adapter_config.json").exists():
            raise LearnatError("not a LoRA adapter folder (no adapter_config.json)", file=str(ad))
    return path, ad


def cache_key(source: Path, adapter: Path | None, quantization: str) -> str:
    """The hex key of a conversion (module docstring)."""
    import ctranslate2

    ident = {"source": _identity(source), "adapter": _identity(adapter) if adapter else None,
             "quantization": quantization, "ctranslate2": ctranslate2.__version__}
    if adapter:
        ident["merge"] = 2  # merged conversions before 2 lacked the tokenizer's vocabulary: never reuse them
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _eos_ids(folder: Path, tok) -> list[int]:
    ids: list[int] = []
    for name in ("generation_config.json", "config.json"):
        try:
            v = json.loads((folder / name).read_text()).get("eos_token_id")
        except (OSError, ValueError):
            continue
        for i in (v if isinstance(v, list) else [v]):
            if isinstance(i, int) and i not in ids:
                ids.append(i)
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(int(tok.eos_token_id))
    return ids


def _merge_adapter(source: Path, adapter: Path, into: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.save_pretrained(into, safe_serialization=True)


def _check_vocabulary(target: Path, tok) -> None:
    """The converted model's ``vocabulary.json`` must list the tokenizer's tokens in id order (CTranslate2 is
    fed token strings): a mismatch is a broken conversion, never a silently wrong model."""
    vocab = json.loads((target / "vocabulary.json").read_text(encoding="utf-8"))
    ids = tok.convert_tokens_to_ids(vocab[: min(len(vocab), len(tok))])
    if ids != list(range(len(ids))):
        raise LearnatError("the converted vocabulary does not match the tokenizer", file=str(target))


def convert(spec: str | None = None, adapter: str | None = None, quantization: str = "int8",
            progress: Progress = None) -> Path:
    """The cached CTranslate2 folder for ``spec`` (+ ``adapter``), converted on first use (module doc)."""
    if quantization not in QUANTIZATIONS:
        raise LearnatError(f"unknown quantization {quantization!r} ({', '.join(QUANTIZATIONS)})",
                           field="quantization")
    _require_ct2()
    source, ad = _resolve_source(spec, adapter, progress)
    key = cache_key(source, ad, quantization)
    out = cache_dir("ct2") / f"{source.name}-{quantization}-{key}"
    if (out / "model.bin").exists() and (out / META).exists():
        return out
    from ctranslate2.converters import TransformersConverter
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if progress:
        progress("convert-ct2", 0, 1)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        src = source
        if ad is not None:
            src = work / "merged"
            _merge_adapter(source, ad, src)
        tok_dir = ad if ad is not None and (ad / "tokenizer_config.json").exists() else source
        tok = AutoTokenizer.from_pretrained(tok_dir)
        if src != source:
            # the converter reads the vocabulary from the tokenizer beside the weights: without one it falls
            # back to a default vocabulary, and every token id maps to the wrong string
            tok.save_pretrained(src)
        target = work / "ct2"
        converter = TransformersConverter(str(src), low_cpu_mem_usage=True)
        converter.convert(str(target), quantization=quantization)
        _check_vocabulary(target, tok)
        tok.save_pretrained(target / "tokenizer")  # own folder: ct2's config.json misleads transformers
        meta = {"source": str(source), "adapter": str(ad) if ad else None, "quantization": quantization,
                "eos_token_ids": _eos_ids(source, tok), "key": key}
        (target / META).write_text(json.dumps(meta, indent=1))
        try:
            os.replace(target, out)
        except OSError:  # another process won the race (the folder exists)
            if not (out / "model.bin").exists():
                raise
    except LearnatError:
        raise
    except Exception as e:  # noqa: BLE001  (converter/transformers errors: a corrupt or unsupported source)
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LearnatError(f"cannot convert the model to CTranslate2 ({type(e).__name__}: {msg})",
                           file=str(source)) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if progress:
        progress("convert-ct2", 1, 1)
    return out


class _Stopper:
    """Per batch index: the generated ids; ``stop_at_final`` / ``stop`` strings decide when it ends."""

    def __init__(self, tok, n: int, stop_at_final: bool, stop: Sequence[str]):
        from learnat_cli.models import FinalLineWatch

        self.tok, self.stop_at_final, self.stop = tok, stop_at_final, tuple(s for s in stop if s)
        self.ids: list[list[int]] = [[] for _ in range(n)]
        self.watch = FinalLineWatch(tok)

    def __call__(self, step) -> bool:
        ids = self.ids[step.batch_id]
        ids.append(int(step.token_id))
        if self.stop:
            text = self.tok.decode(ids, skip_special_tokens=True)
            if any(s in text for s in self.stop):
                return True
        return self.stop_at_final and self.watch.done(ids)


class Ct2Generator:
    """A student on CTranslate2 answering chat messages like :class:`learnat_cli.models.ChatModel` (module
    docstring). ``threads``: intra-op threads (default: the number of cores)."""

    backend = "ct2"

    def __init__(self, model: str | None = None, adapter: str | None = None, *, quantization: str = "int8",
                 progress: Progress = None, threads: int | None = None, device: str | None = "cpu",
                 compute_type: str = "default"):
        _require_ct2()  # a clear install hint before anything loads
        from transformers import AutoTokenizer

        self.spec = model
        self.threads = threads or os.cpu_count() or 1
        self.device = "cuda" if device == "cuda" else "cpu"
        self.path = convert(model, adapter, quantization, progress)
        meta = json.loads((self.path / META).read_text())
        tok_dir = self.path / "tokenizer"
        self.tok = AutoTokenizer.from_pretrained(tok_dir if tok_dir.is_dir() else self.path)
        self.eos_ids = [int(i) for i in meta.get("eos_token_ids") or []]
        self.compute_type = compute_type
        self.gen = self._load()
        self.last_prompt_tokens = self.last_new_tokens = 0
        # Batches on CPU: CTranslate2 feeds the prompt tokens past the shortest prompt of a batch one decoding
        # step at a time, so prompts of different lengths batch badly there; instead each prompt runs on its
        # own worker (inter_threads), one core each (docs/BENCHMARKS.md). ask --batch-size auto: 2 per worker.
        self.workers = 1 if self.device == "cuda" else max(1, min(self.threads, 4))
        self._parallel: Any = None
        self.batch_size = 8 if self.device == "cuda" else 2 * self.workers
        # Schema prefixes kept in CTranslate2's static-prompt cache (see _split); bounded by reloading.
        self.static_cache = True
        self.max_cached = MAX_CACHED_PREFIXES
        self._cached: set[tuple[str, ...]] = set()
        self.reloads = 0

    def _load(self):
        """The main generator (all cores for one prompt); also what a cache-bound reload builds."""
        import ctranslate2

        try:
            return ctranslate2.Generator(str(self.path), device=self.device, compute_type=self.compute_type,
                                         intra_threads=self.threads)
        except (RuntimeError, ValueError) as e:
            raise LearnatError(f"cannot load the CTranslate2 model: {str(e).splitlines()[0]}",
                               file=str(self.path)) from None

    def _split(self, messages: list[dict]) -> tuple[list[str] | None, list[str]]:
        """The prompt's tokens as ``(static, rest)``: ``static`` is the chat text up to the last blank line of
        the first user message -- the system prompt and the schema, shared by every question on a database
        and by a question's retries -- when it is at least ``STATIC_MIN_TOKENS`` long, else None. One
        tokenization of the whole text, cut at a token boundary, so ``static + rest`` are exactly the tokens
        of the whole prompt."""
        text = str(self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        toks = [str(t) for t in self.tok.convert_ids_to_tokens(enc["input_ids"])]
        if not self.static_cache:
            return None, toks
        user = next((m.get("content") or "" for m in messages if m.get("role") == "user"), "")
        at = text.find(user) if user else -1
        cut = user.rfind("\n\n")
        if at < 0 or cut < 0:
            return None, toks
        boundary = at + cut + 2
        k = 0
        for _start, end in enc["offset_mapping"]:
            if end > boundary:
                break
            k += 1
        if k < STATIC_MIN_TOKENS:
            return None, toks
        return toks[:k], toks[k:]

    def _admit(self, statics: list[list[str] | None]) -> list[bool]:
        """Which of a call's static prefixes go to CTranslate2's static-prompt cache. The cache lives in the
        loaded model, so its memory (about 25 MB per 1,000-token prefix of the 0.5B) is bounded by reloading
        the model -- before the call's jobs start, never under them -- when the call would pass
        ``max_cached`` distinct prefixes; prefixes past the bound within one call run uncached."""
        if not self.static_cache:
            return [False] * len(statics)
        new = {tuple(st) for st in statics if st is not None} - self._cached
        if new and len(self._cached) + len(new) > self.max_cached:
            self._reload()
        use = []
        for st in statics:
            key = tuple(st) if st is not None else None
            ok = key is not None and (key in self._cached or len(self._cached) < self.max_cached)
            if ok:
                self._cached.add(key)  # type: ignore[arg-type]
            use.append(ok)
        return use

    def _reload(self) -> None:
        self.gen = self._load()
        self._parallel = None
        self._cached.clear()
        self.reloads += 1

    def _generate(self, prompts: list[tuple[list[str] | None, list[str]]], *, max_new_tokens: int,
                  temperature: float, top_p: float, stop_at_final: bool, stop: Sequence[str]) -> list[str]:
        stopper = _Stopper(self.tok, len(prompts), stop_at_final, stop or ())
        kw: dict = dict(max_length=max_new_tokens, include_prompt_in_result=False, beam_size=1)
        if self.eos_ids:
            kw["end_token"] = self.eos_ids
        if temperature > 0:
            kw.update(sampling_topk=0, sampling_topp=top_p, sampling_temperature=temperature)
        else:
            kw.update(sampling_topk=1)
        if stop_at_final or stopper.stop:
            kw["callback"] = stopper
        try:
            if len(prompts) > 1 and self.workers > 1:
                results = self._generate_parallel(prompts, kw, stop_at_final, stop or ())
            elif len({tuple(st or ()) for st, _ in prompts}) == 1 and self._admit([prompts[0][0]])[0]:
                # one static prompt for the whole call
                results = self.gen.generate_batch([r for _, r in prompts], static_prompt=prompts[0][0],
                                                  cache_static_prompt=True, **kw)
            else:
                results = self.gen.generate_batch([(st or []) + r for st, r in prompts], **kw)
        except RuntimeError as e:
            raise LearnatError(f"CTranslate2 generation failed: {str(e).splitlines()[0]}") from None
        texts: list[str] = []
        self.last_prompt_tokens = sum(len(st or ()) + len(r) for st, r in prompts)
        self.last_new_tokens = 0
        self.last_token_counts = [len(r.sequences_ids[0]) for r in results]
        for r in results:
            ids = [i for i in r.sequences_ids[0] if i not in self.eos_ids]
            self.last_new_tokens += len(r.sequences_ids[0])
            text = str(self.tok.decode(ids, skip_special_tokens=True))
            for s in stopper.stop:
                if s in text:
                    text = text[:text.index(s)]
            texts.append(text)
        return texts

    def _generate_parallel(self, prompts: list[tuple[list[str] | None, list[str]]], kw: dict,
                           stop_at_final: bool, stop: Sequence[str]) -> list:
        """One prompt per job on a second generator with ``workers`` parallel workers of one core each
        (loaded on first use); each job has its own stop callback."""
        import ctranslate2

        use = self._admit([st for st, _ in prompts])  # may reload: before any job starts
        if self._parallel is None:
            self._parallel = ctranslate2.Generator(
                str(self.path), device="cpu", compute_type=self.compute_type, inter_threads=self.workers,
                intra_threads=max(1, self.threads // self.workers))
        jobs = []
        for (static, rest), cached in zip(prompts, use, strict=True):
            one = dict(kw)
            if cached:
                one.update(static_prompt=static, cache_static_prompt=True)
            else:
                rest = (static or []) + rest
            if "callback" in kw:
                one["callback"] = _Stopper(self.tok, 1, stop_at_final, stop)
            jobs.append(self._parallel.generate_batch([rest], asynchronous=True, **one)[0])
        return [j.result() for j in jobs]

    def chat(self, messages: list[dict], *, max_new_tokens: int = 256, temperature: float = 0.0,
             top_p: float = 0.95, n: int = 1, seed: int | None = None, stop_at_final: bool = False,
             stop: Sequence[str] | None = None) -> list[str]:
        """``n`` answers to ``messages`` (greedy at temperature 0; sampled, seeded by ``seed``, above it)."""
        if n < 1:
            raise LearnatError("n must be at least 1", field="n")
        if temperature > 0 and seed is not None:
            import ctranslate2

            ctranslate2.set_random_seed(int(seed))
        split = self._split(messages)
        k = n if temperature > 0 else 1
        out = self._generate([split] * k, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                             stop_at_final=stop_at_final, stop=stop or ())
        self.last_prompt_tokens = len(split[0] or ()) + len(split[1])
        return out if k == n else out * n

    def chat_batch(self, batch: list[list[dict]], *, max_new_tokens: int = 256, stop_at_final: bool = False,
                   stop: Sequence[str] | None = None) -> list[str]:
        """Greedy answers to several prompts in one ``generate_batch`` call, in input order."""
        if not batch:
            return []
        prompts = [self._split(m) for m in batch]
        return self._generate(prompts, max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0,
                              stop_at_final=stop_at_final, stop=stop or ())

    def sample(self, messages: list[dict], n: int = 1, *, temperature: float = 0.0, top_p: float = 0.95,
               seed: int | None = None, max_new_tokens: int = 256, stop_at_final: bool = False) -> list:
        """``n`` :class:`~learnat_cli.models.Candidate` with CTranslate2's length-normalised score (the mean
        log-probability of the tokens under the model): the greedy answer at temperature 0 (``n`` = 1), else
        ``n`` hypotheses sampled from one prompt prefill (``num_hypotheses``); sampled answers are cut after
        their ``Final SQL:`` line (a stop callback would end every hypothesis of the prompt)."""
        from learnat_cli.models import Candidate
        from learnat_cli.prompts import cut_after_final

        if n < 1:
            raise LearnatError("n must be at least 1", field="n")
        if temperature <= 0 and n > 1:
            raise LearnatError("several samples need a temperature above 0", field="temperature")
        static, rest = self._split(messages)
        n_prompt = len(static or ()) + len(rest)
        kw: dict = dict(max_length=max_new_tokens, include_prompt_in_result=False, beam_size=1,
                        return_scores=True)
        if self._admit([static])[0]:
            kw.update(static_prompt=static, cache_static_prompt=True)
        else:
            rest = (static or []) + rest
        if self.eos_ids:
            kw["end_token"] = self.eos_ids
        if temperature > 0:
            import ctranslate2

            if seed is not None:
                ctranslate2.set_random_seed(int(seed))
            kw.update(sampling_topk=0, sampling_topp=top_p, sampling_temperature=temperature,
                      num_hypotheses=n)
        else:
            kw["sampling_topk"] = 1
            if stop_at_final:
                kw["callback"] = _Stopper(self.tok, 1, True, ())
        try:
            (res,) = self.gen.generate_batch([rest], **kw)
        except RuntimeError as e:
            raise LearnatError(f"CTranslate2 generation failed: {str(e).splitlines()[0]}") from None
        out = []
        self.last_prompt_tokens, self.last_new_tokens = n_prompt, 0
        self.last_token_counts = [len(ids) for ids in res.sequences_ids]
        for ids, score in zip(res.sequences_ids, res.scores, strict=True):
            self.last_new_tokens += len(ids)
            text = str(self.tok.decode([i for i in ids if i not in self.eos_ids], skip_special_tokens=True))
            out.append(Candidate(cut_after_final(text) if stop_at_final else text, float(score)))
        return out
