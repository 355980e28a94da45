"""Shared fixtures: a tiny random Qwen2 model (built once per session, offline, in seconds) and the samples."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"


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
