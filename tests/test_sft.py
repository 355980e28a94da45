"""`learnat sft` / learnat_cli.training.runner: row reading, loss on assistant turns only (with and without the chat
template's generation markers), the CLI's outputs (adapter, merged model, config, metrics, one manifest record),
checkpoints + --resume, bad input, and the loss going down on a small repeated batch."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from learnat_commands.main import app
from learnat_cli.errors import LearnatError
from learnat_cli.training.runner import (
    SftConfig,
    build_sft_trainer,
    load_sft_rows,
    to_prompt_completion,
    train_sft,
)

torch = pytest.importorskip("torch")

SYSTEM = "You are an expert SQLite assistant. Decompose the user's question into sub-questions."
ROWS = [
    {"id": f"q{i}", "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Question: How many singers are older than {30 + i}?"},
        {"role": "assistant", "content": f"Step 1: Which singers are older than {30 + i}?\n"
                                         f"SQL: SELECT name FROM singer WHERE age > {30 + i}\n"
                                         f"Final SQL: SELECT COUNT(*) FROM singer WHERE age > {30 + i}\n"}]}
    for i in range(3)
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _manifest(result) -> dict:
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


# ---------------------------------------------------------------------------------------------------------------
# Reading rows


def test_load_rows_messages_and_prompt_completion(tmp_path):
    rows = load_sft_rows(str(write_jsonl(tmp_path / "a.jsonl", ROWS)))
    assert len(rows) == 3 and rows[0]["messages"][2]["role"] == "assistant"
    pc = load_sft_rows(str(write_jsonl(tmp_path / "b.jsonl", [{"prompt": "Q: x\n", "completion": "SELECT 1"}])))
    assert pc == [{"prompt": "Q: x\n", "completion": "SELECT 1"}]
    assert len(load_sft_rows(str(tmp_path / "a.jsonl"), limit=2)) == 2


@pytest.mark.parametrize("bad, field", [
    ({"messages": [{"role": "user", "content": "q"}]}, "messages"),  # nothing to learn
    ({"messages": [{"role": "user"}]}, "messages.0.content"),
    ({"prompt": "q"}, "completion"),
    ({"text": "q"}, "messages"),
    ({"prompt": "q", "completion": "a"}, None),  # mixed formats in one file
])
def test_load_rows_errors(tmp_path, bad, field):
    p = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], bad])
    with pytest.raises(LearnatError) as ei:
        load_sft_rows(str(p))
    assert ei.value.line == 2 and ei.value.field == field and ei.value.file == str(p)


def test_prompt_completion_split_at_last_assistant_turn():
    msgs = ROWS[0]["messages"] + [{"role": "user", "content": "again"}, {"role": "assistant", "content": "A2"}]
    pc = to_prompt_completion(msgs)
    assert pc["completion"] == [{"role": "assistant", "content": "A2"}] and len(pc["prompt"]) == 4
    assert pc["prompt"][-1] == {"role": "user", "content": "again"}


# ---------------------------------------------------------------------------------------------------------------
# Loss masking, on the real tokenisation of a real (tiny) model


def _no_marker_model(tiny_model_dir, tmp_path) -> Path:
    """A copy of the tiny model whose chat template has no {% generation %} markers (like the real Qwen's)."""
    from transformers import AutoTokenizer

    dst = tmp_path / "nomarkers"
    shutil.copytree(tiny_model_dir, dst)
    tok = AutoTokenizer.from_pretrained(dst)
    tok.chat_template = tok.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    tok.save_pretrained(dst)
    return dst


@pytest.mark.parametrize("markers", [True, False])
def test_loss_only_on_assistant_turns(tiny_model_dir, tmp_path, markers):
    model_dir = tiny_model_dir if markers else _no_marker_model(tiny_model_dir, tmp_path)
    cfg = SftConfig(input=str(write_jsonl(tmp_path / "s.jsonl", ROWS)), output_dir=str(tmp_path / "o"),
                    model=str(model_dir), batch_size=len(ROWS), grad_accum=1, max_steps=1, cpu=True)
    trainer, info = build_sft_trainer(cfg)
    assert info["loss_mode"] == ("assistant_only" if markers else "completion_only")
    batch = next(iter(trainer.get_train_dataloader()))
    tok = trainer.processing_class
    trained = set()
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        kept = ids[labels != -100].tolist()
        assert kept, "no trained tokens"
        trained.add(tok.decode(kept))
        # Everything before the assistant turn is masked.
        first = int((labels != -100).nonzero()[0])
        assert "<|im_start|>assistant" in tok.decode(ids[:first].tolist())
    want = {r["messages"][2]["content"] + "<|im_end|>" for r in ROWS}
    assert {t.rstrip("\n") for t in trained} == want


# ---------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_sft_writes_adapter_merged_config_metrics_manifest(tiny_model_dir, tmp_path):
    inp = write_jsonl(tmp_path / "sft.jsonl", ROWS)
    out = tmp_path / "adapter"
    res = CliRunner().invoke(app, ["sft", str(inp), "--model", str(tiny_model_dir), "-o", str(out), "--max-steps",
                                   "2", "--grad-accum", "1", "--batch-size", "2", "--lora-r", "4", "--lora-alpha", "8",
                                   "--target-modules", "q_proj,v_proj", "--merge"])
    assert res.exit_code == 0, res.output
    man = _manifest(res)
    assert man["stage"] == "sft" and man["steps"] == 2 and man["examples"] == 3 and man["lora"] is True
    assert man["adapter_dir"] == str(out) and math.isfinite(man["final_loss"])
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 4 and set(adapter_cfg["target_modules"]) == {"q_proj", "v_proj"}
    conf = json.loads((out / "training_config.json").read_text())
    assert conf["lora_r"] == 4 and conf["loss_mode"] == "assistant_only" and "trl" in conf["versions"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["final_loss"] == man["final_loss"] and len(metrics["log_history"]) >= 2
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(man["merged_dir"])
    ids = torch.tensor([[1, 2, 3]])
    assert merged(input_ids=ids).logits.shape[-1] == merged.config.vocab_size


def test_cli_sft_checkpoints_and_resume(tiny_model_dir, tmp_path):
    inp = write_jsonl(tmp_path / "sft.jsonl", ROWS)
    out = tmp_path / "ck"
    common = ["sft", str(inp), "--model", str(tiny_model_dir), "-o", str(out), "--grad-accum", "1",
              "--save-steps", "1", "--epochs", "1"]
    res = CliRunner().invoke(app, common + ["--max-steps", "2"])
    assert res.exit_code == 0, res.output
    assert (out / "checkpoint-1").is_dir() and (out / "checkpoint-2").is_dir()
    res = CliRunner().invoke(app, common + ["--max-steps", "3", "--resume"])
    assert res.exit_code == 0, res.output
    man = _manifest(res)
    assert man["resumed_from"] == str(out / "checkpoint-2") and man["steps"] == 3
    metrics = json.loads((out / "metrics.json").read_text())
    # The resumed run continues the step count instead of starting over.
    assert [e["step"] for e in metrics["log_history"] if "loss" in e][-1] == 3


def test_cli_sft_full_finetune_from_stdin(tiny_model_dir, tmp_path):
    out = tmp_path / "full"
    stdin = "".join(json.dumps(r) + "\n" for r in ROWS)
    res = CliRunner().invoke(app, ["sft", "--model", str(tiny_model_dir), "-o", str(out), "--full",
                                   "--max-steps", "1", "--grad-accum", "1"], input=stdin)
    assert res.exit_code == 0, res.output
    man = _manifest(res)
    assert man["lora"] is False and man["model_dir"] == str(out)
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()


@pytest.mark.parametrize("content, needle", [
    ('{"messages": [{"role": "user", "content": "q"}]}\n', ":1: field 'messages': no assistant message"),
    ('{oops\n', ":1: invalid JSON"),
])
def test_cli_sft_bad_input_exits_2(tiny_model_dir, tmp_path, content, needle):
    inp = tmp_path / "bad.jsonl"
    inp.write_text(content)
    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["sft", str(inp), "--model", str(tiny_model_dir), "-o", str(out)])
    assert res.exit_code == 2, res.output
    assert needle in res.stderr and res.stdout == ""
    assert not (out / "manifest.json").exists()


def test_cli_sft_missing_input_and_model(tiny_model_dir, tmp_path):
    res = CliRunner().invoke(app, ["sft", str(tmp_path / "nope.jsonl"), "--model", str(tiny_model_dir)])
    assert res.exit_code == 2 and "no such file" in res.stderr
    inp = write_jsonl(tmp_path / "s.jsonl", ROWS)
    res = CliRunner().invoke(app, ["sft", str(inp), "--model", str(tmp_path / "no-model"), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "model" in res.stderr


def test_sft_loss_goes_down_on_repeated_batch(tiny_model_dir, tmp_path):
    man = train_sft(SftConfig(input=str(write_jsonl(tmp_path / "s.jsonl", ROWS)), output_dir=str(tmp_path / "o"),
                              model=str(tiny_model_dir), batch_size=3, grad_accum=1, max_steps=8,
                              learning_rate=1e-2, lora_r=8, cpu=True))
    assert man["steps"] == 8
    assert man["final_loss"] < man["first_loss"] - 0.2, man


@pytest.mark.slow
def test_real_student_template_masks_prompt(tmp_path):
    """The embedded Qwen2.5 student's template has no generation markers: rows become prompt/completion and only
    the assistant answer (plus its end-of-turn) is trained."""
    from learnat_cli.training.runner import resolve_model_path

    try:
        path = resolve_model_path(None)
    except LearnatError as e:
        pytest.skip(str(e))
    cfg = SftConfig(input=str(write_jsonl(tmp_path / "s.jsonl", ROWS)), output_dir=str(tmp_path / "o"), model=path,
                    batch_size=len(ROWS), grad_accum=1, max_steps=1, cpu=True)
    trainer, info = build_sft_trainer(cfg)
    assert info["loss_mode"] == "completion_only"
    batch = next(iter(trainer.get_train_dataloader()))
    tok = trainer.processing_class
    got = {tok.decode(ids[labels != -100].tolist()).strip() for ids, labels in zip(batch["input_ids"], batch["labels"])}
    assert got == {(r["messages"][2]["content"] + "<|im_end|>").strip() for r in ROWS} or \
        got == {r["messages"][2]["content"].strip() + "<|im_end|>" for r in ROWS}
