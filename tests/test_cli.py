"""The CLI shell: every stage is listed, errors are one line with exit 2, a closed pipe exits quietly."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from learnat_commands.main import app

runner = CliRunner()

STAGES = ["decompose", "score", "build-pairs", "sft", "mdpo", "index", "ask", "eval"]


def test_help_lists_all_eight_stages():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for name in STAGES:
        assert name in res.output


def test_each_stage_has_help():
    for name in STAGES:
        res = runner.invoke(app, [name, "--help"])
        assert res.exit_code == 0, (name, res.output)


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("learnat ")


def test_bad_jsonl_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"pred": "SELECT 1", "gold": "SELECT 1"}\nnot json\n')
    proc = subprocess.run([sys.executable, "-m", "learnat_commands.main", "score", str(bad)], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and f"{bad}:2" in err[0] and "invalid JSON" in err[0]
    assert "Traceback" not in proc.stderr


def test_broken_pipe_exits_quietly(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join('{"id": "%d", "pred": "SELECT %d", "gold": "SELECT 1"}\n' % (i, i)
                            for i in range(3000)))
    # `learnat score rows | head -1`: the reader goes away early.
    proc = subprocess.run(f"{sys.executable} -m learnat_commands.main score {rows} | head -n 1", shell=True,
                          capture_output=True, text=True)
    assert proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
