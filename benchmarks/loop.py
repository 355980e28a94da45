"""The LearNAT loop as one reproducible command (``make loop``, issue 15): synthesis (sec. 3.2) -> pairs
and SFT rows -> SFT -> MDPO (sec. 3.3) and a plain-DPO ablation -> ``ask`` with each student (sec. 3.4) ->
``eval`` -> a results table (Markdown and JSON) and a PNG of EX by hardness per configuration.

    python benchmarks/loop.py [--name NAME] [--scale full|tiny] [--spider ../shared/spider] [--train 2000]
        [--pairs 1200] [--eval 300] [--budget SECONDS] [--student MODEL] [--gpus N] [--teacher ast]
        [--configs base-zero,base-default,...] [--backend auto] [--runs runs] [--dry-run]

Every step is a ``learnat`` command line (written to ``runs/<name>/commands.sh`` as it runs, each one's
stderr to ``runs/<name>/logs/<step>.log``) and is skipped when its output is complete: the synthesis and the
``ask`` runs append and resume; training runs with ``--resume`` and, with ``--budget``, ``--max-time``, so
each stage stops at a checkpoint after that many seconds and the next ``make loop`` continues it (a loop
carried over several sittings; the summed wall time of each step is kept in ``runs/<name>/state.json``,
a sitting killed inside a step counted up to the last write of its log or output). Each student is asked and
scored as soon as it exists (the base first, then SFT, MDPO, DPO), so every sitting leaves results.
Outputs: ``runs/<name>/results.md``, ``results.json`` and ``ex_by_hardness.png``.

``--ship`` (part 4 of the issue): when the trained configuration with the best EX beats every base
configuration, its adapter is packaged as ``ask``'s default student (``learnat_cli.shipped.ship`` into
``--ship-to``, default ``learnat_cli/student``) with a model card written from the run (data, steps, settings,
the EX table, licences); otherwise nothing is shipped and the results say why. A lead in EX must also be more
than chance on the same questions (McNemar p <= ``--ship-alpha``, default 0.05): a student that is one or two
questions ahead of the base is not shipped in its place. Both must have been asked on one machine: ``ask``'s
int8 engine can answer differently on another CPU (run 2: the same base configuration, 47.7% EX on one,
49.7% on another), so a loop carried across machines asks the two again on one with ``--reask A,B``
(``make loop REASK=A,B``): answers made on another machine move to ``runs/<name>/superseded/`` (carried
too) and the configuration is asked here, unless ``superseded/`` holds a set made on this machine, which comes
back instead.

Scales: ``full`` samples ``--train`` questions of Spider train (seeded, databases present) for synthesis and
``--eval`` of Spider dev (never trained on); ``tiny`` runs the same chain with the tiny random test model on
the project's own sample database in a few minutes (the CI test of the loop checks files and that each stage
ran, not accuracy). ``--gpus N`` trains through ``accelerate launch`` (``learnat sft/mdpo --gpus N``), e.g. a
7B student on a GPU node: ``make loop GPUS=8 STUDENT=Qwen/Qwen2.5-Coder-7B-Instruct TRAIN=8000 PAIRS=20000``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# name: (student stage or None for the base model, ask --decompose mode, label)
CONFIGS = {
    "base-zero": (None, "never", "base, zero-shot (direct SQL)"),
    # (the name is older than ask's default for the plain 0.5B, which is now direct SQL: learnat_cli.shipped)
    "base-default": (None, "auto", "base, adaptive fast path"),
    "sft-decompose": ("sft", "always", "SFT, decomposition"),
    # the SFT rows follow ask's adaptive rule (simple questions train the direct prompt), so this is the SFT
    # student's own path and what MDPO is measured against
    "sft-auto": ("sft", "auto", "SFT, adaptive path"),
    "mdpo-decompose": ("mdpo", "always", "SFT+MDPO, decomposition"),
    "mdpo-auto": ("mdpo", "auto", "SFT+MDPO, adaptive path"),
    "mdpo-direct": ("mdpo", "never", "SFT+MDPO, direct SQL"),
    "dpo-decompose": ("dpo", "always", "SFT+DPO (gamma=0), decomposition"),
}
ORDER = ("easy", "medium", "hard", "extra", "simple", "moderate", "challenging")  # Spider's, then BIRD's


def _carry_module():
    """benchmarks/carry.py, beside this script (run as a script or loaded from its path by the tests)."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import carry

    return carry


def machine() -> str:
    """This CPU's model, core count and vector extensions (from /proc/cpuinfo where there is one)."""
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = ln.partition(":")
            if key.strip() == "model name":
                model = val.strip()
            elif key.strip() == "flags":
                flags = {f for f in val.split() if f.startswith(("avx", "amx"))}
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores" + (f", {' '.join(sorted(flags))}" if flags else "")


def levels_of(rows: list[dict]) -> list[str]:
    seen = {lv for r in rows for lv in r["by_hardness"]}
    return [lv for lv in ORDER if lv in seen] + sorted(seen - set(ORDER))


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(1 for ln in f if ln.strip())


class Loop:
    def __init__(self, args):
        self.a = args
        self.dir = Path(args.runs) / args.name
        self.logs = self.dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / "state.json"
        self.carry = Path(args.carry) if getattr(args, "carry", None) else None
        if self.carry is not None and not args.dry_run and not getattr(args, "pack", False):
            self.restore()
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        self.ran: list[str] = []
        if not getattr(args, "pack", False):  # --pack may run beside a live loop: its step is not killed
            self._count_killed_sitting()

    # ---------------------------------------------------------------------------------------------- helpers
    def save_state(self) -> None:
        self.state_path.write_text(json.dumps(self.state, indent=1))

    def _count_killed_sitting(self) -> None:
        """A sitting killed during a step (a session's end, a reboot) left its start in ``state["running"]``:
        its time is counted up to the last write of that step's log, with a note saying so."""
        run = self.state.pop("running", None)
        if not run or self.a.dry_run:
            return
        # the last sign of life: the step's log (training logs every step) or its output (ask appends answers)
        marks = [self.logs / f"{run['step']}.log", *(Path(w) for w in run.get("watch", []))]
        end = max([m.stat().st_mtime for m in marks if m.exists()] + [run["since"]])
        secs = round(max(0.0, end - run["since"]), 1)
        self.state.setdefault("seconds", {}).setdefault(run["step"], 0.0)
        self.state["seconds"][run["step"]] += secs
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run["since"]))
        self.state.setdefault("notes", []).append(
            f"{run['step']}: the sitting started {start} ended without the loop (killed); {secs} s counted, "
            "up to the last write of its log or output")
        self.save_state()

    def learnat(self, step: str, *args: str, stdout: Path | None = None, watch: Path | None = None) -> None:
        cmd = ["learnat", *args]
        print(f"[loop] {step}: {' '.join(cmd)}", file=sys.stderr, flush=True)
        if self.a.dry_run:
            self.ran.append(step)  # a dry run goes on as if the step had completed
            return  # commands.sh holds what ran, not what a dry run would run
        with (self.dir / "commands.sh").open("a") as f:
            redirect = f" > {shlex.quote(str(stdout))}" if stdout else ""
            f.write(" ".join(shlex.quote(c) for c in cmd) + redirect + "\n")
        env = dict(os.environ)
        if self.a.scale == "tiny":
            env.setdefault("OMP_NUM_THREADS", "1")
        t0 = time.time()
        # the machine each step ran on: int8 kernels differ by instruction set, so answers can too
        self.state.setdefault("machines", {}).setdefault(step, [])
        if machine() not in self.state["machines"][step]:
            self.state["machines"][step].append(machine())
        self.state["running"] = {"step": step, "since": t0, "watch": [str(watch)] if watch else []}
        self.save_state()
        with (self.logs / f"{step}.log").open("a") as err, \
                (stdout.open("w") if stdout else open(os.devnull, "w")) as out:
            rc = subprocess.run([sys.executable, "-m", "learnat_commands.main", *args], stdout=out,
                                stderr=err, env=env, cwd=REPO, check=False).returncode
        self.state.pop("running", None)
        self.state.setdefault("seconds", {}).setdefault(step, 0.0)
        self.state["seconds"][step] += round(time.time() - t0, 1)
        self.save_state()
        self.ran.append(step)
        self.pack()
        if rc != 0:
            tail = (self.logs / f"{step}.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise SystemExit(f"[loop] step {step} failed (exit {rc}); {self.logs / f'{step}.log'}:\n"
                             + "\n".join(tail))

    # ------------------------------------------------------------------------------------------------ carry
    def db_path(self, rec: dict) -> str | None:
        """The database file of an evaluation record, as this run's database options resolve it."""
        if self.a.scale == "tiny":
            return str(REPO / "samples" / "bookshop.sqlite")
        db = rec.get("db_id")
        return str(Path(self.a.spider) / "database" / db / f"{db}.sqlite") if db else None

    def restore(self) -> None:
        """Fill the run folder from ``--carry`` where it lacks a file (benchmarks/carry.py)."""
        carry = _carry_module()
        _, evals, _ = self.data()
        examples = {r["id"]: r for r in map(json.loads, evals.read_text().splitlines()) if r.get("id")}
        done = carry.restore(self.carry, self.dir, examples, self.db_path)
        if done:
            print(f"[loop] restored from {self.carry}: {', '.join(done)}", file=sys.stderr, flush=True)

    def pack(self) -> None:
        """Write ``--carry`` from the run folder (after every step, and with ``--pack`` alone)."""
        if self.carry is None or self.a.dry_run:
            return
        man = _carry_module().pack(self.dir, self.carry)
        size = sum((self.carry / f).stat().st_size for f in man["files"])
        print(f"[loop] carry {self.carry}: {len(man['files'])} files, {size / 1e6:.1f} MB", file=sys.stderr,
              flush=True)

    # ------------------------------------------------------------------------------------------------- data
    def data(self) -> tuple[Path, Path, list[str]]:
        """train.jsonl / eval.jsonl (written once) and the database options of every command."""
        train, evals = self.dir / "train.jsonl", self.dir / "eval.jsonl"
        if self.a.scale == "tiny":
            db = REPO / "samples" / "bookshop.sqlite"
            if not train.exists():
                rows = (REPO / "samples" / "questions.jsonl").read_text().splitlines(keepends=True)
                train.write_text("".join(rows))
                evals.write_text("".join(rows[::3]))  # every difficulty, few questions
            return train, evals, ["--db", str(db)]
        from learnat_cli.datasets import load_examples

        spider = Path(self.a.spider)
        root = spider / "database"
        if not train.exists():
            rows = [e for e in load_examples(spider / "train_spider.json")
                    if (root / e.db_id / f"{e.db_id}.sqlite").exists()]
            pick = random.Random(self.a.seed).sample(rows, min(self.a.train, len(rows)))
            tmp = train.with_suffix(".tmp")
            tmp.write_text("".join(e.model_dump_json(exclude_none=True) + "\n" for e in pick))
            tmp.replace(train)
        if not evals.exists():
            dev = list(load_examples(spider / "dev.json"))
            pick = random.Random(self.a.seed).sample(dev, min(self.a.eval, len(dev)))
            tmp = evals.with_suffix(".tmp")
            tmp.write_text("".join(e.model_dump_json(exclude_none=True) + "\n" for e in pick))
            tmp.replace(evals)
        return train, evals, ["--db-root", str(root)]

    # ------------------------------------------------------------------------------------------------ steps
    def train_flags(self, stage: str) -> list[str]:
        tiny = self.a.scale == "tiny"
        flags = ["--resume", "--save-steps", "2" if tiny else "5"]
        if self.a.budget:
            flags += ["--max-time", str(self.a.budget)]
        if self.a.gpus > 1:
            flags += ["--gpus", str(self.a.gpus)]
        if tiny:
            flags += ["--cpu", "--max-steps", "3", "--batch-size", "2", "--grad-accum", "1", "--lr", "1e-2",
                      "--lora-r", "4", "--max-length", "4096"]
        else:
            flags += ["--epochs", str(self.a.epochs), "--batch-size", str(self.a.batch_size),
                      "--grad-accum", str(self.a.grad_accum), "--max-length", "2048"]
            flags += ["--group-by-length"] if self.a.batch_size > 1 else []
            if self.a.lora_layers:
                flags += ["--lora-layers", str(self.a.lora_layers)]
        if stage == "sft":
            flags += ["--lr", "2e-4"] if not tiny else []
        else:
            flags += ["--beta", "0.1", "--gamma", "0" if stage == "dpo" else "1"]
            # the reference log-probs MDPO computes serve the DPO ablation (same pairs, same SFT reference);
            # kept in the run folder, the carry takes them to the next machine
            flags += ["--ref-cache", str(self.dir / "ref-logps")]
            flags += ["--lr", str(self.a.pref_lr)] if not tiny else []
        return flags

    def pair_sample(self, pairs: Path) -> Path:
        """``--pairs`` preference pairs drawn (seeded) from all the trees' pairs, in file order: MDPO and the
        DPO ablation train on the same pairs, spread over every tree rather than the first trees' pairs."""
        out = self.dir / "pairs-train.jsonl"
        if self.a.dry_run or out.exists() and out.stat().st_mtime >= pairs.stat().st_mtime:
            return out
        lines = [ln for ln in pairs.read_text(encoding="utf-8").splitlines() if ln.strip()]
        keep = sorted(random.Random(self.a.seed).sample(range(len(lines)), min(self.a.pairs, len(lines))))
        out.write_text("".join(lines[i] + "\n" for i in keep), encoding="utf-8")
        return out

    def trained(self, stage: str) -> bool:
        if self.a.dry_run and stage in self.ran:
            return True
        man = self.dir / stage / "manifest.json"
        if not man.exists():
            return False
        return bool(json.loads(man.read_text()).get("complete", True))

    def run(self) -> dict:
        a = self.a
        train, evals, dbopts = self.data()
        n_train = count_lines(train)
        student = ["--model", a.student] if a.student else []
        if a.scale == "tiny" and not a.student:
            from learnat_cli.tiny import build_tiny_model

            tiny_dir = self.dir / "tiny-model"
            if not (tiny_dir / "config.json").exists():
                build_tiny_model(tiny_dir)
            student = ["--model", str(tiny_dir)]

        # 1. synthesis: decompositions with their search trees (appends, resumes)
        decomp, trees = self.dir / "decompositions.jsonl", self.dir / "trees.jsonl"
        if count_lines(decomp) < n_train:
            self.learnat("decompose", "decompose", str(train), "--teacher", a.teacher, *dbopts, "--trees",
                         str(trees), "--schema-format", a.schema_format,
                         *(["--unalias"] if a.unalias else []), "-o", str(decomp))
        # 2. preference pairs and SFT rows (the same prompts as ask)
        pairs, sft_rows = self.dir / "pairs.jsonl", self.dir / "sft.jsonl"
        if not pairs.exists() or pairs.stat().st_mtime < trees.stat().st_mtime:
            self.learnat("build-pairs", "build-pairs", str(trees), "-o", str(pairs))
        if not sft_rows.exists() or sft_rows.stat().st_mtime < trees.stat().st_mtime:
            self.learnat("build-pairs-sft", "build-pairs", str(trees), "--sft", "-o", str(sft_rows))
        if self.carry is not None and not a.dry_run:
            _carry_module().check_synthesis(self.carry, self.dir)
        self.reask()
        students = {CONFIGS[c][0] for c in a.configs} - {None}
        students |= {"sft"} if students else set()  # MDPO and DPO start from the SFT adapter
        # the seeded pairs MDPO and DPO train on, drawn with the pairs: a run restored from its carry (which
        # recomputes the synthesis) has the sample its training used, and results.md counts it
        sample = self.pair_sample(pairs) if students & {"mdpo", "dpo"} else None
        # 3-7. each student in turn (the base, SFT, then MDPO and the plain-DPO ablation from the same SFT
        # adapter): trained, then every configuration that uses it asked and scored at once, so a loop carried
        # over several sittings has results for each student as soon as it exists, not after the last training
        for stage in (None, "sft", "mdpo", "dpo"):
            if stage is not None and stage not in students:
                continue
            if stage is not None and not self.trained(stage):
                if stage == "sft":
                    self.learnat("sft", "sft", str(sft_rows), *student, "-o", str(self.dir / "sft"),
                                 *self.train_flags("sft"))
                else:
                    self.learnat(stage, "mdpo", str(sample), "--model",
                                 str(self.dir / "sft"), "-o", str(self.dir / stage), *self.train_flags(stage))
                if not self.trained(stage):
                    break  # its --budget ran out in this sitting: the next one resumes it
            for name in a.configs:
                if CONFIGS[name][0] == stage:
                    self.ask_and_eval(name, evals, dbopts, student)
        out = self.summarize()
        if a.ship and not a.dry_run:
            out["ship"] = self.ship(out)
            (self.dir / "results.json").write_text(json.dumps(out, indent=1))
            (self.dir / "results.md").write_text(markdown(out))
        return out

    def ask_settings(self) -> dict:
        """The ask settings every configuration of this run is answered with, kept in state.json so that
        configurations asked in different sittings stay comparable. A run whose answers predate the record
        was asked before ``ask --rebind`` existed: without it."""
        rec = self.state.get("ask")
        if rec is None:
            made = any((self.dir / f"ask-{n}.jsonl").exists() for n in CONFIGS)
            rec = {"rebind": False} if made else {"rebind": True if self.a.rebind is None else self.a.rebind}
            self.state["ask"] = rec
            if not self.a.dry_run:
                self.save_state()
        if self.a.rebind is not None and self.a.rebind != rec["rebind"]:
            have = "--rebind" if rec["rebind"] else "--no-rebind"
            raise SystemExit(f"loop {self.a.name}: its answers were made with {have}; pass that, or start a "
                             "new run (--name)")
        return rec

    def asked_on(self, name: str) -> list[str]:
        """The machines configuration ``name`` was asked on (state.json; empty when not recorded)."""
        return list(self.state.get("machines", {}).get(f"ask-{name}", []))

    def reask(self) -> None:
        """``--reask NAMES``: each named configuration whose answers were not all made on this machine is
        asked again here. Its answers, graded records, report and logs move to ``superseded/<name>-<k>/``
        (with the machines they came from and their time records, ``machine.txt`` and ``record.json``), its
        time and machine records are dropped, and a note says so; the steps below then ask and score it as
        for a new run. When ``superseded/`` already holds a set of its answers made on this machine, at least
        as many as the set it replaces (a run that went from this machine to another and back), that set
        comes back instead and the loop only asks what it lacks."""
        for name in getattr(self.a, "reask", []):
            if name not in self.a.configs:
                continue  # not asked in this run: its answers stay as they are
            preds = self.dir / f"ask-{name}.jsonl"
            if not preds.exists() or self.asked_on(name) == [machine()]:
                continue
            where = "; ".join(self.asked_on(name)) or "a machine not recorded"
            print(f"[loop] reask {name}: its answers were made on {where}", file=sys.stderr, flush=True)
            if self.a.dry_run:
                continue
            back = self._superseded_from_here(name, count_lines(preds))
            dest = self._supersede(name, where)
            cpu = machine().split(",")[0]
            if back is not None:
                self._bring_back(name, back)
                self.state.setdefault("notes", []).append(
                    f"{name}: the answers made on {cpu} came back from superseded/{back.name}/ "
                    f"(--reask); those made on {where} are in superseded/{dest.name}/")
                print(f"[loop] reask {name}: its answers made on this machine came back from "
                      f"superseded/{back.name}/", file=sys.stderr, flush=True)
            else:
                self.state.setdefault("notes", []).append(
                    f"{name}: asked again on {cpu} (--reask); the answers made on {where} "
                    f"are in superseded/{dest.name}/")
            self.save_state()

    def _supersede(self, name: str, where: str) -> Path:
        """Move configuration ``name``'s answers, graded records, report and logs to a new
        ``superseded/<name>-<k>/`` with their machines and time records; drop those records from state."""
        k = 1
        while (self.dir / "superseded" / f"{name}-{k}").exists():
            k += 1
        dest = self.dir / "superseded" / f"{name}-{k}"
        dest.mkdir(parents=True)
        files = [self.dir / f"{kind}-{name}{ext}" for kind, ext in
                 (("ask", ".jsonl"), ("eval", ".json"), ("eval", ".jsonl"))]
        for f in files + [self.logs / f"ask-{name}.log", self.logs / f"eval-{name}.log"]:
            if f.exists():
                f.replace(dest / f.name)
        (dest / "machine.txt").write_text(where + "\n")
        record: dict = {"seconds": {}, "machines": {}}
        for step in (f"ask-{name}", f"eval-{name}"):
            for key in ("seconds", "machines"):
                val = self.state.get(key, {}).pop(step, None)
                if val is not None:
                    record[key][step] = val
        (dest / "record.json").write_text(json.dumps(record, indent=1) + "\n")
        return dest

    def _superseded_from_here(self, name: str, n: int) -> Path | None:
        """The newest ``superseded/<name>-<k>/`` whose answers were all made on this machine and number at
        least ``n`` (as many as the set they would replace), or None."""
        found = []
        for d in (self.dir / "superseded").glob(f"{name}-*"):
            k = d.name[len(name) + 1:]
            if (k.isdigit() and (d / "machine.txt").exists()
                    and (d / "machine.txt").read_text().strip() == machine()
                    and count_lines(d / f"ask-{name}.jsonl") >= n):
                found.append((int(k), d))
        return max(found)[1] if found else None

    def _bring_back(self, name: str, src: Path) -> None:
        """Put a superseded set of answers (and what was scored and logged of them) back in place, with
        the time and machine records it left with; the folder goes."""
        for f in sorted(src.iterdir()):
            if f.name.endswith(".log"):
                self.logs.mkdir(parents=True, exist_ok=True)
                f.replace(self.logs / f.name)
            elif f.name.startswith(("ask-", "eval-")):
                f.replace(self.dir / f.name)
        record = json.loads((src / "record.json").read_text()) if (src / "record.json").exists() else {}
        for key in ("seconds", "machines"):
            self.state.setdefault(key, {}).update(record.get(key, {}))
        self.state.setdefault("machines", {}).setdefault(f"ask-{name}", [machine()])
        report, graded = self.dir / f"eval-{name}.json", self.dir / f"eval-{name}.jsonl"
        preds = self.dir / f"ask-{name}.jsonl"
        if report.exists() and graded.exists():  # scored already: keep the report newer than the answers
            t = preds.stat().st_mtime + 1
            os.utime(report, (t, t))
        shutil.rmtree(src)

    def ask_and_eval(self, name: str, evals: Path, dbopts: list[str], student: list[str]) -> None:
        """``ask`` (appends, resumes) then ``eval`` for one configuration."""
        a = self.a
        stage, mode, _ = CONFIGS[name]
        preds, report = self.dir / f"ask-{name}.jsonl", self.dir / f"eval-{name}.json"
        # base configurations name no adapter explicitly: a shipped trained student is not the base
        adapter = ["--adapter", str(self.dir / stage) if stage else "none"]
        if count_lines(preds) < count_lines(evals):
            extra = ["--max-new-tokens", "16", "--retries", "0"] if a.scale == "tiny" else []
            rebind = "--rebind" if self.ask_settings()["rebind"] else "--no-rebind"
            self.learnat(f"ask-{name}", "ask", "--input", str(evals), *dbopts, *student, *adapter,
                         "--decompose", mode, "--backend", a.backend, "--schema-format", a.schema_format,
                         rebind, *extra, "-o", str(preds), watch=preds)
        if not report.exists() or report.stat().st_mtime < preds.stat().st_mtime:
            self.learnat(f"eval-{name}", "eval", str(preds), *dbopts, "--metric", "spider", "--report",
                         str(report), stdout=self.dir / f"eval-{name}.jsonl")

    # ------------------------------------------------------------------------------------------------ ship
    def ship(self, out: dict) -> dict:
        """Package the winning adapter (module docstring); returns what was decided."""
        from learnat_cli.shipped import ship

        winner, base = ship_decision(out["results"])
        if winner is None:
            if base is None or not any(CONFIGS[r["config"]][0] for r in out["results"]):
                why = "the base and a trained configuration must both be evaluated first"
            else:
                why = (f"no trained configuration beats the best base one ({base['label']}, "
                       f"{base['ex']:.1f}% EX)")
            return {"shipped": False, "why": why}
        mine, theirs = self.asked_on(winner["config"]), self.asked_on(base["config"])
        if not self.a.dry_run and (len(mine) != 1 or mine != theirs):
            # the int8 engine's kernels differ by CPU, so can the answers: on run 2, the same base
            # configuration scored 47.7 on one CPU and 49.7 on another (docs/BENCHMARKS.md)
            return {"shipped": False, "why": (
                f"{winner['label']} and the best base configuration ({base['label']}) were not asked on one "
                f"machine ({'; '.join(mine) or 'not recorded'} vs {'; '.join(theirs) or 'not recorded'}): "
                f"ask them again on this one with --reask {winner['config']},{base['config']}")}
        vs = winner.get("vs_base") or {"fixed": 0, "broken": 0, "p": 1.0}
        if vs["p"] > self.a.ship_alpha:
            lead = winner["ex"] - base["ex"]
            return {"shipped": False, "why": (
                f"{winner['label']} leads the best base configuration ({base['label']}, "
                f"{base['ex']:.1f}% EX) by {lead:+.1f} points, not a measurable win: on the same questions "
                f"it fixes {vs['fixed']} and breaks {vs['broken']}, McNemar p {vs['p']:.3g} > "
                f"{self.a.ship_alpha:g}")}
        stage, mode, _ = CONFIGS[winner["config"]]
        student = self.a.student or (str(self.dir / "tiny-model") if self.a.scale == "tiny"
                                     else "qwen2.5-coder-0.5b")
        meta = {"schema_format": self.a.schema_format, "decompose": mode, "stage": stage,
                "base_model": student, "run": self.a.name,
                "ex": winner["ex"], "base_ex": base["ex"], "eval_questions": winner["n"]}
        done = ship(self.dir / stage, self.a.ship_to, meta, model_card(out, winner, base, self.dir))
        return {"shipped": True, "config": winner["config"], "ex": winner["ex"], "base_ex": base["ex"],
                **done}

    # ---------------------------------------------------------------------------------------------- results
    def summarize(self) -> dict:
        rows = []
        for name in self.a.configs:
            report, preds = self.dir / f"eval-{name}.json", self.dir / f"ask-{name}.jsonl"
            if not report.exists():
                continue
            rep = json.loads(report.read_text())
            recs = [json.loads(ln) for ln in preds.read_text().splitlines() if ln.strip()]
            lat = sorted(r.get("latency_s", 0.0) for r in recs)
            toks = [r["tokens"] for r in recs if r.get("tokens") is not None]
            by = rep.get("by_difficulty", {})
            stage = CONFIGS[name][0]
            rows.append({
                "config": name, "label": CONFIGS[name][2], "n": rep.get("n_items"),
                "ex": round(100 * rep.get("accuracy", 0.0), 1),
                "by_hardness": {lv: round(100 * v["accuracy"], 1) for lv, v in by.items() if lv != "all"},
                "count_by_hardness": {lv: v["count"] for lv, v in by.items() if lv != "all"},
                "p50_s": round(statistics.median(lat), 2) if lat else None,
                "p95_s": round(lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))], 2) if lat else None,
                "tokens_mean": round(statistics.mean(toks), 1) if toks else None,
                "decomposed": sum(bool(r.get("decomposed")) for r in recs),
                "rebound": sum(bool(r.get("rebound_from")) for r in recs),
                "train_s": self._train_seconds(stage),
                "failures": rep.get("failures", {}),
            })
            scored = self.dir / f"eval-{name}.jsonl"
            graded = [json.loads(ln) for ln in scored.open() if ln.strip()] if scored.exists() else []
            asked = {r["id"]: r for r in recs if "id" in r}
            # each graded answer with its steps, for paired(): outcomes, and what the lost ones fail on
            # (the question from the answer: eval's own records do not repeat it)
            rows[-1]["_graded"] = {r["id"]: {**r, "steps": (a := asked.get(r["id"], {})).get("steps") or [],
                                             "decomposed": bool(a.get("decomposed")),
                                             "question": a.get("question") or r.get("question")}
                                   for r in graded if "id" in r}
            rows[-1]["tables"] = table_choice(graded)
        targets = paired(rows)
        student = self.a.student or ("tiny random model" if self.a.scale == "tiny" else
                                     "embedded Qwen2.5-Coder-0.5B-Instruct")
        out = {"name": self.a.name, "scale": self.a.scale, "student": student,
               "train_questions": count_lines(self.dir / "train.jsonl"),
               "decompositions": count_lines(self.dir / "decompositions.jsonl"),
               "sft_rows": count_lines(self.dir / "sft.jsonl"),
               "pairs": count_lines(self.dir / "pairs.jsonl"),
               "pairs_used": count_lines(self.dir / "pairs-train.jsonl"),
               "training": {s: self._manifest(s) for s in ("sft", "mdpo", "dpo")},
               "seconds": self.state.get("seconds", {}), "ask": self.state.get("ask"), "results": rows,
               "machines": self.state.get("machines", {}),
               "targets": targets, "ran_this_time": self.ran}
        (self.dir / "results.json").write_text(json.dumps(out, indent=1))
        (self.dir / "results.md").write_text(markdown(out))
        if rows:
            plot(rows, self.dir / "ex_by_hardness.png", f"{self.a.name}: EX by hardness")
        return out

    def _manifest(self, stage: str) -> dict | None:
        p = self.dir / stage / "manifest.json"
        if not p.exists():
            return None
        m = json.loads(p.read_text())
        keep = ("examples", "steps", "max_steps", "complete", "first_loss", "final_loss", "tokens_per_s",
                "runtime_s")
        return {k: m.get(k) for k in keep}

    def _train_seconds(self, stage: str | None) -> float | None:
        if stage is None:
            return None
        sec = self.state.get("seconds", {})
        chain = ["sft"] + ([stage] if stage != "sft" else [])
        return round(sum(sec.get(s, 0.0) for s in chain), 1)


def ship_decision(rows: list[dict]) -> tuple[dict | None, dict | None]:
    """``(winner, best base)``: the trained configuration with the highest EX (the first in CONFIGS order on a
    tie) if it beats the best base configuration, else None; and that base configuration."""
    base = [r for r in rows if CONFIGS[r["config"]][0] is None]
    trained = [r for r in rows if CONFIGS[r["config"]][0] is not None]
    best_base = max(base, key=lambda r: r["ex"]) if base else None
    if not trained or best_base is None:
        return None, best_base
    best = max(trained, key=lambda r: r["ex"])
    return (best if best["ex"] > best_base["ex"] else None), best_base


def _settings(stage_dir: Path) -> dict:
    p = stage_dir / "training_config.json"
    keep = ("learning_rate", "epochs", "batch_size", "grad_accum", "lora_r", "lora_alpha", "lora_dropout",
            "lora_layers", "max_length", "beta", "gamma", "margin_form", "schema_format", "seed")
    try:
        cfg = json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
    return {k: cfg[k] for k in keep if cfg.get(k) is not None}


def ask_machines(out: dict) -> set[str]:
    """Every machine a configuration of the run was asked on (state.json ``machines``)."""
    return {m for step, ms in out.get("machines", {}).items() if step.startswith("ask-") for m in ms}


def model_card(out: dict, winner: dict, base: dict, run_dir: Path) -> str:
    """The shipped student's MODEL_CARD.md, written from the loop's own results and training records."""
    stage = CONFIGS[winner["config"]][0]
    chain = ["sft"] + ([stage] if stage != "sft" else [])
    lines = [f"# learnat student: {out['student']} + LoRA ({' + '.join(s.upper() for s in chain)})", "",
             f"Trained and evaluated by `make loop` (benchmarks/loop.py), run `{out['name']}`, "
             f"{time.strftime('%Y-%m-%d')}. `learnat ask` loads it over the embedded base model by default; "
             "`--adapter none` asks the plain base.", "",
             "## Data", "",
             f"- {out['train_questions']} questions sampled (seeded) from Spider train (its training "
             "databases; the dev databases are never trained on), decomposed by learnat's AST teacher (MCTS "
             "over sub-questions, each step checked against the gold AST): "
             f"{out['decompositions']} decompositions.",
             f"- {out['sft_rows']} SFT rows (the prompt follows `ask`'s adaptive rule: simple questions "
             f"train the direct prompt, the others the decomposition prompt); {out['pairs']} preference "
             f"pairs (chosen/rejected steps at one tree node, AST-reward margin), {out['pairs_used']} used.",
             "",
             "## Training", ""]
    for s in chain:
        m = (out.get("training") or {}).get(s) or {}
        sett = _settings(run_dir / s)
        lines.append(f"- {s}: {m.get('steps')} steps over {m.get('examples')} examples, loss "
                     f"{_f(m.get('first_loss'))} -> {_f(m.get('final_loss'))}, "
                     f"{_f(out.get('seconds', {}).get(s), 0)} s; settings: "
                     + ", ".join(f"{k} {v}" for k, v in sett.items()))
    lines += ["", "## Evaluation", "",
              f"Execution accuracy on {winner['n']} seeded Spider dev questions (official test-suite "
              f"semantics, `learnat eval --metric spider`). Shipped: **{winner['label']}**, "
              f"{winner['ex']:.1f}% EX, against the best plain-base configuration ({base['label']}) "
              f"{base['ex']:.1f}%." + (
                  f" Question by question: {v['fixed']} fixed, {v['broken']} broken, McNemar p {v['p']:.3g}."
                  if (v := winner.get("vs_base")) else ""), ""]
    lines += ex_table(out["results"])
    asked_on = ask_machines(out)
    if len(asked_on) > 1:
        lines += ["", f"Latencies are per answer on 2-core CPUs; the configurations were asked on "
                  f"{len(asked_on)} machines ({'; '.join(sorted(m.split(',')[0] for m in asked_on))}), so "
                  "compare latencies within one machine only."]
    lines += ["", "## Licences", "",
              "- Training data: Spider (Yu et al., 2018), CC BY-SA 4.0. The adapter is a work derived from "
              "it and is shared under the same licence.",
              "- Base model: Qwen2.5-Coder-0.5B-Instruct (Alibaba Cloud), Apache 2.0; not included, learnat "
              "installs it from its own wheels.", "",
              "## Limits", "",
              "- A 0.5B model: it reads a schema and writes SQLite; it does not know your data beyond the "
              "schema and the sample values in the prompt. Check the SQL before trusting an answer.",
              "- Trained and measured on Spider's English questions over small databases; other dialects, "
              "languages or very wide schemas are outside what it saw."]
    return "\n".join(lines) + "\n"


def _f(v, nd: int = 3) -> str:
    return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


TABLE_CHOICE = ("same tables", "extra tables", "missing tables", "other tables", "unparsed")


def table_choice(graded: list[dict]) -> dict[str, int]:
    """Schema linking in the wrong answers, measured: the tables each wrong prediction reads against the gold
    query's (``same tables``: the error is elsewhere; ``extra tables``: a superset, e.g. a join the question
    did not need; ``missing tables``: a subset; ``other tables``: neither; ``unparsed``: no SQL to read)."""
    from learnat_cli.sql import tables_and_columns

    out = dict.fromkeys(TABLE_CHOICE, 0)
    for r in graded:
        if r.get("correct") or r.get("gold_error"):
            continue
        try:
            pred, gold = tables_and_columns(r.get("pred") or "")[0], tables_and_columns(r["gold"])[0]
        except Exception:  # noqa: BLE001 - an empty or unparsable prediction is counted, not raised
            out["unparsed"] += 1
            continue
        if not pred:
            out["unparsed"] += 1
        elif pred == gold:
            out["same tables"] += 1
        elif pred > gold:
            out["extra tables"] += 1
        elif pred < gold:
            out["missing tables"] += 1
        else:
            out["other tables"] += 1
    return out


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar test: the chance of a split of the ``b + c`` discordant questions at least as
    uneven as ``b``:``c`` if both configurations were equally good (binomial, p = 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _versus(mine: dict[str, bool], ref: dict[str, bool]) -> dict:
    """Two configurations on the questions both answered: fixed, broken, McNemar's p."""
    both = ref.keys() & mine.keys()
    fixed = sum(mine[i] and not ref[i] for i in both)
    broken = sum(ref[i] and not mine[i] for i in both)
    return {"fixed": fixed, "broken": broken, "p": round(mcnemar_p(fixed, broken), 4)}


# Issue 15's targets: (what, the configurations of one side, of the other, the EX lead the first needs). Each
# side is its best configuration by EX; a target is judged once both sides have results.
TARGETS = (
    ("the SFT+MDPO student beats the untrained student's best configuration by at least 8 points EX",
     ("mdpo-decompose", "mdpo-auto", "mdpo-direct"), ("base-zero", "base-default"), 8.0),
    ("MDPO is at least as good as plain DPO (both with decomposition)", ("mdpo-decompose",),
     ("dpo-decompose",), 0.0),
    ("for the trained student, decomposition is at least as good as direct SQL", ("mdpo-decompose",),
     ("mdpo-direct",), 0.0),
)


def first_step_strays(rec: dict) -> bool:
    """Whether a decomposed answer's first step reads a table the gold query does not (a decomposition that
    opens with a join the question did not need, say); False when it was not decomposed or does not parse."""
    from learnat_cli.sql import tables_and_columns

    steps = rec.get("steps") or []
    if not rec.get("decomposed") or not steps or not (steps[0].get("sql") or "").strip():
        return False
    try:
        return bool(tables_and_columns(steps[0]["sql"])[0] - tables_and_columns(rec["gold"])[0])
    except Exception:  # noqa: BLE001 - an unparsable step is not a stray table
        return False


SHAPES = ("direct", "no step", "one step: the question", "one step: a sub-question",
          "2+ steps, opening with a join", "2+ steps, other")


def _same_text(a: str | None, b: str | None) -> bool:
    norm = lambda t: " ".join((t or "").lower().split()).rstrip(" ?.!")  # noqa: E731
    return norm(a) == norm(b)


def decomposition_shape(rec: dict) -> str:
    """The shape of an answer's decomposition (:data:`SHAPES`): direct SQL; decomposed but with no step (the
    final SQL only); one step that restates the question (direct SQL in the step format); one step on a
    sub-question (so the final SQL answers part of the question, unless the student finished it there);
    two or more steps, the first reading two or more tables (a decomposition that opens with a join), or
    not."""
    from learnat_cli.sql import tables_and_columns

    steps = rec.get("steps") or []
    if not rec.get("decomposed"):
        return "direct"
    if not steps:
        return "no step"
    if len(steps) == 1:
        same = _same_text(steps[0].get("question"), rec.get("question"))
        return "one step: the question" if same else "one step: a sub-question"
    try:
        joins = len(tables_and_columns(steps[0].get("sql") or "")[0]) > 1
    except Exception:  # noqa: BLE001 - an unparsable first step is not a join
        joins = False
    return "2+ steps, opening with a join" if joins else "2+ steps, other"


def shapes(mine: dict[str, dict], ref: dict[str, bool]) -> dict[str, dict[str, int]]:
    """Per :func:`decomposition_shape` of ``mine``'s answers (graded records by id, with ``steps``,
    ``decomposed`` and ``question``): how many, how many right, and how many ``ref`` (correct by id) gets
    right on the same questions -- whether a shape of decomposition costs or pays against the base."""
    out: dict[str, dict[str, int]] = {}
    for i, rec in mine.items():
        if i not in ref:
            continue
        c = out.setdefault(decomposition_shape(rec), {"n": 0, "correct": 0, "ref_correct": 0})
        c["n"] += 1
        c["correct"] += bool(rec.get("correct"))
        c["ref_correct"] += bool(ref[i])
    return {k: out[k] for k in SHAPES if k in out}


def why_broken(mine: dict[str, dict], ref: dict[str, dict]) -> dict:
    """Why one configuration loses questions to another, measured on the questions ``ref`` answers right and
    ``mine`` wrong (graded records by id, with the answer's ``steps``/``decomposed``): their hardness,
    ``eval``'s failure class, the tables read against the gold query's (:func:`table_choice`), and how many
    of those were decomposed and opened with a step reading a table the gold does not."""
    ids = sorted(i for i in mine.keys() & ref.keys() if ref[i].get("correct") and not mine[i].get("correct"))
    lost = [mine[i] for i in ids]
    count = lambda key: dict(sorted(Counter(r.get(key) or "-" for r in lost).items(),  # noqa: E731
                                    key=lambda kv: -kv[1]))
    return {"n": len(lost), "hardness": count("difficulty"), "failures": count("failure"),
            "tables": table_choice(lost), "decomposed": sum(bool(r.get("decomposed")) for r in lost),
            "first_step_strays": sum(first_step_strays(r) for r in lost)}


def paired(rows: list[dict]) -> list[dict]:
    """Each configuration against the best base one (by EX) on the same questions: how many it gets right
    that the base gets wrong (``fixed``), the reverse (``broken``), and McNemar's p for the difference; and
    the :data:`TARGETS` that can be judged (returned), each with what the questions it loses fail on
    (:func:`why_broken`). The per-question records (``_graded``) are dropped from the rows."""
    graded = {r["config"]: r.pop("_graded", {}) for r in rows}
    correct = {c: {i: bool(g.get("correct")) for i, g in recs.items()} for c, recs in graded.items()}
    _, base = ship_decision(rows)
    for r in rows:
        if base is None or r is base or not correct[base["config"]]:
            continue
        r["vs_base"] = {"base": base["config"], **_versus(correct[r["config"]], correct[base["config"]])}
        if any(g.get("decomposed") for g in graded[r["config"]].values()):
            r["shapes"] = shapes(graded[r["config"]], correct[base["config"]])
    by = {r["config"]: r for r in rows}
    judged = []
    for what, mine, theirs, lead in TARGETS:
        a = [by[c] for c in mine if c in by]
        b = [by[c] for c in theirs if c in by]
        if not a or not b:
            continue
        a_best, b_best = max(a, key=lambda r: r["ex"]), max(b, key=lambda r: r["ex"])
        vs = _versus(correct[a_best["config"]], correct[b_best["config"]])
        n_both = len(correct[a_best["config"]].keys() & correct[b_best["config"]].keys())
        # on the same questions, unrounded (two EX rounded apart can differ from it by 0.1)
        diff = round(100 * (vs["fixed"] - vs["broken"]) / n_both, 1) if n_both else \
            round(a_best["ex"] - b_best["ex"], 1)
        judged.append({"target": what, "config": a_best["config"], "against": b_best["config"],
                       "ex": a_best["ex"], "against_ex": b_best["ex"], "difference": diff, "needed": lead,
                       "met": diff >= lead, "short_by": round(max(0.0, lead - diff), 1), **vs,
                       "why_broken": why_broken(graded[a_best["config"]], graded[b_best["config"]])})
    return judged


def ex_table(rows: list[dict]) -> list[str]:
    """The Markdown table of EX (overall and by hardness), latency, tokens and training time per
    configuration: in results.md and in a shipped student's model card."""
    levels = levels_of(rows)
    head = ["configuration", "n", "EX", *levels, "p50", "p95", "tokens/answer", "decomposed", "training s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lv = [f"{r['by_hardness'][x]:.1f} ({r['count_by_hardness'][x]})" if x in r["by_hardness"] else "-"
              for x in levels]
        cells = [r["label"], str(r["n"]), f"{r['ex']:.1f}", *lv, f"{_f(r['p50_s'], 2)} s",
                 f"{_f(r['p95_s'], 2)} s", _f(r["tokens_mean"], 1), str(r["decomposed"]), _f(r["train_s"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _count_table(title: str, rows: list[dict], key: str, classes) -> list[str]:
    """A Markdown table of per-class counts (``row[key][class]``) per configuration, after a title."""
    if not classes:
        return []
    lines = ["", title, "", "| configuration | " + " | ".join(classes) + " |",
             "|" + "---|" * (len(classes) + 1)]
    for r in rows:
        lines.append(f"| {r['label']} | " + " | ".join(str(r.get(key, {}).get(c, 0)) for c in classes) + " |")
    return lines


def _why_lines(targets: list[dict]) -> list[str]:
    """For each target, what the questions it loses fail on (:func:`why_broken`), as Markdown lines."""
    lines = []
    for t in targets:
        w = t.get("why_broken")
        if not w or not w["n"]:
            continue
        fmt = lambda d: ", ".join(f"{k} {v}" for k, v in d.items() if v)  # noqa: E731
        lines += ["", f"- {CONFIGS[t['config']][2]} vs {CONFIGS[t['against']][2]}: the {w['n']} questions it "
                  f"breaks are {fmt(w['hardness'])}; they fail as {fmt(w['failures'])}; against the gold "
                  f"query's tables: {fmt(w['tables'])}; {w['decomposed']} were decomposed, "
                  f"{w['first_step_strays']} of them opening with a step on a table the gold does not read."]
    if not lines:
        return []
    return ["", "What the questions each target loses fail on (right on the other side, wrong here):", *lines]


def markdown(out: dict) -> str:
    lines = [f"# Loop `{out['name']}` ({out['scale']}, student: {out['student']})", "",
             f"Synthesis: {out['decompositions']} decompositions of {out['train_questions']} train "
             f"questions; {out['sft_rows']} SFT rows; {out['pairs']} pairs ({out['pairs_used']} used).", ""]
    for s, m in out["training"].items():
        if m:
            state = "complete" if m["complete"] else "partial: resumes at the next run"
            lines.append(f"- {s}: {m['steps']}/{m['max_steps']} steps ({state}), loss "
                         f"{_f(m['first_loss'])} -> {_f(m['final_loss'])}, "
                         f"{_f(m['tokens_per_s'], 1)} tokens/s")
    lines += ["", *ex_table(out["results"])]
    if out.get("ask") is not None:
        on = out["ask"].get("rebind")
        lines += ["", "ask " + ("rebinds a column put on the wrong table of a join (`--rebind`): "
                                + ", ".join(f"{r['label']} {r.get('rebound', 0)}" for r in out["results"])
                                if on else "without `--rebind` (the run's answers predate it)")]
    asked_on = ask_machines(out)
    if len(asked_on) > 1:  # int8 kernels differ by instruction set: so can the answers
        lines += ["", f"The configurations were asked on {len(asked_on)} machines (state.json `machines`): "
                  + "; ".join(sorted(asked_on))]
    from learnat_cli.metrics import FAILURES

    # why the wrong answers are wrong, measured: eval's failure classes (metrics.FAILURES), schema linking
    rows = out["results"]
    classes = [c for c in FAILURES if any(r.get("failures", {}).get(c) for r in rows)]
    lines += _count_table("Wrong answers by failure class (`learnat eval`):", rows, "failures", classes)
    if any(sum(r.get("tables", {}).values()) for r in rows):
        lines += _count_table("Wrong answers by the tables they read against the gold query's:", rows,
                              "tables", TABLE_CHOICE)
    vs = [r for r in out["results"] if r.get("vs_base")]
    if vs:  # paired on the same questions: what moved, and whether the difference is more than chance
        base = CONFIGS[vs[0]["vs_base"]["base"]][2]
        lines += ["", f"Against the best base configuration ({base}), question by question:", "",
                  "| configuration | EX - base | fixed | broken | McNemar p |", "|---|---|---|---|---|"]
        for r in vs:
            v = r["vs_base"]
            lines.append(f"| {r['label']} | {(v['fixed'] - v['broken']) / max(1, r['n'] or 0) * 100:+.1f} | "
                         f"{v['fixed']} | {v['broken']} | {v['p']:.3g} |")
    shaped = [r for r in vs if r.get("shapes")]
    if shaped:  # where decomposition pays or costs: each shape's EX against the base's on the same questions
        cols = [k for k in SHAPES if any(k in r["shapes"] for r in shaped)]
        lines += ["", "Answers by the shape of their decomposition: n, EX here, and in parentheses the best "
                  f"base configuration's EX on the same questions ({base}):", "",
                  "| configuration | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
        for r in shaped:
            cells = []
            for k in cols:
                c = r["shapes"].get(k)
                pct = lambda x, c=c: f"{100 * x / c['n']:.1f}"  # noqa: E731
                cells.append(f"{c['n']}: {pct(c['correct'])} ({pct(c['ref_correct'])})" if c else "-")
            lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    if out.get("targets"):
        lines += ["", "Issue 15's targets (each side its best configuration; fixed/broken and McNemar p on "
                  "the same questions):", "", "| target | configuration | against | EX difference | needed | "
                  "verdict | fixed | broken | McNemar p |", "|---|---|---|---|---|---|---|---|---|"]
        for t in out["targets"]:
            verdict = "met" if t["met"] else f"missed by {t['short_by']:.1f}"
            lines.append(f"| {t['target']} | {CONFIGS[t['config']][2]} ({t['ex']:.1f}) | "
                         f"{CONFIGS[t['against']][2]} ({t['against_ex']:.1f}) | {t['difference']:+.1f} | "
                         f"{t['needed']:+.1f} | {verdict} | {t['fixed']} | {t['broken']} | {t['p']:.3g} |")
        lines += _why_lines(out["targets"])
    ship = out.get("ship")
    if ship:
        lines += ["", (f"Shipped as `ask`'s default student: {CONFIGS[ship['config']][2]} "
                       f"({ship['ex']:.1f}% EX vs {ship['base_ex']:.1f}% for the best base configuration), "
                       f"into `{ship['folder']}`." if ship["shipped"] else f"Not shipped: {ship['why']}.")]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = ["all", *levels_of(rows)]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(1, len(rows))
    for i, r in enumerate(rows):
        vals = [r["ex"]] + [r["by_hardness"].get(lv, 0.0) for lv in levels[1:]]
        ax.bar([x + i * width for x in range(len(levels))], vals, width, label=r["label"])
    ax.set_xticks([x + width * (len(rows) - 1) / 2 for x in range(len(levels))], levels)
    ax.set_ylabel("execution accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default=None)
    ap.add_argument("--scale", choices=("full", "tiny"), default="full")
    ap.add_argument("--spider", default=str(REPO.parent / "shared" / "spider"))
    ap.add_argument("--train", type=int, default=2000, help="Spider train questions to decompose")
    ap.add_argument("--pairs", type=int, default=1200, help="preference pairs for MDPO/DPO")
    ap.add_argument("--eval", type=int, default=300, help="Spider dev questions to evaluate on")
    ap.add_argument("--budget", type=float, default=None, help="seconds per training stage per sitting")
    ap.add_argument("--student", default=None, help="model (default: the embedded 0.5B; tiny: a tiny model)")
    ap.add_argument("--teacher", default="ast")
    ap.add_argument("--gpus", type=int, default=1)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="rows per step (default: 4 on a GPU; 1 on CPU, where a batch only adds padding and "
                         "memory: docs/BENCHMARKS.md, CPU speed levers)")
    ap.add_argument("--grad-accum", type=int, default=None, help="default: 16 rows per update in all")
    ap.add_argument("--lora-layers", type=int, default=None,
                    help="LoRA on the last N layers only (default: all on a GPU, 8 of 24 on CPU)")
    ap.add_argument("--schema-format", default="sql", choices=("sql", "compact"),
                    help="the schema rendering, in training rows and in ask alike")
    ap.add_argument("--backend", default=None, help="ask's engine (default: auto; tiny: transformers)")
    ap.add_argument("--carry", default=None,
                    help="a folder to commit: answers, reports, state, adapters or the last checkpoint, "
                         "written after every step, restored into an empty run folder (benchmarks/carry.py)")
    ap.add_argument("--pack", action="store_true", help="only write --carry from the run folder, then exit")
    ap.add_argument("--unalias", action="store_true",
                    help="train on gold SQL with table aliases replaced by table names (decompose --unalias)")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--runs", default=str(REPO / "runs"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    ap.add_argument("--pref-lr", type=float, default=1.5e-5,
                    help="MDPO/DPO learning rate (LoRA; 1,000 pairs are ~60 updates of 16 pairs; at 5e-5 the "
                         "0.5B's chosen steps lost likelihood from update ~14 and its answers broke: "
                         "docs/BENCHMARKS.md)")
    ap.add_argument("--rebind", action=argparse.BooleanOptionalAction, default=None,
                    help="ask's --rebind (default: on for a new run; a run keeps what its answers used)")
    ap.add_argument("--reask", default="",
                    help="configurations to ask again on this machine when their answers were made on "
                         "another (or an unrecorded) one; the old answers move to superseded/, and a set "
                         "made on this machine earlier comes back from there (the int8 engine's kernels "
                         "differ by CPU: compare configurations asked on one machine)")
    ap.add_argument("--ship", action="store_true",
                    help="package the winning adapter as ask's default student (if it beats the base)")
    ap.add_argument("--ship-to", default=str(REPO / "learnat_cli" / "student"))
    ap.add_argument("--ship-alpha", type=float, default=0.05,
                    help="ship only a measurable win: the winner's lead over the best base configuration, "
                         "question by question, must have McNemar p <= this (1 ships any lead in EX)")
    args = ap.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    args.reask = [c.strip() for c in args.reask.split(",") if c.strip()]
    bad = [c for c in args.configs + args.reask if c not in CONFIGS]
    if bad:
        ap.error(f"unknown configuration(s) {', '.join(bad)}; known: {', '.join(CONFIGS)}")
    from learnat_cli.models import resolve_device

    gpu = args.gpus > 1 or resolve_device("auto") == "cuda"
    args.batch_size = args.batch_size or (4 if gpu else 1)
    args.grad_accum = args.grad_accum or max(1, 16 // args.batch_size)
    if args.lora_layers is None and not gpu and args.scale != "tiny":
        args.lora_layers = 8
    args.name = args.name or ("tiny" if args.scale == "tiny" else "spider-0.5b")
    args.backend = args.backend or ("transformers" if args.scale == "tiny" else "auto")
    if args.scale == "full" and not (Path(args.spider) / "train_spider.json").exists():
        ap.error(f"--spider {args.spider}: no train_spider.json (SCALE=tiny runs without Spider)")
    if args.pack:
        if not args.carry:
            ap.error("--pack needs --carry DIR")
        Loop(args).pack()
        return 0
    out = Loop(args).run()
    print(json.dumps({"results": str(Path(args.runs) / args.name / "results.md"), "ran": out["ran_this_time"],
                      "ex": {r["config"]: r["ex"] for r in out["results"]}, "ship": out.get("ship")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
