"""Scale-out for ``learnat sft`` / ``learnat mdpo``: the ``accelerate launch`` command line, DeepSpeed
configs, and the entry point the launched processes run (the paper trains 7B-32B students, which needs several
GPUs; this module re-runs the same SFT/MDPO training under the standard launcher, it is not a launcher
itself).

How it works: the CLI writes the stage's config to ``<output_dir>/launch_config.json`` (stdin input is spooled
to ``<output_dir>/train_input.jsonl`` first, since every process must read the data), then runs::

    python -m accelerate.commands.launch --multi_gpu --num_processes GPUS*NODES --num_machines NODES
        [--machine_rank R --main_process_ip ADDR --main_process_port PORT] --mixed_precision bf16|no
        --dynamo_backend no --module learnat_cli.training.launch run sft|mdpo <output_dir>/launch_config.json

``accelerate launch --multi_gpu`` hands off to ``torch.distributed.run`` (torchrun); each process builds the
same Trainer, which picks up the distributed environment (NCCL on GPUs, gloo on CPU with ``cpu=True``). With
``--deepspeed zero2|zero3`` a DeepSpeed JSON config is written next to it and passed as
``TrainingArguments.deepspeed`` (the Trainer's own DeepSpeed integration fills its ``"auto"`` values). Rank 0
writes ``manifest.json``; the parent reads it back and prints it as the stage's one output record. Children's
stdout goes to the parent's stderr, so stdout still carries data only.

:func:`train` is the one entry of both stages (``stages/sft.py``, ``stages/mdpo.py``): it checks the topology
first (``--gpus 2`` on a machine without CUDA fails before anything is launched or created), then trains in
this process or under the launcher. Input: a :class:`~learnat_cli.training.config.TrainConfig`. Output: the
manifest record. No heavy imports at module import time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from learnat_cli.errors import LearnatError
from learnat_cli.training.config import MdpoConfig, SftConfig, TrainConfig

CHILD_ENV = "LEARNAT_LAUNCHED"
LAUNCH_CONFIG = "launch_config.json"
SPOOLED_INPUT = "train_input.jsonl"
ZERO_STAGES = {"zero2": 2, "zero3": 3}
DEFAULT_PORT = 29500


def in_launched_child() -> bool:
    return os.environ.get(CHILD_ENV) == "1"


def needs_launch(gpus: int = 1, nodes: int = 1, deepspeed: str | None = None) -> bool:
    """True when the training must run under ``accelerate launch`` (several processes, or DeepSpeed)."""
    if gpus < 1 or nodes < 1:
        raise LearnatError("--gpus and --nodes must be at least 1", field="gpus")
    return (gpus * nodes > 1 or deepspeed is not None) and not in_launched_child()


def deepspeed_config(stage: str, *, bf16: bool = True, offload: bool = False) -> dict[str, Any]:
    """A DeepSpeed config for ZeRO stage 2 or 3 with the values the HF Trainer fills in left as ``"auto"``."""
    if stage not in ZERO_STAGES:
        raise LearnatError(f"unknown DeepSpeed stage {stage!r} (expected zero2 or zero3)", field="deepspeed")
    zero: dict[str, Any] = {
        "stage": ZERO_STAGES[stage],
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if stage == "zero2":
        zero["allgather_partitions"] = True
        zero["allgather_bucket_size"] = 200_000_000
        zero["reduce_scatter"] = True
    else:
        zero.update({
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "sub_group_size": 1_000_000_000,
            "stage3_max_live_parameters": 1_000_000_000,
            "stage3_max_reuse_distance": 1_000_000_000,
            # Needed to save a usable (unsharded) model / adapter at the end.
            "stage3_gather_16bit_weights_on_model_save": True,
        })
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == "zero3":
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "bf16": {"enabled": "auto" if bf16 else False},
        "fp16": {"enabled": False},
        "zero_optimization": zero,
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "steps_per_print": 1_000_000,
        "wall_clock_breakdown": False,
    }


def write_deepspeed_config(stage: str, output_dir: str | os.PathLike, *, bf16: bool = True) -> Path:
    """Write ``<output_dir>/deepspeed_<stage>.json`` and return its path."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"deepspeed_{stage}.json"
    path.write_text(json.dumps(deepspeed_config(stage, bf16=bf16), indent=2), encoding="utf-8")
    return path


def build_launch_command(stage: str, config_path: str | os.PathLike, *, gpus: int = 1, nodes: int = 1,
                         node_rank: int = 0, master_addr: str | None = None,
                         master_port: int | None = None, python: str = sys.executable) -> list[str]:
    """The ``accelerate launch`` argv that runs ``stage`` with the saved config on ``gpus`` processes per
    node.

    ``--mixed_precision no`` on purpose: precision is the Trainer's ``bf16`` setting (transformers reads
    ``ACCELERATE_MIXED_PRECISION`` as a fallback, so a launcher-level ``bf16`` would override
    ``--no-bf16``)."""
    if stage not in ("sft", "mdpo"):
        raise LearnatError(f"unknown stage {stage!r}")
    if gpus < 1 or nodes < 1:
        raise LearnatError("--gpus and --nodes must be at least 1", field="gpus")
    if not 0 <= node_rank < nodes:
        raise LearnatError(f"--node-rank must be in [0, {nodes - 1}]", field="node_rank")
    if nodes > 1 and not master_addr:
        raise LearnatError("--master-addr is required with --nodes > 1", field="master_addr")
    total = gpus * nodes
    cmd = [python, "-m", "accelerate.commands.launch"]
    if total > 1:
        cmd.append("--multi_gpu")  # torch.distributed.run; the processes use gloo when the config says cpu
    cmd += ["--num_processes", str(total), "--num_machines", str(nodes)]
    if nodes > 1:
        cmd += ["--machine_rank", str(node_rank), "--main_process_ip", str(master_addr),
                "--main_process_port", str(master_port or DEFAULT_PORT)]
    elif master_port:
        cmd += ["--main_process_port", str(master_port)]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["--module", "learnat_cli.training.launch", "run", stage, str(config_path)]
    return cmd


def spool_input(path: str, output_dir: str | os.PathLike) -> str:
    """Every launched process reads the input, so stdin (``-``) is copied to a file in the output folder."""
    if path not in (None, "-"):
        p = Path(path)
        if not p.is_file():
            raise LearnatError("no such file", file=str(p))
        return str(p.resolve())
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dst = out / SPOOLED_INPUT
    with open(dst, "w", encoding="utf-8") as fh:
        fh.writelines(sys.stdin)
    return str(dst.resolve())


def check_topology(cfg: TrainConfig) -> None:
    """Refuse what cannot run here before anything is printed, created or launched."""
    if not needs_launch(cfg.gpus, cfg.nodes, cfg.deepspeed):
        return
    if cfg.deepspeed is not None:
        if cfg.cpu:
            raise LearnatError("--deepspeed needs GPUs; drop --cpu", field="deepspeed")
        if importlib.util.find_spec("deepspeed") is None:
            raise LearnatError("DeepSpeed is not installed (pip install deepspeed)", field="deepspeed")
    if not cfg.cpu:
        import torch

        if not torch.cuda.is_available():
            raise LearnatError("no CUDA GPU here: --gpus/--nodes/--deepspeed need GPUs (or --cpu for a CPU "
                               "test run over gloo)", field="gpus")
        if cfg.gpus > torch.cuda.device_count():
            raise LearnatError(f"--gpus {cfg.gpus} but this machine has {torch.cuda.device_count()} GPU(s)",
                               field="gpus")
    build_launch_command("sft", "x", gpus=cfg.gpus, nodes=cfg.nodes, node_rank=cfg.node_rank,
                         master_addr=cfg.master_addr, master_port=cfg.master_port)


def launch(stage: str, cfg: TrainConfig, *, env: dict[str, str] | None = None,
           force: bool = False) -> dict[str, Any]:
    """Run ``stage`` under ``accelerate launch`` and return rank 0's manifest record (``force``: even for one
    process without DeepSpeed, as ``gpu-check`` does to exercise the launcher)."""
    check_topology(cfg)
    config = cfg.to_dict()
    out = Path(config["output_dir"]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config["output_dir"] = str(out)
    config["input"] = spool_input(config.get("input", "-"), out)
    if cfg.deepspeed is not None:
        config["deepspeed_config"] = str(write_deepspeed_config(cfg.deepspeed, out,
                                                                bf16=cfg.bf16 is not False))
    config["world_size"] = cfg.gpus * cfg.nodes
    cfg_path = out / LAUNCH_CONFIG
    cfg_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        manifest_path.unlink()
    cmd = build_launch_command(stage, cfg_path, gpus=cfg.gpus, nodes=cfg.nodes, node_rank=cfg.node_rank,
                               master_addr=cfg.master_addr, master_port=cfg.master_port)
    child_env = dict(os.environ)
    child_env[CHILD_ENV] = "1"
    # The children must import this checkout's packages even when it is not installed.
    root = str(Path(__file__).resolve().parents[2])
    old_path = child_env.get("PYTHONPATH")
    child_env["PYTHONPATH"] = root + (os.pathsep + old_path if old_path else "")
    if cfg.cpu:
        child_env.setdefault("OMP_NUM_THREADS", "1")
    child_env.update(env or {})
    proc = subprocess.run(cmd, check=False, env=child_env, stdin=subprocess.DEVNULL,
                          stdout=sys.stderr.fileno()
                          if _has_fileno(sys.stderr) else None)
    if proc.returncode != 0:
        raise LearnatError(f"distributed {stage} failed (exit {proc.returncode}); see the messages above")
    if cfg.node_rank != 0:
        return {"stage": stage, "output_dir": str(out), "node_rank": cfg.node_rank,
                "world_size": cfg.gpus * cfg.nodes}
    if not manifest_path.exists():
        raise LearnatError("the launched training wrote no manifest", file=str(manifest_path))
    return json.loads(manifest_path.read_text(encoding="utf-8"))


def train(stage: str, cfg: TrainConfig, *, rows: list[dict[str, Any]] | None = None,
          on_event: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train ``stage`` with ``cfg``: in this process, or under ``accelerate launch`` when the topology needs
    it."""
    check_topology(cfg)
    if needs_launch(cfg.gpus, cfg.nodes, cfg.deepspeed):
        if rows is not None:
            raise LearnatError("in-memory rows cannot be sent to launched processes; pass a file as input")
        if on_event:
            on_event("message", {"text": f"launching {cfg.gpus * cfg.nodes} process(es) with accelerate"})
        return launch(stage, cfg)
    return run_stage(stage, cfg, rows=rows, on_event=on_event)


def _has_fileno(stream) -> bool:
    try:
        stream.fileno()
        return True
    except (AttributeError, OSError, ValueError):
        return False


def run_stage(stage: str, cfg: TrainConfig | dict[str, Any], *, rows: list[dict[str, Any]] | None = None,
              on_event: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run one stage in this process (what each launched process does, with a config dict)."""
    if stage not in ("sft", "mdpo"):
        raise LearnatError(f"unknown stage {stage!r}")
    cls = SftConfig if stage == "sft" else MdpoConfig
    if isinstance(cfg, dict):
        cfg = cls.from_dict(cfg)
    if stage == "sft":
        from learnat_cli.training.runner import train_sft

        return train_sft(cfg, rows, on_event)  # type: ignore[arg-type]
    from learnat_cli.training.mdpo_trainer import train_mdpo

    return train_mdpo(cfg, rows, on_event)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m learnat_cli.training.launch run STAGE CONFIG.json`` (what ``accelerate launch`` starts)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3 or args[0] != "run":
        print("usage: python -m learnat_cli.training.launch run sft|mdpo CONFIG.json", file=sys.stderr)
        return 2
    _, stage, cfg_path = args
    try:
        from learnat_cli.training.runner import print_events

        config = json.loads(Path(cfg_path).read_text(encoding="utf-8"))
        run_stage(stage, config, on_event=print_events(stage))
    except LearnatError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except (OSError, json.JSONDecodeError) as e:
        print(f"error: {cfg_path}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
