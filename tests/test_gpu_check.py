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
    assert deps["trl"]["found"] and not deps["trl"]["ok"]  # installed, but not the version asked for
    gc.print_table({"date": "d", "mode": "-", "cuda": {"torch": "x", "torch_cuda": None},
                    "dependencies": list(deps.values()), "ok": False, "total_s": 0.0})
    out = capsys.readouterr().out
    assert "MISSING" in out and "bring as wheels" in out and "'learnat-surely-missing-pkg>=1'" in out
    assert "'trl==0.1.*'" in out and "'torch==2.13.0'" not in out
    assert gc.QWEN05B["hidden_size"] == 896 and gc.QWEN05B["vocab_size"] == 151936


def test_dry_run_exits_0_with_one_table(capsys):
    """In-process (the interpreter is warm); the learnat run itself goes through accelerate launch."""
    pytest.importorskip("trl")
    rc = _module().main(["--dry-run", "--runs", "mdpo-lora-gc", "--steps", "2"])
    out, err = capsys.readouterr()
    assert rc == 0, out[-2000:] + err[-2000:]
    assert "mode: dry run (tiny model, CPU)" in out and "all checks passed" in out
    for needle in ("dep trl", "mdpo-lora-gc", "tok/s", "mdpo vs trl dpo step", "generate batch 2"):
        assert needle in out, out
    run_line = next(ln for ln in out.splitlines() if ln.startswith("mdpo-lora-gc"))
    assert "loss " in run_line and run_line.rstrip().endswith("ok")
    assert "Traceback" not in err and "{'train_runtime'" not in out + err
