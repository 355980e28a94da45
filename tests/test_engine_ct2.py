"""The CTranslate2 engine (learnat_cli.engines_ct2) on the tiny random Qwen2 model: conversion cached, greedy
generation deterministic, batches equal to one-at-a-time, bad sources refused with a LearnatError."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("ctranslate2")
pytest.importorskip("transformers")

from learnat_cli.errors import LearnatError  # noqa: E402

MSGS = [{"role": "system", "content": "You are an expert SQLite assistant."},
        {"role": "user", "content": "How many singers are older than thirty?"}]
MSGS2 = [{"role": "user", "content": "List the names."}]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEARNAT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_convert_generate_cached(tiny_model_dir, cache, monkeypatch):
    from learnat_cli import engines_ct2

    g = engines_ct2.Ct2Generator(str(tiny_model_dir), threads=1)
    assert g.path.parent == cache / "ct2" and (g.path / "model.bin").exists()
    a = g.chat(MSGS, max_new_tokens=8)
    assert isinstance(a, list) and len(a) == 1 and isinstance(a[0], str)
    assert g.chat(MSGS, max_new_tokens=8) == a  # greedy is deterministic
    assert 0 < g.last_new_tokens <= 8 and g.last_prompt_tokens > 0
    b = g.chat_batch([MSGS, MSGS2], max_new_tokens=8)
    assert b == [a[0], g.chat(MSGS2, max_new_tokens=8)[0]]
    assert g.chat_batch([]) == []
    assert len(g.chat(MSGS, max_new_tokens=4, temperature=0.8, n=3, seed=1)) == 3

    # second load: the cached folder, no conversion
    def boom(*a, **k):
        raise AssertionError("reconverted")

    monkeypatch.setattr("ctranslate2.converters.TransformersConverter.convert", boom)
    assert engines_ct2.convert(str(tiny_model_dir)) == g.path
    assert engines_ct2.Ct2Generator(str(tiny_model_dir), threads=1).chat(MSGS, max_new_tokens=8) == a
    assert len(list((cache / "ct2").iterdir())) == 1  # no temporary folder left behind


def test_changed_weights_reconvert(tiny_model_dir, cache, tmp_path):
    from learnat_cli.engines_ct2 import convert

    src = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, src)
    first = convert(str(src))
    w = next(src.glob("*.safetensors"))
    w.write_bytes(w.read_bytes())  # new mtime
    assert convert(str(src)) != first


def test_missing_or_corrupt_source(tiny_model_dir, cache, tmp_path):
    from learnat_cli.engines_ct2 import convert

    with pytest.raises(LearnatError, match="config.json"):
        convert(str(tmp_path))  # an existing folder that is no model
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    next(bad.glob("*.safetensors")).write_bytes(b"not a safetensors file")
    with pytest.raises(LearnatError, match="cannot convert the model to CTranslate2"):
        convert(str(bad))
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    (nothing / "config.json").write_text("{")
    with pytest.raises(LearnatError, match="no weights"):
        convert(str(nothing))
    with pytest.raises(LearnatError, match="quantization"):
        convert(str(tiny_model_dir), quantization="int3")
    assert not any(p.name.startswith(".") for p in (cache / "ct2").iterdir())


def test_lora_adapter_merged(tiny_model_dir, cache, tmp_path):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from learnat_cli.engines_ct2 import Ct2Generator, convert

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    plain = convert(str(tiny_model_dir))
    merged = Ct2Generator(str(tiny_model_dir), str(tmp_path / "adapter"), threads=1)
    assert merged.path != plain and (merged.path / "model.bin").exists()
    assert merged.chat(MSGS, max_new_tokens=4) == merged.chat(MSGS, max_new_tokens=4)
    # the merged model speaks the tokenizer's vocabulary (a merged folder without a tokenizer once made the
    # converter fall back to a default vocabulary: every id decoded to the wrong token) and, unquantized,
    # answers like the adapter on its base through transformers + peft
    from learnat_cli.models import ChatModel

    vocab = json.loads((merged.path / "vocabulary.json").read_text())
    assert vocab[: len(merged.tok)] == merged.tok.convert_ids_to_tokens(list(range(len(merged.tok))))
    exact = Ct2Generator(str(tiny_model_dir), str(tmp_path / "adapter"), quantization="float32", threads=1)
    ref = ChatModel(str(tiny_model_dir), str(tmp_path / "adapter"), "transformers", device="cpu")
    assert exact.chat(MSGS, max_new_tokens=12) == ref.chat(MSGS, max_new_tokens=12)
    with pytest.raises(LearnatError, match="adapter_config.json"):
        convert(str(tiny_model_dir), str(tmp_path))


def test_parallel_batch_equals_one_at_a_time(tiny_model_dir, cache):
    """On CPU a batch runs one prompt per worker (inter_threads) with its own stop callback: the same text as
    one at a time, in input order."""
    from learnat_cli.engines_ct2 import Ct2Generator

    g = Ct2Generator(str(tiny_model_dir), threads=2)
    assert g.workers == 2 and g.batch_size == 4
    prompts = [MSGS, MSGS2, MSGS, [{"role": "user", "content": "Count the books."}]]
    one = [g.chat(m, max_new_tokens=12, stop_at_final=True)[0] for m in prompts]
    assert g.chat_batch(prompts, max_new_tokens=12, stop_at_final=True) == one
    assert g.last_token_counts and len(g.last_token_counts) == 4


def _schema_msgs(db: str, question: str) -> list[dict]:
    tables = "\n\n".join(f"CREATE TABLE {db}_{i} (id NUMBER PRIMARY KEY, name TEXT, value NUMBER);"
                         for i in range(6))
    return [{"role": "system", "content": "You are an expert SQLite assistant."},
            {"role": "user", "content": f"Database schema:\n{tables}\n\nQuestion: {question}"}]


def test_schema_prefix_cached_same_answers_and_bounded(tiny_model_dir, cache):
    """The system prompt + schema (up to the first user message's last blank line) goes to CTranslate2's
    static-prompt cache, so questions on one database and a question's retries prefill only their own
    tokens; the tokens are exactly the whole prompt's, the answers the same as without the cache (greedy,
    sampled, batched on workers), and the cache is bounded by reloading the model."""
    from learnat_cli.engines_ct2 import Ct2Generator

    g = Ct2Generator(str(tiny_model_dir), threads=2)
    plain = Ct2Generator(str(tiny_model_dir), threads=2)
    plain.static_cache = False
    asks = [_schema_msgs(db, q) for db in ("shop", "zoo") for q in ("How many?", "List the names.")]
    static, rest = g._split(asks[0])
    assert static is not None and len(static) >= 64 and rest
    assert static + rest == plain._split(asks[0])[1]  # one tokenization, cut at a token boundary
    assert g._split(MSGS)[0] is None  # no blank line in the question: nothing to share
    # a retry (answer + error appended) shares the same prefix
    retry = asks[0] + [{"role": "assistant", "content": "Final SQL: SELECT"},
                       {"role": "user", "content": "That SQL failed: near SELECT.\n\nTry again."}]
    assert g._split(retry)[0] == static
    for m in [*asks, retry, *asks]:
        assert g.chat(m, max_new_tokens=10) == plain.chat(m, max_new_tokens=10)
    assert g._cached == {tuple(g._split(a)[0]) for a in asks} and g.reloads == 0
    assert g.chat_batch(asks, max_new_tokens=10) == plain.chat_batch(asks, max_new_tokens=10)
    got = g.sample(asks[1], 3, temperature=0.8, seed=3, max_new_tokens=8)
    want = plain.sample(asks[1], 3, temperature=0.8, seed=3, max_new_tokens=8)
    assert [c.text for c in got] == [c.text for c in want]
    assert [round(c.logprob, 4) for c in got] == [round(c.logprob, 4) for c in want]
    small = Ct2Generator(str(tiny_model_dir), threads=2)
    small.max_cached = 1  # a new prefix past the bound reloads the model first
    for m in [*asks, *asks]:
        assert small.chat(m, max_new_tokens=10) == plain.chat(m, max_new_tokens=10)
    assert small.reloads == 3 and len(small._cached) == 1  # shop, zoo, shop, zoo: three switches
    assert small.chat_batch(asks, max_new_tokens=10) == plain.chat_batch(asks, max_new_tokens=10)
