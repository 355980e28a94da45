"""Carry a ``make loop`` run from one machine to the next (``loop.py --carry DIR``): the small part of
``runs/<name>/`` that a later sitting cannot cheaply recompute, in a folder that can be committed.

A loop on the 2-core CPU machine takes several sittings (SFT alone is hours), and a sitting may start on a
new machine with an empty ``runs/``. The synthesis (decompose, pairs, SFT rows) is deterministic and takes a
minute, so it is recomputed; what is carried is what costs hours:

- ``state.json`` (wall time per step, notes, ask settings, machines), ``commands.sh`` and the steps' logs;
- each configuration's answers and graded records (``ask-*.jsonl``, ``eval-*.jsonl``, gzip) with the
  benchmark's own text left out (question, gold SQL, evidence: they come back from ``eval.jsonl``, which the
  loop rebuilds from the benchmark) and machine paths (``db_path``: rebuilt from the database options), and
  ``eval-*.json`` reports;
- each training stage: a finished stage's adapter (weights, configs, manifest, metrics), or an unfinished
  stage's last checkpoint (adapter, trainer state, scheduler, RNG). A checkpoint's optimizer is carried
  with its Adam moments left out (``state`` emptied, parameter groups kept): the moments are twice the
  adapter's size, and without ``optimizer.pt`` the trainer would not restore the learning-rate schedule
  either. Training resumed from a carried checkpoint therefore rebuilds its moments (noted in state.json).
  Tokenizer files are not carried (the base model's are the same); the reference adapter of MDPO/DPO
  (``ref/``) is the SFT adapter and is restored from it;
- answers made on another machine and asked again (``superseded/``, ``loop --reask``), gzip as above: a
  sitting back on that machine brings them back instead of asking again;
- the reference log-probs of the preference pairs (``ref-logps/``, ``mdpo --ref-cache``; gzip): without
  them the DPO ablation, or MDPO resumed on a new machine, runs the reference forward pass again (about
  half of an update's time on the 2-core CPU). Restore merges them into the run folder's store.

``carry.json`` lists every carried file with its sha256; restore checks them, and fills only what the run
folder lacks, so a run folder that survived on the same machine wins over the carry.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from learnat_cli.shipped import _sha256 as _sha  # the checksum the shipped student uses

STAGES = ("sft", "mdpo", "dpo")
SYNTHESIS = ("sft.jsonl", "pairs.jsonl")  # recomputed on a new machine, checked against the carry
TEXT_KEYS = ("question", "gold", "gold_as_written", "evidence", "db_path")  # benchmark text, machine paths
STAGE_FILES = ("adapter_model.safetensors", "adapter_config.json", "manifest.json", "metrics.json",
               "training_config.json", "learnat.json", "README.md")
CHECKPOINT_FILES = ("adapter_model.safetensors", "adapter_config.json", "trainer_state.json", "scheduler.pt",
                    "rng_state.pth", "training_args.bin")




def _last_checkpoint(stage_dir: Path) -> Path | None:
    """The newest complete checkpoint: the trainer writes ``trainer_state.json`` last, so one being written (a
    pack while training runs) is passed over."""
    cks = [p for p in stage_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()
           and (p / "trainer_state.json").exists()]
    return max(cks, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _complete(stage_dir: Path) -> bool:
    man = stage_dir / "manifest.json"
    return man.exists() and bool(json.loads(man.read_text()).get("complete", True))


def _write_gz(src: Path, dest: Path) -> None:
    """JSONL without TEXT_KEYS (None values kept), gzip with no timestamp (same records, same bytes)."""
    lines = []
    for ln in src.read_text(encoding="utf-8").splitlines():
        if ln.strip():
            rec = json.loads(ln)
            lines.append(json.dumps({k: v for k, v in rec.items() if k not in TEXT_KEYS or v is None},
                                    ensure_ascii=False))
    _gzip_to(dest, ("\n".join(lines) + "\n").encode() if lines else b"")


def _gzip_to(dest: Path, data: bytes) -> None:
    """``data`` gzipped into ``dest`` with no timestamp or name (the same data, the same bytes)."""
    with dest.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(data)


def _write_store_gz(src: Path, dest: Path) -> None:
    """An append-only store's complete lines (a line a running trainer is writing is left for next time),
    gzip with no timestamp."""
    lines = []
    for ln in src.read_text(encoding="utf-8").splitlines():
        try:
            json.loads(ln)
        except ValueError:
            continue
        lines.append(ln + "\n")
    _gzip_to(dest, "".join(lines).encode())


def _strip_optimizer(src: Path, dest: Path) -> None:
    import torch

    opt = torch.load(src, map_location="cpu", weights_only=True)
    torch.save({"state": {}, "param_groups": opt["param_groups"]}, dest)


def pack(run: Path, carry: Path) -> dict:
    """Write the carry of run folder ``run`` into ``carry`` (replacing an older one); returns its manifest."""
    tmp = carry.with_name(carry.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    links: dict[str, str] = {}
    if (run / "state.json").exists():
        shutil.copy2(run / "state.json", tmp / "state.json")
    # the steps' logs (small): a sitting packed while a step runs is counted on restore up to its log's last
    # write, as for a sitting killed on the same machine
    for src in [run / "commands.sh", *sorted((run / "logs").glob("*.log"))]:
        if src.is_file():
            (tmp / src.parent.relative_to(run)).mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tmp / src.relative_to(run))
    for src in sorted(run.glob("ask-*.jsonl")) + sorted(run.glob("eval-*.jsonl")):
        _write_gz(src, tmp / (src.name + ".gz"))
    for src in sorted(run.glob("eval-*.json")):
        shutil.copy2(src, tmp / src.name)
    # answers made on another machine and asked again here (``loop --reask``): they come back if a later
    # sitting runs on that machine again
    for d in sorted(p for p in (run / "superseded").glob("*") if p.is_dir()):
        for src in sorted(d.iterdir()):
            dest = tmp / "superseded" / d.name / src.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if src.name.endswith(".jsonl"):
                _write_gz(src, dest.with_name(src.name + ".gz"))
            elif src.is_file():
                shutil.copy2(src, dest)
    # the reference log-probs of the preference pairs (``mdpo --ref-cache``): minutes of forward passes per
    # update on a CPU, a few kB each, shared by MDPO and the DPO ablation
    for src in sorted((run / "ref-logps").glob("*.jsonl")):
        (tmp / "ref-logps").mkdir(exist_ok=True)
        _write_store_gz(src, tmp / "ref-logps" / (src.name + ".gz"))
    for stage in STAGES:
        d = run / stage
        if not d.is_dir():
            continue
        if _complete(d):
            src_dir, dest_dir, names = d, tmp / stage, STAGE_FILES
        else:
            ck = _last_checkpoint(d)
            if ck is None:
                continue
            src_dir, dest_dir, names = ck, tmp / stage / ck.name, CHECKPOINT_FILES
            if (d / "training_config.json").exists():
                (tmp / stage).mkdir(parents=True, exist_ok=True)
                shutil.copy2(d / "training_config.json", tmp / stage / "training_config.json")
        dest_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            if (src_dir / name).exists():
                shutil.copy2(src_dir / name, dest_dir / name)
        if (src_dir / "optimizer.pt").exists():
            _strip_optimizer(src_dir / "optimizer.pt", dest_dir / "optimizer.pt")
        ref = src_dir / "ref"
        if ref.is_dir() and (ref / "adapter_config.json").exists():
            (dest_dir / "ref").mkdir(exist_ok=True)
            shutil.copy2(ref / "adapter_config.json", dest_dir / "ref" / "adapter_config.json")
            # the frozen reference is the SFT adapter: carried once, restored from it
            links[str((dest_dir / "ref" / "adapter_model.safetensors").relative_to(tmp))] = \
                _sha(ref / "adapter_model.safetensors")
    files = {str(p.relative_to(tmp)): _sha(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    # the data the carried adapters were trained on: a later machine recomputes it and must get the same
    synthesis = {n: _sha(run / n) for n in SYNTHESIS if (run / n).exists()}
    manifest = {"run": run.name, "files": files, "from_sft": links, "synthesis": synthesis}
    (tmp / "carry.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(carry, ignore_errors=True)
    tmp.replace(carry)
    return manifest


def check_synthesis(carry: Path, run: Path) -> None:
    """Refuse to go on when the recomputed training data differs from what the carried adapters were trained
    on (the synthesis is deterministic, so this means other code or other benchmark files)."""
    man_path = carry / "carry.json"
    if not man_path.exists():
        return
    for name, sha in json.loads(man_path.read_text()).get("synthesis", {}).items():
        if (run / name).exists() and _sha(run / name) != sha:
            raise SystemExit(f"{run / name} differs from the one {carry} was trained on (sha256); the "
                             "carried adapters would resume on other data: start a new run (--name)")


def _restore_records(src: Path, dest: Path, examples: dict[str, dict], db_path: Callable[[dict], str | None]
                     ) -> None:
    out = []
    with gzip.open(src, "rt", encoding="utf-8") as f:
        for ln in f:
            if not ln.strip():
                continue
            rec = json.loads(ln)
            ex = examples.get(rec.get("id"), {})
            back = {k: ex[k] for k in TEXT_KEYS if k in ex}
            path = db_path({**ex, **rec})
            if path is not None:
                back["db_path"] = path
            out.append(json.dumps({"id": rec.get("id"), **back, **rec}, ensure_ascii=False))
    tmp = dest.with_suffix(".tmp")
    tmp.write_text("".join(ln + "\n" for ln in out), encoding="utf-8")
    tmp.replace(dest)


def _merge_lines(src_gz: Path, dest: Path) -> bool:
    """Append to ``dest`` the lines of ``src_gz`` it lacks (an append-only store this machine may have grown
    since the carry was packed); True when it added any."""
    have = set(dest.read_text(encoding="utf-8").splitlines()) if dest.exists() else set()
    with gzip.open(src_gz, "rt", encoding="utf-8") as f:
        new = [ln for ln in f.read().splitlines() if ln.strip() and ln not in have]
    if not new:
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    text = dest.read_text(encoding="utf-8") if dest.exists() else ""
    if text and not text.endswith("\n"):
        text += "\n"  # a line cut by a killed run stays unreadable (the store skips it), not glued to ours
    dest.write_text(text + "".join(ln + "\n" for ln in new), encoding="utf-8")
    return True


def restore(carry: Path, run: Path, examples: dict[str, dict], db_path: Callable[[dict], str | None]
            ) -> list[str]:
    """Fill run folder ``run`` from ``carry`` where it lacks a file; returns what was restored. ``examples``:
    the evaluation questions by id (their text goes back into the records); ``db_path(record)``: the
    database file of a record, as the loop's options resolve it."""
    man_path = carry / "carry.json"
    if not man_path.exists():
        return []
    man = json.loads(man_path.read_text())
    for rel, sha in man["files"].items():
        if _sha(carry / rel) != sha:
            raise SystemExit(f"{carry / rel}: its sha256 does not match carry.json (a damaged carry)")
    fresh = not (run / "state.json").exists()  # a new machine: else this run folder's own records win
    run.mkdir(parents=True, exist_ok=True)
    done: list[str] = []
    if (carry / "state.json").exists() and not (run / "state.json").exists():
        shutil.copy2(carry / "state.json", run / "state.json")
        done.append("state.json")
    for src in [carry / "commands.sh", *sorted((carry / "logs").glob("*.log"))]:
        dest = run / src.relative_to(carry)
        if src.is_file() and not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)  # with its modification time: the killed-sitting count reads it
    restored_preds = []
    for kind in ("ask", "eval"):  # answers first, then graded records and reports: eval is not redone
        for src in sorted(carry.glob(f"{kind}-*.jsonl.gz")):
            dest = run / src.name[:-3]
            if not dest.exists():
                _restore_records(src, dest, examples, db_path)
                done.append(dest.name)
                restored_preds.append(dest)
    newest = max((p.stat().st_mtime for p in restored_preds), default=0.0)
    for d in sorted(p for p in (carry / "superseded").glob("*") if p.is_dir()):
        # only into a new run folder: one this machine kept knows which sets it has brought back since
        if not fresh or (run / "superseded" / d.name).exists():
            continue
        (run / "superseded" / d.name).mkdir(parents=True)
        for src in sorted(d.iterdir()):
            if src.name.endswith(".jsonl.gz"):
                _restore_records(src, run / "superseded" / d.name / src.name[:-3], examples, db_path)
            else:
                shutil.copy2(src, run / "superseded" / d.name / src.name)
        done.append(f"superseded/{d.name}/")
    for src in sorted(carry.glob("eval-*.json")):
        dest = run / src.name
        if not dest.exists():
            shutil.copy2(src, dest)
            os.utime(dest, (newest + 1, newest + 1))  # newer than its answers: the loop does not score again
            done.append(dest.name)
    for src in sorted((carry / "ref-logps").glob("*.jsonl.gz")):
        if _merge_lines(src, run / "ref-logps" / src.name[:-3]):
            done.append(f"ref-logps/{src.name[:-3]}")
    notes = []
    restored: set[str] = set()
    for stage in STAGES:
        if (run / stage).exists() or not (carry / stage).is_dir():
            continue
        shutil.copytree(carry / stage, run / stage)
        done.append(f"{stage}/")
        restored.add(stage)
        ck = _last_checkpoint(run / stage)
        if ck is not None and not _complete(run / stage):
            notes.append(f"{stage}: resumed from {ck.name} carried from another machine; its Adam moments "
                         "were not carried and are rebuilt from there (learning-rate schedule and step kept)")
    if notes and (run / "state.json").exists():
        state = json.loads((run / "state.json").read_text())
        state.setdefault("notes", []).extend(notes)
        (run / "state.json").write_text(json.dumps(state, indent=1))
    sft_weights = run / "sft" / "adapter_model.safetensors"
    for rel, sha in man.get("from_sft", {}).items():
        dest = run / rel
        # only into a stage restored just now: a stage folder this machine kept is newer than the carry, and
        # the checkpoint the carry names may be gone from it (the trainer keeps only the last few)
        if dest.exists() or Path(rel).parts[0] not in restored or not sft_weights.exists():
            continue
        if _sha(sft_weights) != sha:
            raise SystemExit(f"{carry}: {rel} is not the SFT adapter of this run (sha256 differs)")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(sft_weights, dest)
    return done
