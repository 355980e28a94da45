"""Shared fixtures: a tiny random Qwen2 model (built once per session, offline, in seconds) and the samples.

And a suite-wide check (issue 12): no CLI run in the tests prints a Python traceback. It is installed when
this file is imported, not as a fixture a test could forget to request:
- every ``CliRunner.invoke`` (click's, which typer's calls) fails the test if the output holds a traceback or
  the run ended in an exception other than ``SystemExit`` (what the CLI would have printed as a traceback);
- every ``subprocess.run`` made from a test file whose command mentions ``learnat`` and whose output is
  captured is checked the same way (``Popen`` is not: tests that kill a process read its stderr themselves);
- an autouse fixture fails any test that leaves the checks uninstalled (e.g. by monkeypatching them away).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click.testing
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
TESTS = Path(__file__).resolve().parent
TRACEBACK = "Traceback (most recent call last)"


def _text(x: Any) -> str:
    if x is None:
        return ""
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)


def check_cli_result(result: Any, what: str) -> None:
    """Fail when a CliRunner result shows a traceback or an exception other than SystemExit."""
    out = _text(getattr(result, "output", "")) + _stderr_of(result)
    if TRACEBACK in out:
        raise AssertionError(f"{what} printed a Python traceback:\n{out[-4000:]}")
    exc = getattr(result, "exception", None)
    if exc is not None and not isinstance(exc, SystemExit):
        raise AssertionError(f"{what} ended in {type(exc).__name__}: {exc} (the CLI would print a traceback)")


def _stderr_of(result: Any) -> str:
    try:
        return _text(result.stderr)
    except (ValueError, AttributeError):
        return ""


def check_process(proc: Any, what: str) -> None:
    out = _text(proc.stdout) + _text(proc.stderr)
    if TRACEBACK in out:
        raise AssertionError(f"{what} printed a Python traceback:\n{out[-4000:]}")


_ORIG_INVOKE = click.testing.CliRunner.invoke
_ORIG_RUN = subprocess.run


def _checked_invoke(self: Any, cli: Any, args: Any = None, *a: Any, **kw: Any) -> Any:
    result = _ORIG_INVOKE(self, cli, args, *a, **kw)
    check_cli_result(result, f"CLI run {args!r}")
    return result


def _checked_run(*a: Any, **kw: Any) -> Any:
    proc = _ORIG_RUN(*a, **kw)
    caller = sys._getframe(1).f_code.co_filename
    cmd = a[0] if a else kw.get("args", "")
    cmd_text = cmd if isinstance(cmd, str) else " ".join(map(str, cmd))
    if "learnat" in cmd_text and Path(caller).resolve().is_relative_to(TESTS):
        check_process(proc, f"`{cmd_text[:200]}`")
    return proc


_checked_invoke.learnat_traceback_check = True  # type: ignore[attr-defined]
_checked_run.learnat_traceback_check = True  # type: ignore[attr-defined]
click.testing.CliRunner.invoke = _checked_invoke  # type: ignore[method-assign]
subprocess.run = _checked_run


def traceback_checks_installed() -> bool:
    return (getattr(click.testing.CliRunner.invoke, "learnat_traceback_check", False)
            and getattr(subprocess.run, "learnat_traceback_check", False))


@pytest.fixture(autouse=True)
def _no_traceback_check_bypass():
    assert traceback_checks_installed(), "the suite-wide traceback check was removed before this test"
    yield
    assert traceback_checks_installed(), "this test removed the suite-wide traceback check"


@pytest.fixture(scope="session")
def _suite_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("learnat-cache")


@pytest.fixture(autouse=True)
def _private_cache(request, monkeypatch, _suite_cache):
    """Tests write conversions, stores and caches under a cache of the suite's own (shared by its tests, so a
    tiny model is converted once), never into the user's ``$LEARNAT_CACHE``. Slow tests keep the user's: they
    load the embedded model, which is converted there once."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv("LEARNAT_CACHE", str(_suite_cache))
    yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    from learnat_cli.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES


@pytest.fixture()
def sample_db(tmp_path) -> Path:
    """A private copy of the sample SQLite database (tests may check it stays byte-identical)."""
    src = SAMPLES / "bookshop.sqlite"
    if not src.exists():
        pytest.skip("samples/bookshop.sqlite not built yet")
    dst = tmp_path / "bookshop.sqlite"
    shutil.copyfile(src, dst)
    return dst
