"""Issue 15: ``make loop SCALE=tiny`` runs the whole LearNAT chain (decompose -> build-pairs -> sft -> mdpo
and the plain-DPO ablation -> ask -> eval -> results) with the tiny test model, and a second run skips every
step; ``--max-time`` stops training at a checkpoint that ``--resume`` continues (a loop carried over
sittings)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SYNTHESIS = ["decompose", "build-pairs", "build-pairs-sft"]
CONFIGS = ["base-zero", "base-default", "sft-decompose", "sft-auto", "mdpo-decompose", "mdpo-auto",
           "mdpo-direct", "dpo-decompose"]
STUDENT = {"base-zero": None, "base-default": None, "sft-decompose": "sft", "sft-auto": "sft",
           "mdpo-decompose": "mdpo", "mdpo-auto": "mdpo", "mdpo-direct": "mdpo", "dpo-decompose": "dpo"}


def _steps() -> list[str]:
    """The order the loop runs its steps: synthesis, then each student (the base, SFT, MDPO, DPO) trained and
    at once asked and scored in every configuration that uses it."""
    steps = list(SYNTHESIS)
    for stage in (None, "sft", "mdpo", "dpo"):
        steps += [stage] if stage else []
        steps += [f"{s}-{c}" for c in CONFIGS if STUDENT[c] == stage for s in ("ask", "eval")]
    return steps


def _make(runs: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = ["make", "-s", "loop", "SCALE=tiny", f"RUNS={runs}", f"PYTHON={sys.executable}"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=900, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_loop_tiny_runs_every_stage_then_skips_them(tmp_path):
    pytest.importorskip("trl")
    pytest.importorskip("matplotlib")
    out = _make(tmp_path)
    run = tmp_path / "tiny"
    assert out["ran"] == _steps()
    for f in ("train.jsonl", "eval.jsonl", "decompositions.jsonl", "trees.jsonl", "pairs.jsonl", "sft.jsonl",
              "commands.sh", "results.md", "results.json", "state.json"):
        assert (run / f).stat().st_size > 0, f
    assert (run / "ex_by_hardness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((run / "results.json").read_text())
    assert [r["config"] for r in res["results"]] == CONFIGS
    ex_of = {r["config"]: r["ex"] for r in res["results"]}
    n_eval = sum(1 for _ in (run / "eval.jsonl").open())
    assert all(r["n"] == n_eval for r in res["results"])
    for stage in ("sft", "mdpo", "dpo"):
        man = json.loads((run / stage / "manifest.json").read_text())
        assert man["complete"] and (run / stage / "adapter_config.json").exists()
    assert json.loads((run / "mdpo" / "manifest.json").read_text())["init_adapter"] == str(run / "sft")
    # MDPO and DPO train on one seeded sample of the pairs, in file order
    sample = (run / "pairs-train.jsonl").read_text().splitlines()
    every = (run / "pairs.jsonl").read_text().splitlines()
    assert sample and set(sample) <= set(every) and sample == sorted(sample, key=every.index)
    md = (run / "results.md").read_text()
    assert "SFT+MDPO, adaptive path" in md and "SFT+DPO (gamma=0), decomposition" in md
    # the wrong answers of the (random) tiny students, by eval's failure class
    assert all(0 < sum(r["failures"].values()) <= r["n"] for r in res["results"] if r["ex"] < 100)
    assert "Wrong answers by failure class" in md
    # each configuration against the best base one, question by question
    vs = [r["vs_base"] for r in res["results"] if "vs_base" in r]
    assert len(vs) == len(CONFIGS) - 1 and all(0 <= v["p"] <= 1 for v in vs)
    best = max(r["ex"] for r in res["results"] if r["config"].startswith("base"))
    for r in res["results"]:
        if "vs_base" in r:  # the same questions: the EX difference is what was fixed less what was broken
            moved = 100 * (r["vs_base"]["fixed"] - r["vs_base"]["broken"]) / r["n"]
            assert r["ex"] - best == pytest.approx(moved, abs=0.11)
    assert "McNemar p" in md
    # issue 15's three targets, each judged on its sides' best configurations, with the verdict in results.md
    targets = {t["against"]: t for t in res["targets"]}
    assert set(targets) == {max(("base-zero", "base-default"), key=lambda c: ex_of[c]), "dpo-decompose",
                            "mdpo-direct"}
    for t in res["targets"]:
        assert t["difference"] == pytest.approx(ex_of[t["config"]] - ex_of[t["against"]], abs=0.11)
        assert t["met"] == (t["difference"] >= t["needed"]) and t["short_by"] >= 0
    assert targets["dpo-decompose"]["config"] == "mdpo-decompose" and "Issue 15's targets" in md
    # every configuration was asked with the settings the run recorded (rebind: on for a new run)
    assert json.loads((run / "state.json").read_text())["ask"] == {"rebind": True} == res["ask"]
    # the machine each step ran on (int8 kernels, and so answers, can differ by instruction set)
    assert set(res["machines"]) == set(out["ran"]) and all(len(m) == 1 for m in res["machines"].values())
    assert (run / "commands.sh").read_text().count(" --rebind ") == len(CONFIGS)
    assert "ask rebinds a column put on the wrong table of a join" in md
    for r in res["results"]:  # every wrong answer (the tiny model's golds all run) has a table choice
        assert sum(r["tables"].values()) == sum(r["failures"].values())
    # every command the loop ran is in commands.sh, replayable as is
    assert (run / "commands.sh").read_text().count("learnat ") == len(out["ran"])
    assert _make(tmp_path)["ran"] == []  # complete: nothing runs again
    _carried_to_a_new_machine(tmp_path, run, res)
    _ship_only_a_winner(tmp_path, run)


def _carried_to_a_new_machine(runs: Path, run: Path, res: dict) -> None:
    """``--carry``: the answers, reports, state and adapters go into a folder to commit, without the
    benchmark's text; on a machine whose run folder is empty the loop recomputes only the synthesis and its
    results are the same."""
    import gzip

    loop = _loop_module()
    carried = runs / "carry"
    assert loop.main(["--scale", "tiny", "--runs", str(runs), "--carry", str(carried), "--pack"]) == 0
    man = json.loads((carried / "carry.json").read_text())
    assert {f"ask-{c}.jsonl.gz" for c in CONFIGS} <= set(man["files"])
    assert {f"{s}/adapter_model.safetensors" for s in ("sft", "mdpo", "dpo")} <= set(man["files"])
    with gzip.open(carried / "ask-base-zero.jsonl.gz", "rt") as f:
        rec = json.loads(f.readline())
    assert "pred" in rec and not {"question", "gold", "db_path"} & set(rec)
    other = runs / "other-machine"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = ["make", "-s", "loop", "SCALE=tiny", f"RUNS={other}", f"CARRY={carried}",
           f"PYTHON={sys.executable}"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["ran"] == SYNTHESIS
    again = json.loads((other / "tiny" / "results.json").read_text())
    keep = ("config", "n", "ex", "by_hardness", "failures", "vs_base", "tables")
    assert [{k: r.get(k) for k in keep} for r in again["results"]] == \
        [{k: r.get(k) for k in keep} for r in res["results"]]
    assert (other / "tiny" / "logs" / "sft.log").read_bytes() == (run / "logs" / "sft.log").read_bytes()
    # the pairs MDPO/DPO trained on are drawn again (seeded), so results.md says how many were used
    assert again["pairs_used"] == res["pairs_used"] > 0
    assert (other / "tiny" / "pairs-train.jsonl").read_text() == (run / "pairs-train.jsonl").read_text()
    back = [json.loads(ln) for ln in (other / "tiny" / "ask-base-zero.jsonl").open()]
    assert back == [json.loads(ln) for ln in (run / "ask-base-zero.jsonl").open()]


def _carry_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("learnat_carry", REPO / "benchmarks" / "carry.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _loop_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("learnat_loop", REPO / "benchmarks" / "loop.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _set_ex(run: Path, config: str, accuracy: float) -> None:
    report = run / f"eval-{config}.json"
    rep = json.loads(report.read_text())
    rep["accuracy"] = accuracy
    report.write_text(json.dumps(rep))  # newer than the predictions: eval does not run again


def _ship_only_a_winner(runs: Path, run: Path) -> None:
    """``--ship``: the adapter of the best trained configuration is packaged (weights, learnat.json, model
    card, checksums) only when it beats every base configuration; otherwise the results say why."""
    from learnat_cli.shipped import CARD, META, adapter_schema_format, shipped_adapter

    loop = _loop_module()
    args = ["--scale", "tiny", "--runs", str(runs), "--ship", "--ship-to", str(runs / "student")]
    for c in CONFIGS:
        _set_ex(run, c, 0.2)
    _set_ex(run, "base-zero", 0.5)
    _set_ex(run, "mdpo-auto", 0.5)  # a tie is no win
    assert loop.main(args) == 0
    assert not (runs / "student").exists()
    assert "Not shipped: no trained configuration beats the best base one" in (run / "results.md").read_text()

    _set_ex(run, "mdpo-auto", 0.75)  # a lead in EX, the same questions right and wrong: not a measurable win
    assert loop.main(args) == 0
    assert not (runs / "student").exists()
    assert "not a measurable win: on the same questions it fixes 0 and breaks 0, McNemar p 1 > 0.05" in \
        (run / "results.md").read_text()
    assert loop.main([*args, "--ship-alpha", "1"]) == 0
    shipped = shipped_adapter(runs / "student")  # checksums verified
    assert shipped == runs / "student"
    meta = json.loads((shipped / META).read_text())
    assert meta["stage"] == "mdpo" and meta["decompose"] == "auto" and meta["ex"] == 75.0
    assert meta["base_ex"] == 50.0 and adapter_schema_format(shipped) == "sql"
    assert (shipped / "adapter_model.safetensors").read_bytes() == (run / "mdpo" /
                                                                   "adapter_model.safetensors").read_bytes()
    card = (shipped / CARD).read_text()
    assert "CC BY-SA 4.0" in card and "| SFT+MDPO, adaptive path |" in card and "- mdpo:" in card
    assert "Question by question: 0 fixed, 0 broken, McNemar p 1." in card
    assert "Shipped as `ask`'s default student: SFT+MDPO, adaptive path" in (run / "results.md").read_text()
    assert loop.ship_decision([]) == (None, None)


def test_mcnemar_exact_p():
    loop = _loop_module()
    assert loop.mcnemar_p(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 2 ** 12)  # exact binomial tail
    assert loop.mcnemar_p(2, 10) == loop.mcnemar_p(10, 2)
    assert loop.mcnemar_p(5, 5) == 1.0 and loop.mcnemar_p(0, 0) == 1.0


def test_table_choice_counts_schema_linking_in_wrong_answers():
    loop = _loop_module()
    gold = "SELECT name FROM ship"
    graded = [{"correct": True, "pred": gold, "gold": gold},  # right: not counted
              {"correct": False, "pred": "SELECT name FROM ship ORDER BY name", "gold": gold},
              {"correct": False, "pred": "SELECT T1.name FROM ship AS T1 JOIN battle AS T2 ON T1.id = T2.id",
               "gold": gold},
              {"correct": False, "pred": "SELECT name FROM ship", "gold": "SELECT T1.name FROM ship AS T1 "
               "JOIN battle AS T2 ON T1.lost_in_battle = T2.id"},
              {"correct": False, "pred": "SELECT name FROM battle", "gold": gold},
              {"correct": False, "pred": "", "gold": gold},
              {"correct": False, "pred": "SELECT", "gold": gold, "gold_error": "no such table"}]
    assert loop.table_choice(graded) == {"same tables": 1, "extra tables": 1, "missing tables": 1,
                                         "other tables": 1, "unparsed": 1}


def test_why_broken_measures_the_questions_a_configuration_loses():
    """A target's report says what the questions it loses fail on: only questions right on the other side
    and wrong here count; a decomposition whose first step reads a table the gold does not is counted."""
    loop = _loop_module()
    gold = "SELECT name FROM ship"
    join = "SELECT * FROM ship AS T1 JOIN battle AS T2 ON T1.lost_in_battle = T2.id"

    def wrong(failure, hardness, pred, steps=None):
        return {"correct": False, "failure": failure, "difficulty": hardness, "pred": pred, "gold": gold,
                "decomposed": steps is not None, "steps": steps or []}

    steps = [{"sql": join}, {"sql": "SELECT T1.nme FROM ship AS T1"}]
    mine = {"a": wrong("unknown column", "easy", join, steps),
            "b": wrong("wrong rows", "easy", gold + " LIMIT 1", [{"sql": gold}]),
            "c": wrong("wrong rows", "hard", "SELECT 1"),
            "d": {"correct": True, "gold": gold, "pred": gold},
            "e": wrong("empty result", "easy", "")}
    ref = {"a": {"correct": True}, "b": {"correct": True}, "c": {"correct": True}, "d": {"correct": False},
           "e": {"correct": False}, "f": {"correct": True}}  # e: wrong on both; f: not answered here
    w = loop.why_broken(mine, ref)
    assert w == {"n": 3, "hardness": {"easy": 2, "hard": 1},
                 "failures": {"wrong rows": 2, "unknown column": 1},
                 "tables": {"same tables": 1, "extra tables": 1, "missing tables": 0, "other tables": 0,
                            "unparsed": 1},
                 "decomposed": 2, "first_step_strays": 1}
    unparsable = {"decomposed": True, "steps": [{"sql": "SELECT FROM"}], "gold": gold}
    assert loop.first_step_strays(unparsable) is False
    target = {"config": "mdpo-decompose", "against": "mdpo-direct", "why_broken": w}
    lines = "\n".join(loop._why_lines([target]))
    assert ("SFT+MDPO, decomposition vs SFT+MDPO, direct SQL: the 3 questions it breaks are easy 2, hard 1"
            in lines)
    assert "2 were decomposed, 1 of them opening with a step on a table the gold does not read" in lines
    assert loop._why_lines([{**target, "why_broken": {**w, "n": 0}}]) == []


def test_dry_run_lists_every_step_in_the_order_it_would_run(tmp_path, capsys):
    """A dry run prints the whole chain (no step is trained, so it goes on as if each had completed) and runs
    and records nothing: the base is scored before SFT, each student right after its training."""
    pytest.importorskip("tokenizers")
    loop = _loop_module()
    assert loop.main(["--scale", "tiny", "--runs", str(tmp_path), "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["ran"] == _steps()
    run = tmp_path / "tiny"
    assert not (run / "commands.sh").exists() and not (run / "sft").exists()
    assert not (run / "decompositions.jsonl").exists()


def test_a_killed_sitting_is_counted_up_to_its_logs_last_write(tmp_path):
    """A sitting killed inside a step (the loop never returned) leaves its start in state.json; the next
    loop counts that step's time up to the last write of its log and says so in the notes."""
    import argparse

    loop = _loop_module()
    run = tmp_path / "r"
    (run / "logs").mkdir(parents=True)
    log = run / "logs" / "sft.log"
    log.write_text("learnat sft: step 3/9\n")
    os.utime(log, (1_000_250.0, 1_000_250.0))
    state = {"seconds": {"sft": 100.0}, "running": {"step": "sft", "since": 1_000_000.0}}
    (run / "state.json").write_text(json.dumps(state))
    # --pack may run beside a live loop: it counts nothing
    loop.Loop(argparse.Namespace(runs=str(tmp_path), name="r", dry_run=False, pack=True))
    assert json.loads((run / "state.json").read_text()) == state
    args = argparse.Namespace(runs=str(tmp_path), name="r", dry_run=False)
    loop.Loop(args)
    after = json.loads((run / "state.json").read_text())
    assert after["seconds"]["sft"] == 350.0 and "running" not in after
    assert "sft: the sitting started" in after["notes"][0] and "250.0 s counted" in after["notes"][0]
    loop.Loop(args)  # counted once
    assert json.loads((run / "state.json").read_text())["seconds"]["sft"] == 350.0
    # an ask step logs little: the answers it appended are its last sign of life
    preds = run / "ask-x.jsonl"
    preds.write_text("{}\n")
    os.utime(preds, (1_000_100.0, 1_000_100.0))
    state = {"running": {"step": "ask-x", "since": 1_000_000.0, "watch": [str(preds)]}}
    (run / "state.json").write_text(json.dumps(state))
    loop.Loop(args)
    assert json.loads((run / "state.json").read_text())["seconds"]["ask-x"] == 100.0


def test_a_run_keeps_the_ask_settings_its_answers_were_made_with(tmp_path):
    """Configurations asked in different sittings stay comparable: the first ask records ``--rebind``; a
    run whose answers predate the record was asked without it; a sitting asking otherwise is refused."""
    import argparse

    loop = _loop_module()

    def settings(name, rebind):
        return loop.Loop(argparse.Namespace(runs=str(tmp_path), name=name, dry_run=False,
                                            rebind=rebind)).ask_settings()

    assert settings("new", None) == {"rebind": True}
    assert settings("new", True) == {"rebind": True}
    with pytest.raises(SystemExit, match="made with --rebind"):
        settings("new", False)
    assert settings("off", False) == {"rebind": False}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "ask-base-zero.jsonl").write_text("{}\n")
    assert settings("old", None) == {"rebind": False}
    assert json.loads((tmp_path / "old" / "state.json").read_text())["ask"] == {"rebind": False}
    with pytest.raises(SystemExit, match="made with --no-rebind"):
        settings("old", True)


def test_max_time_stops_at_a_checkpoint_and_resume_finishes(tiny_model_dir, tmp_path):
    pytest.importorskip("trl")
    rows = tmp_path / "sft.jsonl"
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "How many books?"},
            {"role": "assistant", "content": "Final SQL: SELECT COUNT(*) FROM books"}]
    rows.write_text("".join(json.dumps({"id": f"r{i}", "messages": msgs}) + "\n" for i in range(8)))
    base = [sys.executable, "-m", "learnat_commands.main", "sft", str(rows), "--model", str(tiny_model_dir),
            "-o", str(tmp_path / "sft"), "--cpu", "--max-steps", "6", "--batch-size", "1", "--grad-accum",
            "1", "--lora-r", "4", "--save-steps", "0", "--resume"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.run([*base, "--max-time", "0.001"], capture_output=True, text=True, env=env,
                           check=False)
    assert first.returncode == 0, first.stderr[-2000:]
    m1 = json.loads(first.stdout)
    assert m1["complete"] is False and 1 <= m1["steps"] < 6 and m1["checkpoint"]
    # a new machine: the run folder is gone, the committed carry holds the checkpoint without Adam's moments
    carry = _carry_module()
    (tmp_path / "state.json").write_text("{}")
    man = carry.pack(tmp_path, tmp_path / "carry")
    ck = Path(m1["checkpoint"]).name
    import torch

    opt = torch.load(tmp_path / "carry" / "sft" / ck / "optimizer.pt", weights_only=True)
    assert opt["state"] == {} and opt["param_groups"]
    assert f"sft/{ck}/adapter_model.safetensors" in man["files"] and f"sft/{ck}/scheduler.pt" in man["files"]
    assert not any("tokenizer" in f for f in man["files"])
    weights = (Path(m1["checkpoint"]) / "adapter_model.safetensors").read_bytes()
    shutil.rmtree(tmp_path / "sft")
    (tmp_path / "state.json").unlink()
    assert carry.restore(tmp_path / "carry", tmp_path, {}, lambda rec: None) == ["state.json", "sft/"]
    assert (Path(m1["checkpoint"]) / "adapter_model.safetensors").read_bytes() == weights
    assert "Adam moments were not carried" in json.loads((tmp_path / "state.json").read_text())["notes"][0]
    second = subprocess.run(base, capture_output=True, text=True, env=env, check=False)
    assert second.returncode == 0, second.stderr[-2000:]
    m2 = json.loads(second.stdout)
    assert m2["complete"] is True and m2["steps"] == 6 and m2["resumed_from"] == m1["checkpoint"]
    # the learning-rate schedule went on where it stopped (linear decay over 6 steps), not from the start
    lrs = {h["step"]: h["learning_rate"] for h in json.loads((tmp_path / "sft" / "metrics.json").read_text())
           ["log_history"] if "learning_rate" in h}
    k = m1["steps"] + 1
    assert lrs[k] == pytest.approx(lrs[1] * (6 - k + 1) / 6)


def test_restore_fills_the_reference_only_into_a_stage_it_restores(tmp_path):
    """The carry keeps MDPO's frozen reference (the SFT adapter) once and restores it into the carried
    checkpoint; a machine that kept its own, newer stage folder -- whose carried checkpoint the trainer has
    since rotated away -- keeps it as it is (it used to crash copying into the vanished checkpoint)."""
    carry = _carry_module()
    run = tmp_path / "run"
    sft_weights = b"sft adapter weights"
    (run / "sft").mkdir(parents=True)
    (run / "sft" / "adapter_model.safetensors").write_bytes(sft_weights)
    (run / "sft" / "manifest.json").write_text('{"complete": true}')
    ck = run / "mdpo" / "checkpoint-10"
    (ck / "ref").mkdir(parents=True)
    (ck / "adapter_model.safetensors").write_bytes(b"mdpo adapter at 10")
    (ck / "trainer_state.json").write_text('{"global_step": 10}')
    (ck / "ref" / "adapter_config.json").write_text("{}")
    (ck / "ref" / "adapter_model.safetensors").write_bytes(sft_weights)
    man = carry.pack(run, tmp_path / "carry")
    assert list(man["from_sft"]) == ["mdpo/checkpoint-10/ref/adapter_model.safetensors"]
    assert "mdpo/checkpoint-10/ref/adapter_model.safetensors" not in man["files"]  # carried once, as sft/

    fresh = tmp_path / "fresh"
    assert carry.restore(tmp_path / "carry", fresh, {}, lambda rec: None) == ["sft/", "mdpo/"]
    ref = fresh / "mdpo" / "checkpoint-10" / "ref" / "adapter_model.safetensors"
    assert ref.read_bytes() == sft_weights

    kept = tmp_path / "kept"  # this machine trained on to checkpoint-20; checkpoint-10 is gone
    shutil.copytree(run / "sft", kept / "sft")
    (kept / "mdpo" / "checkpoint-20").mkdir(parents=True)
    (kept / "mdpo" / "checkpoint-20" / "trainer_state.json").write_text('{"global_step": 20}')
    assert carry.restore(tmp_path / "carry", kept, {}, lambda rec: None) == []
    assert sorted(p.name for p in (kept / "mdpo").iterdir()) == ["checkpoint-20"]


def test_reference_logps_travel_with_the_carry(tmp_path):
    """The preference pairs' reference log-probs (``mdpo --ref-cache RUN/ref-logps``) are packed with the
    carry, complete lines only, and merged on restore into a store this machine may have grown."""
    carry = _carry_module()
    run = tmp_path / "run"
    (run / "ref-logps").mkdir(parents=True)
    store = run / "ref-logps" / "abc.jsonl"
    store.write_text('{"i": 0, "c": -1.5, "r": -2.5}\n{"i": 1, "c": -3.0, "r": -4.0}\n{"i": 2, "c": ')
    man = carry.pack(run, tmp_path / "carry")
    assert "ref-logps/abc.jsonl.gz" in man["files"]

    fresh = tmp_path / "fresh"
    assert carry.restore(tmp_path / "carry", fresh, {}, lambda rec: None) == ["ref-logps/abc.jsonl"]
    assert (fresh / "ref-logps" / "abc.jsonl").read_text() == store.read_text().rsplit("\n", 1)[0] + "\n"

    grown = tmp_path / "grown"  # this machine computed pair 5 and was cut while writing pair 6
    (grown / "ref-logps").mkdir(parents=True)
    (grown / "ref-logps" / "abc.jsonl").write_text('{"i": 5, "c": -0.5, "r": -0.7}\n{"i": 6, "c"')
    assert carry.restore(tmp_path / "carry", grown, {}, lambda rec: None) == ["ref-logps/abc.jsonl"]
    from learnat_cli.training.mdpo_trainer import RefLogpsStore

    assert sorted(RefLogpsStore(grown / "ref-logps" / "abc.jsonl").known) == [0, 1, 5]
    assert carry.restore(tmp_path / "carry", grown, {}, lambda rec: None) == []  # nothing new the second time


def test_decomposition_shapes_say_where_decomposition_costs():
    """Each answer's decomposition shape (direct, no step, one step restating the question, one step on a
    sub-question, 2+ steps opening with a join or not), with its EX and the base's on the same questions."""
    loop = _loop_module()
    q = "How many ships were lost?"
    join = "SELECT * FROM ship AS T1 JOIN battle AS T2 ON T1.lost_in_battle = T2.id"

    def rec(correct, steps=None, decomposed=True):
        return {"question": q, "correct": correct, "decomposed": decomposed, "steps": steps or []}

    mine = {"a": rec(True, decomposed=False),
            "b": rec(False),
            "c": rec(True, [{"question": "how many ships were lost", "sql": "SELECT count(*) FROM ship"}]),
            "d": rec(False, [{"question": "Which ships are there?", "sql": "SELECT name FROM ship"}]),
            "e": rec(False, [{"question": "Join them", "sql": join}, {"question": q, "sql": "SELECT 1"}]),
            "f": rec(True, [{"question": "x", "sql": "SELECT name FROM ship"},
                            {"question": q, "sql": "SELECT"}]),
            "g": rec(False, [{"question": "x", "sql": "SELECT FROM"}, {"question": q, "sql": "SELECT 2"}]),
            "h": rec(True, decomposed=False)}
    assert [loop.decomposition_shape(mine[k]) for k in "abcdefg"] == [
        "direct", "no step", "one step: the question", "one step: a sub-question",
        "2+ steps, opening with a join", "2+ steps, other", "2+ steps, other"]
    base = {"a": False, "b": True, "c": False, "d": True, "e": True, "f": True, "g": False}  # h: not in base
    got = loop.shapes(mine, base)
    assert list(got) == list(loop.SHAPES)  # in SHAPES order
    assert got["direct"] == {"n": 1, "correct": 1, "ref_correct": 0}
    assert got["2+ steps, other"] == {"n": 2, "correct": 1, "ref_correct": 1}
    assert got["one step: a sub-question"] == {"n": 1, "correct": 0, "ref_correct": 1}

    row = {"config": "sft-decompose", "label": "SFT, decomposition", "n": 7, "ex": 40.0,
           "by_hardness": {}, "count_by_hardness": {}, "p50_s": 1.0, "p95_s": 2.0, "tokens_mean": 9.0,
           "decomposed": 6, "train_s": None,
           "vs_base": {"base": "base-zero", "fixed": 2, "broken": 4, "p": 0.7},
           "shapes": got}
    out = {"name": "t", "scale": "tiny", "student": "s", "train_questions": 1, "decompositions": 1,
           "sft_rows": 1, "pairs": 1, "pairs_used": 1, "training": {}, "results": [row], "targets": []}
    md = loop.markdown(out)
    assert "| SFT, decomposition | 1: 100.0 (0.0) | 1: 0.0 (100.0) |" in md


def test_reask_moves_answers_made_elsewhere_and_ship_wants_one_machine(tmp_path):
    """Answers can differ by CPU (int8 kernels), so ``--reask`` asks a configuration again on this machine
    (its old answers kept in superseded/), and ``--ship`` refuses a winner and a base asked on different
    machines."""
    import argparse

    loop = _loop_module()
    here = loop.machine()
    run = tmp_path / "r"
    (run / "logs").mkdir(parents=True)
    for f in ("ask-base-zero.jsonl", "eval-base-zero.json", "eval-base-zero.jsonl", "logs/ask-base-zero.log",
              "ask-mdpo-direct.jsonl"):
        (run / f).write_text("{}\n")
    state = {"seconds": {"ask-base-zero": 900.0, "eval-base-zero": 1.0, "ask-mdpo-direct": 400.0},
             "machines": {"ask-base-zero": ["Other CPU, 2 cores"], "eval-base-zero": ["Other CPU, 2 cores"],
                          "ask-mdpo-direct": [here]}}
    (run / "state.json").write_text(json.dumps(state))
    args = argparse.Namespace(runs=str(tmp_path), name="r", dry_run=False, reask=["base-zero", "mdpo-direct"],
                              configs=["base-zero", "mdpo-direct"], ship_alpha=0.05)
    lp = loop.Loop(args)
    rows = [{"config": "base-zero", "label": "base, zero-shot (direct SQL)", "ex": 40.0},
            {"config": "mdpo-direct", "label": "SFT+MDPO, direct SQL", "ex": 60.0,
             "vs_base": {"fixed": 60, "broken": 0, "p": 1e-9}}]
    why = lp.ship({"results": rows})
    assert why["shipped"] is False and "were not asked on one machine" in why["why"]
    assert "--reask mdpo-direct,base-zero" in why["why"]

    lp.reask()
    moved = run / "superseded" / "base-zero-1"
    assert sorted(p.name for p in moved.iterdir()) == ["ask-base-zero.jsonl", "ask-base-zero.log",
                                                      "eval-base-zero.json", "eval-base-zero.jsonl",
                                                      "machine.txt", "record.json"]
    assert (moved / "machine.txt").read_text() == "Other CPU, 2 cores\n"
    assert json.loads((moved / "record.json").read_text()) == {
        "seconds": {"ask-base-zero": 900.0, "eval-base-zero": 1.0},
        "machines": {"ask-base-zero": ["Other CPU, 2 cores"], "eval-base-zero": ["Other CPU, 2 cores"]}}
    assert not (run / "ask-base-zero.jsonl").exists() and (run / "ask-mdpo-direct.jsonl").exists()
    saved = json.loads((run / "state.json").read_text())
    assert saved["seconds"] == {"ask-mdpo-direct": 400.0} and list(saved["machines"]) == ["ask-mdpo-direct"]
    assert "base-zero: asked again on" in saved["notes"][0] and "superseded/base-zero-1/" in saved["notes"][0]
    lp.reask()  # nothing left to move: asked here from now on
    assert not (run / "superseded" / "base-zero-2").exists()


def test_reask_brings_back_answers_this_machine_made_and_the_carry_keeps_them(tmp_path, monkeypatch):
    """A run asked on machine A, then re-asked on B (A's answers to superseded/), then back on A: ``--reask``
    brings A's complete set back instead of asking again (with its time and machine records), B's set moves
    to superseded/; the carry packs superseded/ and a new machine gets it back."""
    import argparse

    loop, carry = _loop_module(), _carry_module()
    run = tmp_path / "r"
    (run / "logs").mkdir(parents=True)
    answers = "".join(json.dumps({"id": f"q{i}", "pred": f"SELECT {i}", "question": f"Q{i}?"}) + "\n"
                      for i in range(3))
    (run / "ask-base-zero.jsonl").write_text(answers)
    (run / "eval-base-zero.jsonl").write_text(answers)
    (run / "eval-base-zero.json").write_text('{"ex": 1.0}')
    (run / "logs" / "ask-base-zero.log").write_text("asked on A\n")
    (run / "state.json").write_text(json.dumps({"seconds": {"ask-base-zero": 500.0},
                                                "machines": {"ask-base-zero": ["CPU A"]}}))
    args = argparse.Namespace(runs=str(tmp_path), name="r", dry_run=False, reask=["base-zero"],
                              configs=["base-zero"], ship_alpha=0.05)
    monkeypatch.setattr(loop, "machine", lambda: "CPU B")
    loop.Loop(args).reask()  # on B: A's answers move away; B asks again (here: B's answers written by hand)
    assert not (run / "ask-base-zero.jsonl").exists()
    (run / "ask-base-zero.jsonl").write_text(answers.replace("SELECT", "SELECT DISTINCT"))
    state = json.loads((run / "state.json").read_text())
    state["seconds"]["ask-base-zero"], state["machines"]["ask-base-zero"] = 600.0, ["CPU B"]
    (run / "state.json").write_text(json.dumps(state))

    man = carry.pack(run, tmp_path / "carry")
    assert "superseded/base-zero-1/ask-base-zero.jsonl.gz" in man["files"]
    assert "superseded/base-zero-1/record.json" in man["files"]
    fresh = tmp_path / "fresh" / "r"  # a new machine restores A's superseded answers with their text
    done = carry.restore(tmp_path / "carry", fresh, {"q1": {"question": "Q1?"}}, lambda rec: None)
    assert "superseded/base-zero-1/" in done
    got = [json.loads(ln) for ln in (fresh / "superseded" / "base-zero-1" / "ask-base-zero.jsonl").open()]
    assert [r["pred"] for r in got] == ["SELECT 0", "SELECT 1", "SELECT 2"] and got[1]["question"] == "Q1?"

    monkeypatch.setattr(loop, "machine", lambda: "CPU A")
    lp = loop.Loop(args)
    lp.reask()  # back on A: nothing to ask, A's set comes back, B's moves away
    assert (run / "ask-base-zero.jsonl").read_text() == answers
    assert (run / "logs" / "ask-base-zero.log").read_text() == "asked on A\n"
    assert not (run / "superseded" / "base-zero-1").exists()
    assert (run / "superseded" / "base-zero-2" / "machine.txt").read_text() == "CPU B\n"
    assert lp.asked_on("base-zero") == ["CPU A"] and lp.state["seconds"]["ask-base-zero"] == 500.0
    assert "came back from superseded/base-zero-1/" in lp.state["notes"][-1]
    # scored already: the report stays newer than the answers, so the loop does not score again
    assert (run / "eval-base-zero.json").stat().st_mtime > (run / "ask-base-zero.jsonl").stat().st_mtime
    assert carry.restore(tmp_path / "carry", run, {}, lambda rec: None) == []  # this folder's own record wins
    assert not (run / "superseded" / "base-zero-1").exists()
