"""`learnat sft` / learnat_cli.training.runner: row reading, loss on assistant turns only (with and without
the chat template's generation markers), the CLI's outputs (adapter, merged model, config, metrics, one
manifest record), checkpoints + --resume, bad input, and the loss going down on a small repeated batch."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from learnat_cli.errors import LearnatError
from learnat_cli.training.runner import (
    SftConfig,
    build_sft_trainer,
    load_sft_rows,
    to_prompt_completion,
    train_sft,
)
from learnat_commands.main import app

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


# ------------------------------------------------------------------------------------------------------------
# Reading rows


def test_load_rows_messages_and_prompt_completion(tmp_path):
    rows = load_sft_rows(str(write_jsonl(tmp_path / "a.jsonl", ROWS)))
    assert len(rows) == 3 and rows[0]["messages"][2]["role"] == "assistant"
    pc = load_sft_rows(str(write_jsonl(tmp_path / "b.jsonl", [{"prompt": "Q: x\n",
                                                               "completion": "SELECT 1"}])))
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
    msgs = ROWS[0]["messages"] + [{"role": "user", "content": "again"}, {"role": "assistant",
                                                                         "content": "A2"}]
    pc = to_prompt_completion(msgs)
    assert pc["completion"] == [{"role": "assistant", "content": "A2"}] and len(pc["prompt"]) == 4
    assert pc["prompt"][-1] == {"role": "user", "content": "again"}


# ------------------------------------------------------------------------------------------------------------
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
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=False):
        kept = ids[labels != -100].tolist()
        assert kept, "no trained tokens"
        trained.add(tok.decode(kept))
        # Everything before the assistant turn is masked.
        first = int((labels != -100).nonzero()[0])
        assert "<|im_start|>assistant" in tok.decode(ids[:first].tolist())
    want = {r["messages"][2]["content"] + "<|im_end|>" for r in ROWS}
    assert {t.rstrip("\n") for t in trained} == want


# ------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_sft_writes_adapter_merged_config_metrics_manifest(tiny_model_dir, tmp_path):
    inp = write_jsonl(tmp_path / "sft.jsonl", ROWS)
    out = tmp_path / "adapter"
    res = CliRunner().invoke(app, ["sft", str(inp), "--model", str(tiny_model_dir), "-o", str(out),
                                   "--max-steps",
                                   "2", "--grad-accum", "1", "--batch-size", "2", "--lora-r", "4",
                                   "--lora-alpha", "8",
                                   "--target-modules", "q_proj,v_proj", "--merge"])
    assert res.exit_code == 0, res.output
    man = _manifest(res)
    assert man["stage"] == "sft" and man["steps"] == 2 and man["examples"] == 3 and man["lora"] is True
    assert man["adapter_dir"] == str(out) and math.isfinite(man["final_loss"])
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 4 and set(adapter_cfg["target_modules"]) == {"q_proj", "v_proj"}
    conf = json.loads((out / "training_config.json").read_text())
    assert conf["lora_r"] == 4 and conf["target_modules"] == ["q_proj", "v_proj"] and conf["merge"] is True
    assert man["loss_mode"] == "assistant_only" and "trl" in man["versions"]
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
    res = CliRunner().invoke(app, ["sft", str(inp), "--model", str(tmp_path / "no-model"), "-o",
                                   str(tmp_path / "o")])
    assert res.exit_code == 2 and "model" in res.stderr


def test_sft_loss_goes_down_on_repeated_batch(tiny_model_dir, tmp_path):
    man = train_sft(SftConfig(input=str(write_jsonl(tmp_path / "s.jsonl", ROWS)),
                              output_dir=str(tmp_path / "o"),
                              model=str(tiny_model_dir), batch_size=3, grad_accum=1, max_steps=8,
                              learning_rate=1e-2, lora_r=8, cpu=True))
    assert man["steps"] == 8
    assert man["final_loss"] < man["first_loss"] - 0.2, man


@pytest.mark.slow
def test_real_student_template_masks_prompt(tmp_path):
    """The embedded Qwen2.5 student's template has no generation markers: rows become prompt/completion and
    only the assistant answer (plus its end-of-turn) is trained."""
    from learnat_cli.models import resolve_model

    try:
        path = resolve_model(None)
    except LearnatError as e:
        pytest.skip(str(e))
    cfg = SftConfig(input=str(write_jsonl(tmp_path / "s.jsonl", ROWS)), output_dir=str(tmp_path / "o"),
                    model=path,
                    batch_size=len(ROWS), grad_accum=1, max_steps=1, cpu=True)
    trainer, info = build_sft_trainer(cfg)
    assert info["loss_mode"] == "completion_only"
    batch = next(iter(trainer.get_train_dataloader()))
    tok = trainer.processing_class
    got = {tok.decode(ids[labels != -100].tolist()).strip() for ids, labels in zip(batch["input_ids"],
                                                                                   batch["labels"], strict=False)}  # noqa: E501
    assert got == {(r["messages"][2]["content"] + "<|im_end|>").strip() for r in ROWS} or \
        got == {r["messages"][2]["content"].strip() + "<|im_end|>" for r in ROWS}


# ------------------------------------------------------------------------------------------------------------
# Training as TRL users expect (issue 13): --config, progress, checkpoints, eval split, portable adapters


def _sft(args, **kw):
    return CliRunner().invoke(app, ["sft", *map(str, args)], **kw)


def test_cli_config_file_yaml_flags_override_and_resolved_config_saved(tiny_model_dir, tmp_path):
    inp = write_jsonl(tmp_path / "s.jsonl", ROWS)
    conf = tmp_path / "train.yaml"
    conf.write_text(f"input: {inp}\nmodel: {tiny_model_dir}\nlora_r: 4\nlora-alpha: 8\nlr: 2e-3\n"
                    f"max_steps: 2\ngrad_accum: 1\ntarget_modules: [q_proj, v_proj]\n")
    out = tmp_path / "o"
    res = _sft(["--config", conf, "-o", out, "--lora-r", "2"])  # the flag beats the file
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "training_config.json").read_text())
    assert saved["lora_r"] == 2 and saved["lora_alpha"] == 8 and saved["learning_rate"] == 2e-3
    assert saved["max_steps"] == 2 and saved["input"] == str(inp) and saved["output_dir"] == str(out)
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 2
    # The saved config is itself a --config file: the same run again, a flag still overriding it.
    res = _sft(["--config", out / "training_config.json", "-o", tmp_path / "again", "--max-steps", "1"])
    assert res.exit_code == 0, res.output
    assert _manifest(res)["steps"] == 1
    assert json.loads((tmp_path / "again" / "training_config.json").read_text())["lora_r"] == 2


@pytest.mark.parametrize("text, suffix, needle", [
    ("lora_r: 4\nlearning_rat: 0.1\n", ".yaml", "field 'learning_rat': unknown option"),
    ('{"lora_r": "four"}', ".json", "field 'lora_r': expected int"),
    ('{"margin_form": "odpo"}', ".json", "field 'margin_form': unknown option"),  # an mdpo-only key
    ("[1, 2]", ".yaml", "expected a mapping"),
    ("warmup_ratio: 1.5\n", ".yml", "field 'warmup_ratio': expected a fraction"),
])
def test_cli_config_file_errors_name_file_and_key(tmp_path, text, suffix, needle):
    conf = tmp_path / f"c{suffix}"
    conf.write_text(text)
    res = _sft(["--config", conf, "-o", tmp_path / "o"], input="")
    assert res.exit_code == 2, res.output
    assert f"{conf}: {needle}" in res.stderr
    assert not (tmp_path / "o").exists()


def test_progress_events_and_quiet_terminal(tiny_model_dir, tmp_path):
    """The core reports step/total/loss/lr/eta to a plain function; the CLI prints no raw dicts or
    warnings."""
    from learnat_cli.stages.sft import sft

    events = []
    man = sft(input=str(write_jsonl(tmp_path / "s.jsonl", ROWS)), output_dir=str(tmp_path / "o"),
              model=str(tiny_model_dir), max_steps=3, grad_accum=1, cpu=True,
              on_event=lambda kind, info: events.append((kind, info)))
    kinds = [k for k, _ in events]
    assert kinds[0] == "start" and events[0][1]["total"] == 3 and kinds.count("tick") == 3
    steps = [i for k, i in events if k == "step"]
    assert [s["step"] for s in steps] == [1, 2, 3] and all(s["total"] == 3 for s in steps)
    assert all(math.isfinite(s["loss"]) and s["lr"] is not None for s in steps)
    assert steps[0]["eta_s"] >= 0 and steps[-1]["eta_s"] == 0
    assert steps[-1]["loss"] == man["final_loss"]
    res = _sft([write_jsonl(tmp_path / "s.jsonl", ROWS), "--model", tiny_model_dir, "-o", tmp_path / "c",
                "--max-steps", "2", "--grad-accum", "1"])
    assert res.exit_code == 0, res.output
    assert "learnat sft: step 2/2  loss" in res.stderr
    assert "{'loss'" not in res.stderr and "Warning" not in res.stderr and "warn" not in res.stderr.lower()


def test_cli_checkpoint_at_end_by_default_and_eval_split(tiny_model_dir, tmp_path):
    rows = [{"prompt": f"Question {i}: how many?\n", "completion": f"SELECT {i}"} for i in range(6)]
    out = tmp_path / "o"
    res = _sft([write_jsonl(tmp_path / "s.jsonl", rows), "--model", tiny_model_dir, "-o", out,
                "--max-steps", "3", "--grad-accum", "1", "--eval-split", "0.34"])
    assert res.exit_code == 0, res.output
    man = _manifest(res)
    assert man["examples"] == 4 and math.isfinite(man["eval_loss"]) and "eval loss" in res.stderr
    assert man["checkpoint"] == str(out / "checkpoint-3") and (out / "checkpoint-3").is_dir()
    assert json.loads((out / "metrics.json").read_text())["eval_loss"] == man["eval_loss"]
    # ... so --resume always has something: a longer run continues from step 3.
    res = _sft([tmp_path / "s.jsonl", "--config", out / "training_config.json", "--max-steps", "4",
                "--resume"])
    assert res.exit_code == 0, res.output
    assert _manifest(res)["resumed_from"] == str(out / "checkpoint-3")


def test_cli_report_to(tiny_model_dir, tmp_path):
    import importlib.util

    from learnat_cli.training.runner import common_args

    res = _sft(["--report-to", "mlflow", "-o", tmp_path / "o"], input="")
    assert res.exit_code == 2 and "field 'report_to'" in res.stderr
    assert common_args(SftConfig(), True, False)["report_to"] == "none"
    if importlib.util.find_spec("tensorboard") is None:
        res = _sft([write_jsonl(tmp_path / "s.jsonl", ROWS), "--model", tiny_model_dir, "-o", tmp_path / "tb",
                    "--report-to", "tensorboard"])
        assert res.exit_code == 2 and "pip install tensorboard" in res.stderr
    else:
        assert common_args(SftConfig(report_to="tensorboard"), True, False)["report_to"] == "tensorboard"


def test_adapter_is_portable(tiny_model_dir, tmp_path, monkeypatch):
    """The adapter records the embedded model's id, not the training machine's path, and loads back by it."""
    import learnat_cli.models as models

    real = models.resolve_model
    monkeypatch.setattr(models, "resolve_model",
                        lambda spec=None, progress=None: str(tiny_model_dir) if spec in (None,
                                                                                         "qwen2.5-coder-0.5b")
                        else real(spec, progress))
    out = tmp_path / "o"
    res = _sft([write_jsonl(tmp_path / "s.jsonl", ROWS), "-o", out, "--max-steps", "1", "--grad-accum", "1"])
    assert res.exit_code == 0, res.output
    assert _manifest(res)["base_model"] == "qwen2.5-coder-0.5b"
    text = (out / "adapter_config.json").read_text()
    assert json.loads(text)["base_model_name_or_path"] == "qwen2.5-coder-0.5b" and str(tmp_path) not in text
    model, _tok = models.load_causal_lm(str(out), device="cpu")
    assert model.config.vocab_size > 0
    # A local folder that is not an embedded model is recorded absolute (never relative to the cwd).
    monkeypatch.chdir(tiny_model_dir.parent)
    res = _sft([tmp_path / "s.jsonl", "--model", tiny_model_dir.name, "-o", tmp_path / "p", "--max-steps",
                "1"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "p" / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        str(tiny_model_dir.resolve())


def test_cpu_speed_levers_lora_upper_layers_and_length_grouping(tiny_model_dir, tmp_path):
    """--lora-layers N: LoRA on the last N decoder layers only; --group-by-length batches similar lengths."""
    rows = [{"prompt": "Question: " + "how many " * (i + 1), "completion": f"SELECT {i}"} for i in range(8)]
    cfg = SftConfig(output_dir=str(tmp_path / "o"), model=str(tiny_model_dir), lora_layers=1, cpu=True,
                    group_by_length=True, batch_size=4, max_steps=1)
    trainer, _ = build_sft_trainer(cfg, rows=rows)
    layers = {n.split(".layers.")[1].split(".")[0] for n, p in trainer.model.named_parameters()
              if p.requires_grad}
    assert layers == {str(trainer.model.config.num_hidden_layers - 1)}
    padded = sum(b["input_ids"].numel() for b in trainer.get_train_dataloader())
    lengths = sorted(len(x) for x in trainer.train_dataset["input_ids"])
    assert padded == 4 * (lengths[-1] + lengths[3])  # the 4 short rows are not padded to the longest


def test_cpu_loss_scores_only_the_labelled_positions(tiny_model_dir):
    """TRL's fused LM head scores every position off Triton devices; learnat has it score the labelled ones
    on CPU too (the prompt is most of a row). Same loss and per-token log-probabilities, fewer rows through
    the head; the switch restores TRL's behaviour when turned off."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer import utils as trl_utils

    from learnat_cli.training.runner import score_label_positions_only

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    trl_utils.add_fused_lm_head(model)
    torch.manual_seed(0)
    ids = torch.randint(5, 300, (2, 40))
    labels = ids.clone()
    labels[:, :30] = -100  # a 30-token prompt, a 10-token completion
    labels[1, 35:] = -100  # a shorter second answer
    seen = []
    real = trl_utils._ChunkedLogProbFunction

    class Counting:
        @staticmethod
        def apply(hidden, *args):
            seen.append(hidden.shape[0])
            return real.apply(hidden, *args)

    trl_utils._ChunkedLogProbFunction = Counting
    try:
        score_label_positions_only(False)
        full = model(input_ids=ids, labels=labels, fused_lm_head=True)
        assert score_label_positions_only() is True
        compact = model(input_ids=ids, labels=labels, fused_lm_head=True)
        score_label_positions_only(False)
        again = model(input_ids=ids, labels=labels, fused_lm_head=True)
    finally:
        trl_utils._ChunkedLogProbFunction = real
        score_label_positions_only()  # the state the trainers leave the process in
    assert seen == [2 * 39, 10 + 5, 2 * 39]  # shifted labels: 39 positions a row; 15 carry a label
    assert torch.allclose(full.loss, compact.loss, atol=1e-6) and torch.equal(full.loss, again.loss)
    assert torch.allclose(full.log_probs, compact.log_probs, atol=1e-6)


def test_compile_layers_compiles_each_decoder_layer_and_keeps_the_loss(tiny_model_dir, tmp_path):
    """--compile-layers: each decoder layer runs through torch.compile (the CPU lever measured in
    docs/BENCHMARKS.md); the first step's loss is the eager one, and a model without a layer list is a clean
    error naming the field."""
    import torch

    from learnat_cli.training.runner import compile_layers

    rows = [{"prompt": "Question: " + "how many " * (i + 1), "completion": f"SELECT {i}"} for i in range(4)]
    losses = {}
    for compiled in (False, True):
        cfg = SftConfig(output_dir=str(tmp_path / f"o{compiled}"), model=str(tiny_model_dir), cpu=True,
                        batch_size=1, grad_accum=1, max_steps=2, save_steps=0, compile_layers=compiled)
        trainer, _ = build_sft_trainer(cfg, rows=rows)
        layers = trainer.model.base_model.model.model.layers
        assert all((layer._compiled_call_impl is not None) == compiled for layer in layers)
        trainer.train()
        losses[compiled] = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses[True]) == 2 and losses[True][0] == pytest.approx(losses[False][0], abs=1e-4)
    with pytest.raises(LearnatError, match="compile-layers"):
        compile_layers(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_compile_layers_without_a_compiler_is_one_clean_line(tiny_model_dir, tmp_path):
    """No working C++ compiler for inductor on CPU (CXX names none; inductor reads it once per process, so
    a process of its own): `learnat sft --compile-layers` exits 2 with one line naming the field, before
    any training step."""
    import os
    import subprocess
    import sys

    rows = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "Q?", "completion": "SELECT 1"}])
    env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"))
    res = subprocess.run([sys.executable, "-m", "learnat_commands.main", "sft", str(rows), "--model",
                          str(tiny_model_dir), "-o", str(tmp_path / "o"), "--cpu", "--max-steps", "1",
                          "--compile-layers"], capture_output=True, text=True, env=env, timeout=600,
                         check=False)
    assert res.returncode == 2, res.stderr[-2000:]
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "compile_layers" in err[0] and "C++ compiler" in err[0], err
    assert "Traceback" not in res.stderr and not (tmp_path / "o" / "adapter_model.safetensors").exists()
