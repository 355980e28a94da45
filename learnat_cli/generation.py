"""Chat generation with a student model (transformers by default, llama.cpp optionally).

``ChatGenerator(model, adapter, backend)`` loads once and answers ``chat(messages, ...)`` with greedy decoding by
default (KV cache, ``torch.inference_mode``). ``backend="llamacpp"`` runs the embedded GGUF (or a ``.gguf`` path)
through ``llama-cpp-python`` (the ``llamacpp`` extra).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from learnat_cli.errors import LearnatError
from learnat_cli.models import Progress

BACKENDS = ("transformers", "llamacpp")


class ChatGenerator:
    def __init__(self, model: Optional[str] = None, adapter: Optional[str] = None, backend: str = "transformers",
                 progress: Progress = None, threads: Optional[int] = None):
        if backend not in BACKENDS:
            raise LearnatError(f"unknown backend {backend!r} (transformers or llamacpp)", field="backend")
        self.backend = backend
        self.spec = model
        self.threads = threads or os.cpu_count() or 1
        if backend == "llamacpp":
            self._init_llamacpp(model, adapter, progress)
        else:
            import torch

            from learnat_cli.models import load_causal_lm

            torch.set_num_threads(self.threads)
            self.model, self.tok = load_causal_lm(model, adapter, progress)

    def _init_llamacpp(self, model, adapter, progress):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise LearnatError("--backend llamacpp needs llama-cpp-python: pip install 'learnat[llamacpp]'") from None
        from learnat_cli.models import ALIASES, EMBEDDED, gguf_path

        if adapter and not str(adapter).endswith(".gguf"):
            raise LearnatError("--backend llamacpp takes a LoRA adapter only as a .gguf file (convert the peft folder "
                               "with llama.cpp's convert_lora_to_gguf.py, or use --backend transformers)",
                               field="adapter")
        key = ALIASES.get(model, model)
        if key in EMBEDDED:
            path = gguf_path(key, progress)
        elif model and str(model).endswith(".gguf") and Path(model).exists():
            path = Path(model)
        else:
            raise LearnatError("--backend llamacpp takes the embedded model or a .gguf file", field="model")
        self.llm = Llama(model_path=str(path), n_ctx=8192, n_threads=self.threads, verbose=False,
                         lora_path=adapter)

    def chat(self, messages: list[dict], *, max_new_tokens: int = 256, temperature: float = 0.0, n: int = 1,
             seed: Optional[int] = None) -> list[str]:
        if self.backend == "llamacpp":
            outs = []
            for i in range(n):
                r = self.llm.create_chat_completion(messages=messages, max_tokens=max_new_tokens,
                                                    temperature=temperature, seed=(seed or 0) + i)
                outs.append(r["choices"][0]["message"]["content"] or "")
            return outs
        import torch

        enc = self.tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
        kw = dict(max_new_tokens=max_new_tokens, num_return_sequences=n, use_cache=True,
                  pad_token_id=self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id)
        if temperature > 0:
            if seed is not None:
                torch.manual_seed(seed)
            kw.update(do_sample=True, temperature=temperature, top_p=0.95)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kw)
        n_in = enc["input_ids"].shape[1]
        self.last_new_tokens = int(out.shape[1] - n_in)
        return [self.tok.decode(row[n_in:], skip_special_tokens=True) for row in out]
