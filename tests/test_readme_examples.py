"""The README's "Examples, stage by stage" block runs as written on the sample data (issue 13).

The commands are read from the README itself (so an example that drifts from the CLI fails here), the
sample paths substituted for the benchmark ones, and run in order in a temporary folder where ``samples``
links to the repository's samples. Substitutions (``SUBSTITUTE``) and the options that keep a run small
(``extra_args``: the tiny random model instead of the embedded 0.5B, two training steps on four rows, three
questions) are the only changes. The one-question ``ask`` may exit 1 (the random model writes no valid SQL)
but must print its answer record. Skipped, with the reason:

- the BIRD ``decompose`` (its data lives in ``../shared`` and its teacher, glm-4-plus, is a network API);
- ``mdpo --gpus 4 --deepspeed zero2`` (four GPUs): it must still fail with a one-line error, which is checked.

``pred.txt`` (the official prediction format), if an example reads it, is written from the batch ``ask``
predictions (``prepare``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# benchmark / user paths in the README -> the sample data
SUBSTITUTE = [
    ("../shared/spider/train_spider.json", "samples/questions.jsonl"),
    ("../shared/spider/dev.json", "samples/questions.jsonl"),
    ("../shared/spider/database", "samples"),
    ("--db bird/card_games --db-root ~/data", "--db samples/bookshop.sqlite"),
    ('"How many cards have a red border?"', '"How many books are there?"'),
]
# why a command is not run (matched against the command text after substitution)
SKIP = [
    ("--teacher glm-4-plus", "BIRD from ../shared with the glm-4-plus teacher: data outside the repo, "
                             "network"),
]
# commands expected to fail cleanly here (exit 1 or 2, one error line, no traceback)
MUST_FAIL = [("--gpus 4", "four GPUs")]


def extra_args(cmd: str, tiny: Path) -> str:
    """Options appended so that the run is small: tiny model, 2 training steps, 4 questions."""
    words = shlex.split(cmd)
    sub = words[1] if len(words) > 1 else ""
    if sub == "sft":
        return f" --model {tiny} --max-steps 2 --batch-size 2 --limit 4 --cpu"
    if sub == "mdpo":
        return " --max-steps 2 --batch-size 2 --limit 4 --cpu"
    if sub == "ask":
        more = f" --model {tiny} --max-new-tokens 16"
        return more + (" --limit 3" if "--input" in words else "")
    return ""


def readme_commands(readme: Path = REPO / "README.md") -> list[str]:
    """The shell commands of the README's "Examples, stage by stage" block: comments dropped, ``\\``
    continuations joined."""
    text = readme.read_text(encoding="utf-8")
    m = re.search(r"^## Examples, stage by stage\n(.*?)^## ", text, re.M | re.S)
    assert m, "README has no 'Examples, stage by stage' section"
    block = re.search(r"```bash\n(.*?)```", m.group(1), re.S)
    assert block, "the examples section has no ```bash block"
    joined = re.sub(r"\\\n\s*", "", block.group(1))
    lines = [re.sub(r"\s+#\s.*$", "", ln).strip() for ln in joined.splitlines()]  # trailing comments too
    return [ln for ln in lines if ln and not ln.startswith("#")]


def prepare(run: str, folder: Path) -> None:
    """Inputs a README command reads that no earlier README command writes: ``pred.txt`` (the official
    one-SQL-per-line format) from the batch ``ask`` predictions, one line per sample question (``SELECT 1``
    where there is no prediction)."""
    if "pred.txt" in run and not (folder / "pred.txt").exists():
        preds = {}
        if (folder / "preds.jsonl").exists():
            for ln in (folder / "preds.jsonl").read_text().splitlines():
                rec = json.loads(ln)
                preds[rec["id"]] = rec.get("pred")
        qs = [json.loads(ln) for ln in (REPO / "samples" / "questions.jsonl").read_text().splitlines() if ln]
        lines = [" ".join((preds.get(q["id"]) or "SELECT 1").split()) for q in qs]
        (folder / "pred.txt").write_text("".join(f"{s}\n" for s in lines))


def plan(tiny: Path) -> list[tuple[str, str, str]]:
    """(kind, original command, command to run): kind is run, fail or skip (then the third item is why)."""
    out = []
    for cmd in readme_commands():
        run = cmd
        for a, b in SUBSTITUTE:
            run = run.replace(a, b)
        skip = next((why for pat, why in SKIP if pat in run), None)
        if skip is None and ("../shared" in run or "~/" in run):
            skip = "needs data outside the repository"
        if skip:
            out.append(("skip", cmd, skip))
            continue
        # the extra options go on the last learnat of a pipeline, before any redirection
        kind = "fail" if any(pat in run for pat, _ in MUST_FAIL) else "run"
        if kind == "run":
            head, sep, tail = run.partition(" > ")
            stages = head.split(" | ")
            stages[-1] += extra_args(stages[-1], tiny)
            run = " | ".join(stages) + (sep + tail if sep else "")
        out.append((kind, cmd, run))
    return out


def test_readme_commands_are_found():
    cmds = readme_commands()
    assert len(cmds) >= 10 and all(c.startswith("learnat ") for c in cmds), cmds
    subs = {shlex.split(c)[1] for c in cmds}
    assert subs == {"decompose", "build-pairs", "sft", "mdpo", "index", "ask", "eval", "score"}


def test_readme_examples_run_in_order(tiny_model_dir, tmp_path):
    (tmp_path / "samples").symlink_to(REPO / "samples")
    env = dict(os.environ, OMP_NUM_THREADS="1", LEARNAT_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    # `learnat` as the README writes it, run from this checkout
    prelude = f'learnat() {{ {shlex.quote(sys.executable)} -m learnat_commands.main "$@"; }}\n'
    ran, skipped = [], []
    for kind, cmd, run in plan(tiny_model_dir):
        if kind == "skip":
            skipped.append((cmd, run))
            continue
        prepare(run, tmp_path)
        proc = subprocess.run(["bash", "-c", "set -o pipefail\n" + prelude + run], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        where = f"README command: {cmd}\nran: {run}\nstderr:\n{proc.stderr[-3000:]}"
        assert "Traceback (most recent call last)" not in proc.stderr, where
        if kind == "fail":
            assert proc.returncode in (1, 2), where
            errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
            assert len(errors) == 1, where
        elif shlex.split(run)[1] == "ask" and "--input" not in run:
            assert proc.returncode in (0, 1), where  # 1: the random model's answer did not run
            rec = json.loads(proc.stdout)
            assert rec["question"] == "How many books are there?" and "pred" in rec, where
        else:
            assert proc.returncode == 0, where
        ran.append(cmd)
    # what each step left behind, checked as the next step would use it
    for name in ("traj.jsonl", "trees.jsonl", "pairs.jsonl", "sft.jsonl", "preds.jsonl", "report.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "out" / "sft").is_dir() and (tmp_path / "out" / "mdpo").is_dir()
    assert (tmp_path / "spider-index").is_dir()
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*.lock"))
    assert [c for c, _ in skipped] == [c for c in readme_commands() if "glm-4-plus" in c]
    assert len(ran) == len(readme_commands()) - len(skipped)


if __name__ == "__main__":  # print the plan: python tests/test_readme_examples.py
    for kind, cmd, run in plan(Path("TINY_MODEL")):
        print(f"[{kind}] {cmd}\n       {run}")


def test_readme_python_api_example_runs(tmp_path, monkeypatch, capsys):
    """The README's "Python API" snippet, as written, on trees made from the sample questions."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^### Python API\n.*?```python\n(.*?)```", text, re.M | re.S)
    assert m, "README has no Python API example"
    monkeypatch.chdir(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "learnat_commands.main", "decompose",
                           str(REPO / "samples" / "questions.jsonl"), "--teacher", "ast", "--db-root",
                           str(REPO / "samples"), "-o", "traj.jsonl", "--trees", "trees.jsonl"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    exec(compile(m.group(1), "README.md (Python API)", "exec"), {"__name__": "readme"})
    pairs = [json.loads(ln) for ln in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all({"prompt", "chosen", "rejected", "margin"} <= set(p) for p in pairs)
    assert f"rows={len(pairs)}" in capsys.readouterr().out
