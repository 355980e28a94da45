"""Issue 15 part 4: the shipped trained student (learnat_cli/shipped.py): packaging with checksums, a
model card and the training schema format; ask's default adapter, ``--adapter none``, ``--schema-format
auto``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from learnat_cli import shipped
from learnat_cli.errors import LearnatError
from learnat_commands.main import app

runner = CliRunner()


@pytest.fixture()
def adapter_dir(tiny_model_dir, tmp_path) -> Path:
    """A real (random) LoRA adapter over the tiny model, as learnat sft writes one."""
    from peft import LoraConfig, get_peft_model

    from learnat_cli.models import load_causal_lm

    model, _ = load_causal_lm(str(tiny_model_dir))
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def _ship(adapter_dir: Path, into: Path, fmt: str = "compact") -> dict:
    return shipped.ship(adapter_dir, into, {"schema_format": fmt, "base": "qwen2.5-coder-0.5b"},
                        "# card\nSpider: CC BY-SA 4.0\n")


def test_ship_then_resolve_the_default_student(adapter_dir, tmp_path):
    into = tmp_path / "student"
    out = _ship(adapter_dir, into)
    assert set(out["files"]) == {"adapter_config.json", "adapter_model.safetensors", "learnat.json",
                                 "MODEL_CARD.md", "SHA256SUMS"}
    assert len((into / "SHA256SUMS").read_text().splitlines()) == 4
    assert shipped.shipped_adapter(into) == into
    # the default model with no --adapter gets it; none/base, another model or a served one does not
    assert shipped.resolve_adapter(None, None, folder=into) == str(into)
    assert shipped.resolve_adapter("default", None, folder=into) == str(into)
    assert shipped.resolve_adapter(None, "none", folder=into) is None
    assert shipped.resolve_adapter(None, "BASE", folder=into) is None
    assert shipped.resolve_adapter("some/other-model", None, folder=into) is None
    assert shipped.resolve_adapter(None, None, backend="openai", folder=into) is None
    assert shipped.resolve_adapter(None, str(adapter_dir), folder=into) == str(adapter_dir)
    assert shipped.adapter_schema_format(into) == "compact"
    assert shipped.adapter_schema_format(adapter_dir) is None  # a plain sft output says nothing
    # the repository's folder ships no weights yet: the plain base
    assert shipped.shipped_adapter() is None and shipped.resolve_adapter(None, None) is None


def test_a_changed_or_missing_file_is_a_one_line_error(adapter_dir, tmp_path):
    into = tmp_path / "student"
    _ship(adapter_dir, into)
    weights = into / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit changed
    with pytest.raises(LearnatError, match="does not match its checksum") as e:
        shipped.shipped_adapter(into)
    assert e.value.file == str(weights)
    _ship(adapter_dir, into)
    (into / "MODEL_CARD.md").unlink()
    with pytest.raises(LearnatError, match="MODEL_CARD.md is missing"):
        shipped.shipped_adapter(into)


def test_ship_refuses_what_it_must_not_ship(adapter_dir, tmp_path, monkeypatch):
    with pytest.raises(LearnatError, match="not a LoRA adapter"):
        _ship(tmp_path, tmp_path / "x")
    with pytest.raises(LearnatError, match="schema_format"):
        shipped.ship(adapter_dir, tmp_path / "x", {}, "card")
    monkeypatch.setattr(shipped, "MAX_BYTES", 10)
    with pytest.raises(LearnatError, match="at most 20 MB"):
        _ship(adapter_dir, tmp_path / "x")


def test_ask_asks_an_adapter_in_its_training_schema_format(adapter_dir, tiny_model_dir, sample_db, tmp_path,
                                                          monkeypatch):
    """--schema-format auto (the default) renders the schema the way the adapter was trained; sql for an
    adapter that does not say, and an explicit format wins."""
    from learnat_cli.stages import ask as stage

    seen = []
    real = stage.render_schema
    monkeypatch.setattr(stage, "render_schema", lambda *a, **k: seen.append(k["fmt"]) or real(*a, **k))
    into = tmp_path / "student"
    _ship(adapter_dir, into)
    base = ["ask", "--db", str(sample_db), "--model", str(tiny_model_dir), "--max-new-tokens", "4",
            "--retries", "0", "--decompose", "never", "How many books are there?"]
    for adapter, fmt, want in ((str(into), [], "compact"), (str(adapter_dir), [], "sql"),
                               (str(into), ["--schema-format", "sql"], "sql"), ("none", [], "sql")):
        seen.clear()
        res = runner.invoke(app, [*base, "--adapter", adapter, *fmt])
        rec = json.loads([ln for ln in res.stdout.splitlines() if ln.startswith("{")][0])
        assert rec["question"] == "How many books are there?", res.output
        assert seen and set(seen) == {want}, (adapter, fmt, seen)


def test_ask_without_decompose_uses_the_shipped_mode(adapter_dir, tiny_model_dir, sample_db, tmp_path):
    """An adapter shipped for direct SQL (its winning configuration) is asked that way unless --decompose says
    otherwise; an adapter that records no mode gets ``auto``."""
    into = tmp_path / "student"
    shipped.ship(adapter_dir, into, {"schema_format": "sql", "decompose": "never"}, "# card\n")
    assert shipped.adapter_decompose(into) == "never" and shipped.adapter_decompose(adapter_dir) is None
    # a question the fast path would decompose (several cues), so auto and never differ
    q = "For each author with more than 2 books, list the name and the average price of their books"
    base = ["ask", "--db", str(sample_db), "--model", str(tiny_model_dir), "--max-new-tokens", "4",
            "--retries", "0", q]
    for adapter, flag, want in ((str(into), [], False), (str(into), ["--decompose", "always"], True),
                                (str(adapter_dir), [], True)):
        res = runner.invoke(app, [*base, "--adapter", adapter, *flag])
        rec = json.loads([ln for ln in res.stdout.splitlines() if ln.startswith("{")][0])
        assert rec["decomposed"] is want, (adapter, flag, res.output)


def test_default_decompose_mode(adapter_dir, tmp_path):
    """Without --decompose: an adapter's shipped mode (else auto); the embedded 0.5B without an adapter
    answers directly (decomposition measurably costs the untrained 0.5B accuracy); any other model: auto."""
    assert shipped.default_decompose(None, None) == "never"
    assert shipped.default_decompose("qwen2.5-coder-0.5b-instruct", None) == "never"
    assert shipped.default_decompose("qwen2.5-coder-1.5b", None) == "auto"
    assert shipped.default_decompose("some/other-model", None) == "auto"
    assert shipped.default_decompose(None, str(adapter_dir)) == "auto"  # a plain sft output
    into = tmp_path / "student"
    shipped.ship(adapter_dir, into, {"schema_format": "sql", "decompose": "always"}, "# card\n")
    assert shipped.default_decompose(None, str(into)) == "always"
