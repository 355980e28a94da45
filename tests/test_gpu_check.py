"""`make gpu-check` (benchmarks/gpu_check.py): the dependency report, and the CPU dry run of the same steps
with the tiny model (sft/mdpo under accelerate launch, MDPO vs TRL DPO timing, batched generation), exit 0."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dependency_report_names_missing_packages_and_wheels(monkeypatch, capsys):
    gc = _module()
    monkeypatch.setattr(gc, "NEEDED", ["torch", "trl", "learnat-surely-missing-pkg"])
    monkeypatch.setattr(gc, "pins", lambda: {"torch": "torch==2.13.0", "trl": "trl==0.1.*",
                                             "learnat-surely-missing-pkg": "learnat-surely-missing-pkg>=1"})
    deps = {d["package"]: d for d in gc.check_dependencies()}
    missing = deps["learnat-surely-missing-pkg"]
    assert missing["found"] is None and not missing["ok"]
    # installed, but not the version pinned (the GPU image's own): reported, not failed
    assert deps["trl"]["found"] and deps["trl"]["ok"] and not deps["trl"]["matches"]
    gc.print_table({"date": "d", "mode": "-", "cuda": {"torch": "x", "torch_cuda": None},
                    "dependencies": list(deps.values()), "ok": False, "total_s": 0.0})
    out = capsys.readouterr().out
    assert "MISSING" in out and "bring as wheels" in out and "'learnat-surely-missing-pkg>=1'" in out
    assert "'trl==0.1.*'" not in out and "'torch==2.13.0'" not in out
    trl_line = next(ln for ln in out.splitlines() if ln.startswith("dep trl"))
    assert "other version" in trl_line and trl_line.rstrip().endswith("ok")
    assert gc.QWEN05B["hidden_size"] == 896 and gc.QWEN05B["vocab_size"] == 151936


def test_dry_run_exits_0_with_one_table(capsys):
    """In-process (the interpreter is warm); the learnat run itself goes through accelerate launch."""
    pytest.importorskip("trl")
    rc = _module().main(["--dry-run", "--runs", "mdpo-lora-gc", "--steps", "2"])
    out, err = capsys.readouterr()
    assert rc == 0, out[-2000:] + err[-2000:]
    assert "mode: dry run (tiny model, CPU)" in out and "all checks passed" in out
    for needle in ("dep trl", "mdpo-lora-gc", "tok/s", "mdpo vs trl dpo step", "generate batch 2",
                   "generate sample 8"):
        assert needle in out, out
    run_line = next(ln for ln in out.splitlines() if ln.startswith("mdpo-lora-gc"))
    assert "loss " in run_line and run_line.rstrip().endswith("ok")
    assert "Traceback" not in err and "{'train_runtime'" not in out + err


def test_plain_checkout_gets_learnat_commands_from_commands_folder(monkeypatch, tmp_path):
    """On the GPU machine learnat is not installed: the launcher's PYTHONPATH gets a folder where
    ``learnat_commands`` is the checkout's commands/ (pyproject's package-dir)."""
    gc = _module()
    assert gc.commands_path(tmp_path) == ""  # installed here: nothing to add
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    shim = Path(gc.commands_path(tmp_path))
    assert (shim / "learnat_commands" / "main.py").read_text() == (ROOT / "commands" / "main.py").read_text()
    assert gc.commands_path(tmp_path) == str(shim)  # a second call reuses it


def test_decode_profile_dry_run(capsys, tmp_path):
    """benchmarks/gpu_decode.py (the follow-up that found the cuDNN plan cost) runs its steps on CPU."""
    spec = importlib.util.spec_from_file_location("gpu_decode", ROOT / "benchmarks" / "gpu_decode.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out_json = tmp_path / "d.json"
    assert mod.main(["--dry-run", "--tokens", "4", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    for needle in ("cuDNN attention allowed: b1 cold", "learnat: b8 warm", "learnat: sample 8 cold",
                   "bare step b32", "top operators"):
        assert needle in out, out
    import json

    report = json.loads(out_json.read_text())
    assert all(g["ms_per_step"] > 0 for g in report["generation"]) and len(report["generation"]) == 9
