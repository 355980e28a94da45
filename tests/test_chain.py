"""The full training chain on tiny offline models: decompose (AST teacher) -> build-pairs -> sft -> mdpo, each
stage reading the previous stage's output files, with the loss going down on a small repeated batch.

It runs the real `learnat` subcommands in subprocesses.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def learnat(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return subprocess.run([sys.executable, "-m", "learnat_commands.main", *args], input=stdin,
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600, check=False)


def _make_db(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
        INSERT INTO singer VALUES (1, 'Ann', 'France', 31), (2, 'Bob', 'Spain', 45), (3, 'Cy', 'France', 52),
                                  (4, 'Di', 'Italy', 28);
    """)
    con.commit()
    con.close()
    return path


def test_decompose_buildpairs_sft_mdpo_chain(tiny_model_dir, tmp_path):
    db = _make_db(tmp_path / "concert.sqlite")
    examples = [
        {"id": "e1", "question": "How many singers from France are older than 30?", "db_path": str(db),
         "gold": "SELECT COUNT(*) FROM singer WHERE country = 'France' AND age > 30"},
        {"id": "e2", "question": "What are the names of singers older than 40, by age?", "db_path": str(db),
         "gold": "SELECT name FROM singer WHERE age > 40 ORDER BY age DESC"},
    ]
    ex = tmp_path / "examples.jsonl"
    ex.write_text("".join(json.dumps(e) + "\n" for e in examples))

    traj, trees = tmp_path / "traj.jsonl", tmp_path / "trees.jsonl"
    res = learnat("decompose", str(ex), "--teacher", "ast", "--trees", str(trees), "-o", str(traj))
    assert res.returncode == 0, res.stderr[-2000:]
    assert trees.stat().st_size > 0

    pairs, sft_rows = tmp_path / "pairs.jsonl", tmp_path / "sft.jsonl"
    res = learnat("build-pairs", str(trees), "-o", str(pairs))
    assert res.returncode == 0, res.stderr[-2000:]
    res = learnat("build-pairs", str(trees), "--sft", "-o", str(sft_rows))
    assert res.returncode == 0, res.stderr[-2000:]
    n_pairs = sum(1 for ln in pairs.read_text().splitlines() if ln.strip())
    n_sft = sum(1 for ln in sft_rows.read_text().splitlines() if ln.strip())
    assert n_pairs > 0 and n_sft > 0

    sft_out = tmp_path / "sft"
    res = learnat("sft", str(sft_rows), "--model", str(tiny_model_dir), "-o", str(sft_out), "--cpu",
                  "--max-steps", "8", "--batch-size", str(min(n_sft, 4)), "--grad-accum", "1", "--lr", "1e-2",
                  "--lora-r", "8")
    assert res.returncode == 0, res.stderr[-2000:]
    sft_man = json.loads(res.stdout)
    assert sft_man["steps"] == 8 and sft_man["final_loss"] < sft_man["first_loss"], sft_man

    mdpo_out = tmp_path / "mdpo"
    res = learnat("mdpo", str(pairs), "--model", sft_man["adapter_dir"], "-o", str(mdpo_out), "--cpu",
                  "--max-steps", "8", "--batch-size", str(min(n_pairs, 4)), "--grad-accum", "1",
                  "--lr", "5e-3")
    assert res.returncode == 0, res.stderr[-2000:]
    mdpo_man = json.loads(res.stdout)
    assert mdpo_man["init_adapter"] == str(sft_out)
    assert mdpo_man["steps"] == 8 and mdpo_man["final_loss"] < mdpo_man["first_loss"], mdpo_man
