"""`learnat mdpo` / learnat_cli.training.mdpo_trainer: pair reading, the MDPO loss checked by hand on a tiny
model (with and without margins, and against TRL's stock DPOTrainer), the margin column reaching the loss, the
CLI, and training progress."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from learnat_cli.errors import LearnatError
from learnat_cli.training.mdpo_trainer import (
    MdpoConfig,
    build_mdpo_trainer,
    load_pairs,
    mdpo_losses,
    shared_prefix_logps,
)
from learnat_commands.main import app

torch = pytest.importorskip("torch")

PAIRS = [
    {"id": "p0", "prompt": "Question: How many singers are older than 30?\n",
     "chosen": "Final SQL: SELECT COUNT(*) FROM singer WHERE age > 30",
     "rejected": "Final SQL: SELECT name FROM singer",
     "margin": 0.5},
    {"id": "p1", "prompt": "Question: What is the average price of the orders?\n",
     "chosen": "Final SQL: SELECT AVG(price) FROM orders",
     "rejected": "Final SQL: SELECT MAX(price) FROM orders WHERE id = 1",
     "margin": 0.25},
    {"id": "p2", "prompt": "Question: List the names.\n",
     "chosen": "Final SQL: SELECT name FROM singer", "rejected": "Final SQL: SELECT COUNT(*) FROM cards",
     "margin": 1.0},
]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Reference log-probs kept by one test (RefLogpsStore) are not seen by another."""
    monkeypatch.setenv("LEARNAT_CACHE", str(tmp_path / "cache"))


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------------------
# Reading pairs


def test_load_pairs_string_and_conversational(tmp_path):
    rows = load_pairs(str(write_jsonl(tmp_path / "p.jsonl", PAIRS)))
    assert [r["margin"] for r in rows] == [0.5, 0.25, 1.0]
    assert rows[0]["prompt"].startswith("Question:") and isinstance(rows[0]["chosen"], str)

    conv = [{"id": "c", "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
             "chosen": "Final SQL: SELECT 1", "rejected": [{"role": "assistant", "content": "SELECT 2"}]}]
    rows = load_pairs(str(write_jsonl(tmp_path / "c.jsonl", conv)))
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "Final SQL: SELECT 1"}]
    assert rows[0]["rejected"] == [{"role": "assistant", "content": "SELECT 2"}]
    assert rows[0]["margin"] == 0.0  # absent margin -> plain DPO for that pair


@pytest.mark.parametrize("row, line_field, needle", [
    ({"prompt": "q", "chosen": "a"}, "rejected", "missing"),
    ({"prompt": "q", "chosen": "a", "rejected": "b", "margin": "big"}, "margin", "number"),
    ({"prompt": "q", "chosen": ["x"], "rejected": "b"}, "chosen", "chat messages"),
    ({"prompt": 3, "chosen": "a", "rejected": "b"}, "prompt", "a string or a list of chat messages"),
    ({"prompt": [{"role": "user"}], "chosen": "a", "rejected": "b"}, "prompt", "0.content: missing"),
    ({"prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}, "prompt", "mixed"),
    ({"prompt": "q", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"}, "chosen", "string"),
    ({"prompt": "q", "chosen": "a", "rejected": "b", "margin": float("nan")}, "margin", ""),
])
def test_load_pairs_errors_name_line_and_field(tmp_path, row, line_field, needle):
    """Rows are read through the PreferencePair record: one error naming file, line and field."""
    p = write_jsonl(tmp_path / "bad.jsonl", [PAIRS[0], {"id": "x", **row}])
    with pytest.raises(LearnatError) as ei:
        load_pairs(str(p))
    assert ei.value.line == 2 and ei.value.field == line_field and ei.value.file == str(p)
    assert needle in ei.value.message


def test_load_pairs_odpo_needs_positive_margin(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", [PAIRS[0], {**PAIRS[1], "margin": 0.0}])
    assert len(load_pairs(str(p))) == 2
    with pytest.raises(LearnatError) as ei:
        load_pairs(str(p), margin_form="odpo")
    assert ei.value.line == 2 and ei.value.field == "margin"


def test_mdpo_losses_formula():
    h_w = torch.tensor([1.0, -2.0, 0.5])
    h_l = torch.tensor([0.0, 1.0, 0.5])
    m = torch.tensor([0.5, 0.0, 2.0])
    got = mdpo_losses(h_w, h_l, m, beta=0.5, gamma=2.0)
    want = [-math.log(1 / (1 + math.exp(-(0.5 * (a - b) - 2.0 * c)))) for a, b, c in zip(h_w.tolist(),
                                                                                         h_l.tolist(),
                                                                                         m.tolist(), strict=False)]  # noqa: E501
    assert torch.allclose(got, torch.tensor(want), atol=1e-6)
    odpo = mdpo_losses(h_w, h_l, m.clamp(min=0.1), beta=0.5, margin_form="odpo", odpo_alpha=1.0)
    want = [-math.log(1 / (1 + math.exp(-(0.5 * (a - b) - math.log(c))))) for a, b, c in
            zip(h_w.tolist(), h_l.tolist(), m.clamp(min=0.1).tolist(), strict=False)]
    assert torch.allclose(odpo, torch.tensor(want), atol=1e-6)
    with pytest.raises(LearnatError):
        mdpo_losses(h_w, h_l, m, beta=0.5, margin_form="odpo")


# ------------------------------------------------------------------------------------------------------------
# The loss, by hand


def _completion_logps(model, tok, prompt: str, completion: str) -> torch.Tensor:
    """Sum of the completion tokens' log-probs (TRL's string format: prompt + completion + EOS)."""
    p_ids = tok(prompt)["input_ids"]
    full = tok(prompt + completion + tok.eos_token)["input_ids"]
    assert full[:len(p_ids)] == p_ids
    ids = torch.tensor([full])
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    logp = torch.log_softmax(logits[0, :-1], dim=-1)
    targets = ids[0, 1:]
    tok_logps = logp.gather(1, targets[:, None])[:, 0]
    return tok_logps[len(p_ids) - 1:].sum()


def _hand_loss(trainer, rows, beta, gamma, margin_form="linear", alpha=1.0):
    model = trainer.model
    tok = trainer.processing_class
    model.eval()
    losses = []
    for r in rows:
        pc = _completion_logps(model, tok, r["prompt"], r["chosen"])
        pr = _completion_logps(model, tok, r["prompt"], r["rejected"])
        with model.disable_adapter():
            rc = _completion_logps(model, tok, r["prompt"], r["chosen"])
            rr = _completion_logps(model, tok, r["prompt"], r["rejected"])
        h = (pc - rc) - (pr - rr)
        assert abs(float(h)) > 1e-4  # the random adapter makes policy != reference: the check is not vacuous
        shift = gamma * r["margin"] if margin_form == "linear" else alpha * math.log(r["margin"])
        losses.append(-torch.nn.functional.logsigmoid(beta * h - shift))
    return torch.stack(losses).mean()


def _trainer_loss(trainer, n):
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 2 * n
    trainer.model.eval()
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch), batch


def _random_lora():
    from peft import LoraConfig

    # init_lora_weights=False: B is random too, so the policy differs from the reference from step 0.
    return LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM",
                      init_lora_weights=False)


@pytest.mark.parametrize("gamma, precompute, shared", [(0.0, False, "auto"), (1.5, False, "auto"),
                                                       (1.5, True, "auto"), (1.5, False, "off")])
def test_trainer_loss_equals_hand_computed_loss(tiny_model_dir, tmp_path, gamma, precompute, shared):
    """shared auto: on CPU each pair's prompt runs once (shared_prefix_logps); off: TRL's plain forward."""
    n = len(PAIRS)
    cfg = MdpoConfig(input=str(write_jsonl(tmp_path / "p.jsonl", PAIRS)), output_dir=str(tmp_path / "out"),
                     model=str(tiny_model_dir), batch_size=n, grad_accum=1, max_steps=1, beta=0.5,
                     gamma=gamma,
                     cpu=True, precompute_ref=precompute, shared_prefix=shared)
    trainer, _ = build_mdpo_trainer(cfg, peft_config=_random_lora())
    assert trainer.shared_prefix == (shared == "auto")
    assert "margin" in trainer.train_dataset.column_names
    loss, batch = _trainer_loss(trainer, n)
    # The margin column survives remove_unused_columns and the collator (order follows the sampler's shuffle).
    assert sorted(batch["margin"].tolist()) == sorted(r["margin"] for r in PAIRS)
    # precomputed by TRL, or (ref store) NaN until known: a fresh store knows nothing, the reference runs
    stored = "ref_chosen_logps" in batch and bool(torch.isfinite(batch["ref_chosen_logps"]).all())
    assert stored == precompute
    rows = load_pairs(cfg.input)
    want = _hand_loss(trainer, rows, beta=0.5, gamma=gamma)
    assert torch.allclose(loss.float(), want.float(), atol=1e-5), (loss, want)


def test_compiled_layers_give_the_eager_loss(tiny_model_dir, tmp_path):
    """--compile-layers on MDPO (the shared-prefix forward of CPU): the same loss as the eager layers."""
    n = len(PAIRS)
    losses = []
    for compiled in (False, True):
        cfg = MdpoConfig(input=str(write_jsonl(tmp_path / "p.jsonl", PAIRS)), output_dir=str(tmp_path / "o"),
                         model=str(tiny_model_dir), batch_size=n, grad_accum=1, max_steps=1, beta=0.5,
                         gamma=1.5, cpu=True, compile_layers=compiled)
        trainer, _ = build_mdpo_trainer(cfg, peft_config=_random_lora())
        assert trainer.shared_prefix
        layers = trainer.model.base_model.model.model.layers
        assert all((layer._compiled_call_impl is not None) == compiled for layer in layers)
        losses.append(_trainer_loss(trainer, n)[0].float())
    assert torch.allclose(losses[0], losses[1], atol=1e-4), losses


def test_odpo_form_equals_hand_computed_loss(tiny_model_dir, tmp_path):
    n = len(PAIRS)
    cfg = MdpoConfig(input=str(write_jsonl(tmp_path / "p.jsonl", PAIRS)), output_dir=str(tmp_path / "out"),
                     model=str(tiny_model_dir), batch_size=n, grad_accum=1, max_steps=1, beta=0.3,
                     margin_form="odpo", odpo_alpha=0.7, cpu=True)
    trainer, _ = build_mdpo_trainer(cfg, peft_config=_random_lora())
    loss, _ = _trainer_loss(trainer, n)
    want = _hand_loss(trainer, load_pairs(cfg.input), beta=0.3, gamma=0.0, margin_form="odpo", alpha=0.7)
    assert torch.allclose(loss.float(), want.float(), atol=1e-5), (loss, want)


def test_gamma_zero_matches_trl_stock_dpo(tiny_model_dir, tmp_path):
    """With gamma=0 the subclass computes exactly TRL's sigmoid DPO loss on the same batch."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    n = len(PAIRS)
    cfg = MdpoConfig(input=str(write_jsonl(tmp_path / "p.jsonl", PAIRS)), output_dir=str(tmp_path / "out"),
                     model=str(tiny_model_dir), batch_size=n, grad_accum=1, max_steps=1, beta=0.5, gamma=0.0,
                     cpu=True)
    trainer, _ = build_mdpo_trainer(cfg, peft_config=_random_lora())
    ours, batch = _trainer_loss(trainer, n)
    # The same reference as ours (the base weights, i.e. the adapter disabled), given explicitly.
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    stock = DPOTrainer(model=trainer.model, ref_model=ref, args=DPOConfig(output_dir=str(tmp_path / "stock"),
                                                                          beta=0.5,
                                                           use_cpu=True, bf16=False, report_to="none",
                                                           gradient_checkpointing=False),
                       train_dataset=Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")}
                                                        for r in PAIRS]),
                       processing_class=trainer.processing_class)
    stock_batch = {k: v for k, v in batch.items() if k != "margin"}
    with torch.no_grad():
        theirs = stock.compute_loss(stock.model, stock_batch)
    assert torch.allclose(ours, theirs, atol=1e-6), (ours, theirs)


# ------------------------------------------------------------------------------------------------------------
# CLI


def _manifest(result) -> dict:
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


def test_cli_mdpo_trains_and_writes_adapter(tiny_model_dir, tmp_path):
    inp = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "mdpo"
    res = CliRunner().invoke(app, ["mdpo", str(inp), "--model", str(tiny_model_dir), "-o", str(out),
                                   "--max-steps", "2", "--grad-accum", "1", "--batch-size", "2", "--gamma",
                                   "2",
                                   "--merge", "--lr", "1e-3"])
    assert res.exit_code == 0, res.output
    man = _manifest(res)
    assert man["stage"] == "mdpo" and man["steps"] == 2 and man["gamma"] == 2.0 and man["lora"] is True
    assert math.isfinite(man["final_loss"])
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    conf = json.loads((out / "training_config.json").read_text())
    assert conf["gamma"] == 2.0 and conf["beta"] == 0.1 and conf["learning_rate"] == 1e-3
    metrics = json.loads((out / "metrics.json").read_text())
    assert any("margin/data" in e for e in metrics["log_history"])
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(man["merged_dir"])
    assert merged.config.vocab_size > 0


def test_cli_mdpo_continues_sft_adapter_from_stdin(tiny_model_dir, tmp_path):
    """`--model` takes a `learnat sft` adapter folder; the prompt may be chat messages (TRL
    conversational)."""
    sft_rows = [{"messages": [{"role": "user", "content": "How many singers?"},
                              {"role": "assistant", "content": "Final SQL: SELECT COUNT(*) FROM singer"}]}]
    sft_out = tmp_path / "sft"
    res = CliRunner().invoke(app, ["sft", str(write_jsonl(tmp_path / "sft.jsonl", sft_rows)), "--model",
                                   str(tiny_model_dir), "-o", str(sft_out), "--max-steps", "1",
                                   "--grad-accum", "1"])
    assert res.exit_code == 0, res.output
    conv = [{"id": f"c{i}", "prompt": [{"role": "user", "content": p["prompt"]}], "chosen": p["chosen"],
             "rejected": p["rejected"], "margin": p["margin"]} for i, p in enumerate(PAIRS)]
    stdin = "".join(json.dumps(r) + "\n" for r in conv)
    out = tmp_path / "mdpo"
    res = CliRunner().invoke(app, ["mdpo", "--model", str(sft_out), "-o", str(out), "--max-steps", "1",
                                   "--grad-accum", "1"], input=stdin)
    assert res.exit_code == 0, res.output
    man = _manifest(res)
    assert man["init_adapter"] == str(sft_out) and man["base_model"] == str(tiny_model_dir)
    # TRL keeps the starting (SFT) adapter frozen as the reference.
    assert (out / "ref" / "adapter_config.json").exists()


def test_cli_mdpo_with_explicit_ref_model(tiny_model_dir, tmp_path):
    res = CliRunner().invoke(app, ["mdpo", str(write_jsonl(tmp_path / "p.jsonl", PAIRS)), "--model",
                                   str(tiny_model_dir), "--ref-model", str(tiny_model_dir), "-o",
                                   str(tmp_path / "o"),
                                   "--max-steps", "1", "--grad-accum", "1", "--full"])
    assert res.exit_code == 0, res.output
    man = _manifest(res)
    assert man["lora"] is False and man["ref_model"] == str(tiny_model_dir)
    assert (tmp_path / "o" / "model.safetensors").exists()


@pytest.mark.parametrize("content, needle", [
    ('{"id": "a", "prompt": "q", "chosen": "a"}\n', ":1: field 'rejected'"),
    ('{"id": "a", "prompt": "q", "chosen": "a", "rejected": "b"}\n{not json\n', ":2: invalid JSON"),
])
def test_cli_mdpo_bad_input_exits_2(tiny_model_dir, tmp_path, content, needle):
    inp = tmp_path / "bad.jsonl"
    inp.write_text(content)
    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["mdpo", str(inp), "--model", str(tiny_model_dir), "-o", str(out)])
    assert res.exit_code == 2
    assert needle in res.stderr and res.stdout == ""
    assert not (out / "manifest.json").exists()


def test_cli_mdpo_rejects_unknown_margin_form(tiny_model_dir, tmp_path):
    res = CliRunner().invoke(app, ["mdpo", str(write_jsonl(tmp_path / "p.jsonl", PAIRS)), "--model",
                                   str(tiny_model_dir), "--margin-form", "cubic"])
    assert res.exit_code == 2 and "margin form" in res.stderr


def test_mdpo_loss_goes_down_on_repeated_batch(tiny_model_dir, tmp_path):
    from learnat_cli.training.mdpo_trainer import train_mdpo

    man = train_mdpo(MdpoConfig(input=str(write_jsonl(tmp_path / "p.jsonl", PAIRS)),
                                output_dir=str(tmp_path / "o"), model=str(tiny_model_dir), batch_size=3,
                                grad_accum=1, max_steps=8, learning_rate=5e-3, lora_r=8, cpu=True))
    assert man["steps"] == 8
    assert man["final_loss"] < man["first_loss"] - 0.05, man


def test_cli_mdpo_config_file_eval_file_and_shared_options(tiny_model_dir, tmp_path):
    """MdpoConfig = the shared TrainConfig options + the MDPO fields: all from one YAML file, flags override,
    an eval file's loss lands in the manifest; margin_form is checked once, at config time, naming the
    file."""
    from learnat_commands import mdpo as mdpo_cmd

    source = Path(mdpo_cmd.__file__).read_text()
    assert ".sft" not in source and len(source.splitlines()) < 80
    inp = write_jsonl(tmp_path / "p.jsonl", PAIRS)
    conf = tmp_path / "mdpo.yaml"
    conf.write_text(f"model: {tiny_model_dir}\ngamma: 2.0\nbeta: 0.2\nmax_steps: 1\ngrad_accum: 1\n"
                    f"eval_file: {inp}\n")
    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["mdpo", str(inp), "--config", str(conf), "--beta", "0.3", "-o", str(out)])
    assert res.exit_code == 0, res.output
    man = _manifest(res)
    assert man["gamma"] == 2.0 and man["beta"] == 0.3 and math.isfinite(man["eval_loss"])
    saved = json.loads((out / "training_config.json").read_text())
    assert saved["learning_rate"] == 5e-6 and saved["eval_file"] == str(inp)
    assert saved["margin_form"] == "linear"
    conf.write_text("margin_form: cubic\n")
    res = CliRunner().invoke(app, ["mdpo", str(inp), "--config", str(conf)])
    assert res.exit_code == 2 and f"{conf}: field 'margin_form': unknown margin form 'cubic'" in res.stderr


def test_shared_prefix_logps_and_gradients_equal_the_plain_forward(tiny_model_dir, tmp_path):
    """Each pair's prompt run once into a KV cache (then repeated for chosen and rejected) gives the same
    summed completion log-probs, and the same LoRA gradients, as TRL's plain forward over full rows."""
    cfg = MdpoConfig(input=str(write_jsonl(tmp_path / "p.jsonl", PAIRS)), output_dir=str(tmp_path / "out"),
                     model=str(tiny_model_dir), batch_size=len(PAIRS), grad_accum=1, max_steps=1, cpu=True)
    trainer, _ = build_mdpo_trainer(cfg, peft_config=_random_lora())
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model
    model.eval()  # no dropout: the two paths see the same function
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    seq_len = labels.shape[1] - 1
    lora = [p for n, p in model.named_parameters() if p.requires_grad]

    def grads(logps):
        model.zero_grad()
        (logps * torch.arange(1, len(logps) + 1)).sum().backward()  # every row weighs differently
        return [p.grad.clone() for p in lora]

    plain = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                  fused_lm_head=True, use_cache=False).log_probs[:, -seq_len:].sum(dim=1)
    shared = shared_prefix_logps(model, batch["input_ids"], batch["attention_mask"], labels != -100)
    assert torch.allclose(plain, shared, atol=1e-4), (plain, shared)
    g_plain, g_shared = grads(plain), grads(shared)
    assert any(float(g.abs().sum()) > 0 for g in g_plain)
    for a, b in zip(g_plain, g_shared, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-3)
    with model.disable_adapter():  # the reference pass: adapter off, same equality
        ref_plain = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                          fused_lm_head=True, use_cache=False).log_probs[:, -seq_len:].sum(dim=1)
        ref_shared = shared_prefix_logps(model, batch["input_ids"], batch["attention_mask"], labels != -100)
    assert torch.allclose(ref_plain, ref_shared, atol=1e-4)
    assert not torch.allclose(ref_plain, plain, atol=1e-3)


def test_shared_prefix_option_errors(tiny_model_dir, tmp_path):
    with pytest.raises(LearnatError, match="auto, on or off"):
        MdpoConfig(input="-", shared_prefix="maybe")
    with pytest.raises(LearnatError, match="a file, not a folder"):
        MdpoConfig(input="-", ref_cache=__file__)
    with pytest.raises(LearnatError, match="gradient checkpointing"):
        MdpoConfig(input="-", shared_prefix="on", gradient_checkpointing=True)


def test_reference_logps_kept_for_the_next_run(tiny_model_dir, tmp_path):
    """MDPO keeps each pair's reference log-probs; the plain-DPO ablation on the same pairs from the same
    reference reads them (no reference forward pass) and trains exactly like a run that computes them; other
    pairs or another reference get another store."""
    from learnat_cli.training.mdpo_trainer import RefLogpsStore

    pairs = write_jsonl(tmp_path / "p.jsonl", PAIRS)

    def run(gamma: float, ref_cache: str, out: str, model=None, rows=None):
        cfg = MdpoConfig(input=str(pairs), output_dir=str(tmp_path / out), model=str(model or tiny_model_dir),
                         batch_size=1, grad_accum=1, epochs=1, learning_rate=5e-3, lora_r=4, cpu=True,
                         gamma=gamma, ref_cache=ref_cache, shared_prefix="off")
        trainer, _ = build_mdpo_trainer(cfg, rows)
        trainer.train()
        return trainer

    first = run(1.0, "auto", "mdpo")
    assert first.ref_forward_rows == len(PAIRS)
    store = first.ref_store.path
    assert store.parent == tmp_path / "cache" / "ref-logps"
    assert sorted(RefLogpsStore(store).known) == list(range(len(PAIRS)))

    reused = run(0.0, "auto", "dpo")
    assert reused.ref_store.path == store and reused.ref_forward_rows == 0
    plain = run(0.0, "off", "dpo-plain")
    assert plain.ref_store is None and plain.ref_forward_rows == len(PAIRS)
    got = {n: p for n, p in reused.model.named_parameters() if p.requires_grad}
    want = {n: p for n, p in plain.model.named_parameters() if p.requires_grad}
    assert got.keys() == want.keys() and got
    for n in got:
        assert torch.allclose(got[n], want[n], atol=1e-6), n
    # the training moved the adapter, so the comparison above is not of two untouched adapters
    assert any(float(p.detach().abs().sum()) > 0 for n, p in got.items() if "lora_B" in n)

    # the same reference in another folder, other mtimes (a carried run restored elsewhere): the same store
    moved = tmp_path / "moved-model"
    shutil.copytree(tiny_model_dir, moved)
    for f in moved.iterdir():
        os.utime(f, (1_000_000_000, 1_000_000_000))
    carried = run(0.0, "auto", "dpo-moved", model=moved)
    assert carried.ref_store.path == store and carried.ref_forward_rows == 0

    # a folder of its own (e.g. inside a run folder that a carry moves): the same key, in that folder
    beside = run(0.0, str(tmp_path / "run" / "ref-logps"), "dpo-beside")
    assert beside.ref_store.path == tmp_path / "run" / "ref-logps" / store.name
    assert beside.ref_forward_rows == len(PAIRS)
    assert RefLogpsStore(beside.ref_store.path).known == RefLogpsStore(store).known

    other_rows = load_pairs(str(pairs))[:2]
    assert run(1.0, "auto", "mdpo-2", rows=other_rows).ref_store.path != store  # other pairs
    first.save_model(str(tmp_path / "mdpo-adapter"))
    other_ref = run(1.0, "auto", "mdpo-3", model=tmp_path / "mdpo-adapter")  # the MDPO adapter as reference
    assert other_ref.ref_store.path != store
    # a line cut by an interrupted run is computed again, not trusted
    store.write_text(store.read_text() + '{"i": 7, "c": ')
    assert sorted(RefLogpsStore(store).known) == list(range(len(PAIRS)))


def test_content_identity_ignores_path_and_mtime_not_bytes(tmp_path, monkeypatch):
    """The reference log-probs key (folder_content_identity) follows the bytes of the weights: a copy with
    other mtimes is the same, one changed byte is not -- also in a file big enough to be hashed in chunks."""
    from learnat_cli import paths

    monkeypatch.setattr(paths, "FULL_HASH_LIMIT", 4 << 20)
    a = tmp_path / "a"
    a.mkdir()
    (a / "config.json").write_text('{"x": 1}')
    big = bytes(range(256)) * (40 << 12)  # 10 MiB: over the patched limit, so hashed by sampled chunks
    (a / "model.safetensors").write_bytes(big)
    (a / "notes.txt").write_text("not part of the identity")
    wanted = lambda name: name.endswith((".json", ".safetensors"))  # noqa: E731
    ident = paths.folder_content_identity(a, wanted)
    assert [row[0] for row in ident] == ["config.json", "model.safetensors"]

    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b)
    os.utime(b / "model.safetensors", (1_000_000_000, 1_000_000_000))
    (b / "notes.txt").write_text("changed")
    assert paths.folder_content_identity(b, wanted) == ident

    changed = bytearray(big)
    changed[-1] ^= 0xFF  # the last byte: inside the last sampled chunk
    (b / "model.safetensors").write_bytes(bytes(changed))
    assert paths.folder_content_identity(b, wanted) != ident
    (b / "model.safetensors").write_bytes(big)
    (b / "config.json").write_text('{"x": 2}')
    assert paths.folder_content_identity(b, wanted) != ident
