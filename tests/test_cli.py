"""The CLI shell: every stage is listed, errors are one line with exit 2, a closed pipe exits quietly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
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
    proc = subprocess.run([sys.executable, "-m", "learnat_commands.main", "score", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and f"{bad}:2" in err[0] and "invalid JSON" in err[0]
    assert "Traceback" not in proc.stderr


def test_broken_pipe_exits_quietly(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(f'{{"id": "{i}", "pred": "SELECT {i}", "gold": "SELECT 1"}}\n'
                            for i in range(3000)))
    # `learnat score rows | head -1`: the reader goes away early.
    proc = subprocess.run(f"{sys.executable} -m learnat_commands.main score {rows} | head -n 1", shell=True,
                          capture_output=True, text=True)
    assert proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


# ------------------------------------------------------------------------------- the shell (issues 12, 13)

def _rows(tmp_path, n=3):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(f'{{"id": "{i}", "pred": "SELECT {i}", "gold": "SELECT 1"}}\n' for i in range(n)))
    return rows


def _one_error_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_output_to_a_folder_or_proc_is_one_line_exit_2(tmp_path):
    rows = _rows(tmp_path)
    folder = tmp_path / "out"
    folder.mkdir()
    res = runner.invoke(app, ["score", str(rows), "-o", str(folder)])
    assert res.exit_code == 2
    assert _one_error_line(res) == f"error: {folder}: is a directory, expected a file to write"
    assert not (tmp_path / "out.partial").exists()
    res = runner.invoke(app, ["score", str(rows), "-o", "/proc/x.jsonl"])
    assert res.exit_code == 2 and "/proc/x.jsonl: cannot" in _one_error_line(res)


def test_a_second_cli_writer_is_refused(tmp_path):
    rows, out = _rows(tmp_path), tmp_path / "scored.jsonl"
    hold = ("import sys\nfrom learnat_cli.jsonl import JsonlSink\ns = JsonlSink(sys.argv[1])\n"
            "print('ready', flush=True)\nsys.stdin.readline()\ns.close()\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        res = runner.invoke(app, ["score", str(rows), "-o", str(out)])
        assert res.exit_code == 2
        assert _one_error_line(res).startswith(f"error: {out}: another process is writing this file")
    finally:
        holder.communicate("\n", timeout=30)
    res = runner.invoke(app, ["score", str(rows), "-o", str(out)])
    assert res.exit_code == 0 and len(out.read_text().splitlines()) == 3


def test_ctrl_c_exits_130_without_traceback(tmp_path):
    import signal

    # `learnat score` reading stdin that stays open: it writes the first row, then waits for more.
    proc = subprocess.Popen([sys.executable, "-m", "learnat_commands.main", "score"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdin.write('{"id": "1", "pred": "SELECT 1", "gold": "SELECT 1"}\n')
    proc.stdin.flush()
    first = proc.stdout.readline()
    assert '"id": "1"' in first
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err


def test_run_maps_interrupt_and_os_errors():
    import typer

    from learnat_commands.common import run

    def boom(exc):
        def fn():
            raise exc
        return fn

    mini = typer.Typer()

    @mini.command()
    def go(kind: str) -> None:
        run(boom({"int": KeyboardInterrupt(), "os": IsADirectoryError(21, "Is a directory", "rep"),
                  "deep": RecursionError()}[kind]))

    assert runner.invoke(mini, ["int"]).exit_code == 130
    res = runner.invoke(mini, ["os"])
    assert res.exit_code == 2 and _one_error_line(res) == "error: rep: Is a directory"
    res = runner.invoke(mini, ["deep"])
    assert res.exit_code == 2 and "nested too deeply" in _one_error_line(res)


def test_error_messages_keep_square_brackets():
    import typer

    from learnat_cli.errors import LearnatError
    from learnat_commands.common import run

    mini = typer.Typer()

    @mini.command()
    def go() -> None:
        def fn():
            raise LearnatError("install it: pip install 'learnat[llamacpp]'")
        run(fn)

    res = runner.invoke(mini, [])
    assert _one_error_line(res) == "error: install it: pip install 'learnat[llamacpp]'"


def test_short_help_everywhere_and_completion():
    res = runner.invoke(app, ["-h"])
    assert res.exit_code == 0 and "--install-completion" in res.output and "--quiet" in res.output
    for name in STAGES:
        res = runner.invoke(app, [name, "-h"])
        assert res.exit_code == 0 and "Usage" in res.output, (name, res.output)


def test_quiet_silences_info_but_not_errors(tmp_path):
    rows = _rows(tmp_path)
    loud = runner.invoke(app, ["score", str(rows)])
    assert loud.exit_code == 0 and "learnat score" in loud.stderr  # the summary table
    quiet = runner.invoke(app, ["--quiet", "score", str(rows)])
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == loud.stdout
    res = runner.invoke(app, ["-q", "score", str(tmp_path / "missing.jsonl")])
    assert res.exit_code == 2 and "no such file" in _one_error_line(res)
    again = runner.invoke(app, ["score", str(rows)])  # --quiet does not stick to later runs
    assert "learnat score" in again.stderr


def test_the_suite_wide_traceback_check_catches_tracebacks():
    import click.testing
    from conftest import check_cli_result, check_process, traceback_checks_installed

    assert traceback_checks_installed()
    assert click.testing.CliRunner.invoke.__name__ == "_checked_invoke"

    class Fake:
        def __init__(self, output="", exception=None):
            self.output, self.stderr, self.exception = output, "", exception

    check_cli_result(Fake("ok\n", SystemExit(2)), "fine")
    with pytest.raises(AssertionError, match="traceback"):
        check_cli_result(Fake("Traceback (most recent call last):\n  ...\n"), "x")
    with pytest.raises(AssertionError, match="ended in ValueError"):
        check_cli_result(Fake("", ValueError("boom")), "x")
    with pytest.raises(AssertionError, match="traceback"):
        check_process(subprocess.CompletedProcess([], 1, "", "Traceback (most recent call last):\n"), "x")
    # and it is live: a real subprocess that prints one is caught
    with pytest.raises(AssertionError, match="printed a Python traceback"):
        subprocess.run([sys.executable, "-c", "import learnat_cli; raise SystemExit(1/0)"],
                       capture_output=True, text=True)


def test_shell_completion_completes_subcommands_and_options(tmp_path):
    import os
    import shutil

    # the script installed beside this interpreter (a pyenv shim on PATH needs the real HOME set below)
    exe = shutil.which("learnat", path=str(Path(sys.executable).parent)) or shutil.which("learnat")
    if exe is None:
        pytest.skip("the learnat script is not installed (pip install -e .)")
    env = dict(os.environ, _LEARNAT_COMPLETE="complete_bash", COMP_WORDS="learnat dec", COMP_CWORD="1")
    proc = subprocess.run([exe], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.split() == ["decompose"], proc.stderr
    env.update(COMP_WORDS="learnat ask --max-new", COMP_CWORD="2")
    proc = subprocess.run([exe], env=env, capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["--max-new-tokens"], proc.stderr
    env = dict(os.environ, SHELL="/bin/bash", HOME=str(tmp_path))
    # the shell is named: detection reads the parent processes, and a test run from a job has no shell above
    proc = subprocess.run([exe, "--show-completion", "bash"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "_LEARNAT_COMPLETE=complete_bash" in proc.stdout
