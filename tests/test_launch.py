"""learnat_cli.training.launch: the `accelerate launch` argv for N GPUs / nodes, DeepSpeed configs, the
refusal paths, and two real CPU processes (torch.distributed over gloo) training one MDPO step together
through `learnat mdpo --gpus 2`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from learnat_cli.errors import LearnatError
from learnat_cli.training import launch
from learnat_commands.main import app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_command_for_eight_gpus_one_node():
    cmd = launch.build_launch_command("sft", "/x/launch_config.json", gpus=8, python="/py")
    assert cmd[:3] == ["/py", "-m", "accelerate.commands.launch"]
    assert "--multi_gpu" in cmd and "--cpu" not in cmd and "--machine_rank" not in cmd
    assert cmd[cmd.index("--num_processes") + 1] == "8" and cmd[cmd.index("--num_machines") + 1] == "1"
    assert cmd[cmd.index("--mixed_precision") + 1] == "no"  # precision comes from the Trainer's bf16 setting
    assert cmd[-5:] == ["--module", "learnat_cli.training.launch", "run", "sft", "/x/launch_config.json"]


def test_command_for_two_nodes():
    cmd = launch.build_launch_command("mdpo", "c.json", gpus=4, nodes=2, node_rank=1, master_addr="10.0.0.1",
                                      master_port=6000, python="/py")
    assert cmd[cmd.index("--num_processes") + 1] == "8"  # accelerate counts processes over all machines
    assert cmd[cmd.index("--num_machines") + 1] == "2"
    assert cmd[cmd.index("--machine_rank") + 1] == "1"
    assert cmd[cmd.index("--main_process_ip") + 1] == "10.0.0.1"
    assert cmd[cmd.index("--main_process_port") + 1] == "6000"
    assert cmd[-3:] == ["run", "mdpo", "c.json"]


def test_single_process_command():
    one = launch.build_launch_command("sft", "c.json", gpus=1, master_port=1234, python="/py")
    assert "--multi_gpu" not in one and one[one.index("--num_processes") + 1] == "1"
    assert one[one.index("--main_process_port") + 1] == "1234"


def test_accelerate_parses_our_command():
    """The argv is valid for accelerate's own parser (no home-made flags)."""
    from accelerate.commands.launch import launch_command_parser

    cmd = launch.build_launch_command("sft", "c.json", gpus=4, nodes=2, node_rank=0, master_addr="h",
                                      python="/py")
    args = launch_command_parser().parse_args(cmd[3:])
    assert args.multi_gpu and args.num_processes == 8 and args.num_machines == 2 and args.module
    assert args.training_script == "learnat_cli.training.launch" and args.training_script_args == ["run",
                                                                                                   "sft",
                                                                                                   "c.json"]


@pytest.mark.parametrize("kwargs, field", [
    ({"gpus": 2, "nodes": 2}, "master_addr"),
    ({"gpus": 2, "nodes": 2, "node_rank": 2, "master_addr": "h"}, "node_rank"),
    ({"gpus": 0}, "gpus"),
])
def test_bad_topologies(kwargs, field):
    with pytest.raises(LearnatError) as ei:
        launch.build_launch_command("sft", "c.json", **kwargs)
    assert ei.value.field == field


def test_needs_launch(monkeypatch):
    monkeypatch.delenv(launch.CHILD_ENV, raising=False)
    assert not launch.needs_launch(1, 1, None)
    assert launch.needs_launch(2, 1, None) and launch.needs_launch(1, 2, None) and launch.needs_launch(1, 1,
                                                                                                       "zero2")
    monkeypatch.setenv(launch.CHILD_ENV, "1")  # inside a launched process: never launch again
    assert not launch.needs_launch(8, 1, "zero3")


def test_deepspeed_configs(tmp_path):
    z2 = launch.deepspeed_config("zero2")
    assert z2["zero_optimization"]["stage"] == 2 and z2["train_micro_batch_size_per_gpu"] == "auto"
    z3 = launch.deepspeed_config("zero3", bf16=False)
    assert z3["zero_optimization"]["stage"] == 3 and z3["bf16"]["enabled"] is False
    assert z3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    p = launch.write_deepspeed_config("zero3", tmp_path)
    assert json.loads(p.read_text()) == launch.deepspeed_config("zero3")
    with pytest.raises(LearnatError):
        launch.deepspeed_config("zero1")


def test_cli_refuses_gpus_without_cuda_and_bad_deepspeed(tiny_model_dir, tmp_path):
    import torch

    inp = tmp_path / "s.jsonl"
    inp.write_text(json.dumps({"prompt": "q", "completion": "SELECT 1"}) + "\n")
    res = CliRunner().invoke(app, ["sft", str(inp), "--model", str(tiny_model_dir), "-o", str(tmp_path / "o"),
                                   "--deepspeed", "zero9"])
    assert res.exit_code == 2 and "zero9" in res.stderr
    res = CliRunner().invoke(app, ["sft", str(inp), "--model", str(tiny_model_dir), "-o", str(tmp_path / "o"),
                                   "--deepspeed", "zero2", "--cpu"])
    assert res.exit_code == 2 and "--deepspeed needs GPUs" in res.stderr
    if not torch.cuda.is_available():
        for gpus in ("1", "2"):
            args = ["--gpus", gpus] + (["--deepspeed", "zero2"] if gpus == "1" else [])
            res = CliRunner().invoke(app, ["sft", str(inp), "--model", str(tiny_model_dir), "-o",
                                           str(tmp_path / "o"), *args])
            assert res.exit_code == 2, res.output
            assert ("no CUDA GPU" in res.stderr or "DeepSpeed is not installed" in res.stderr)
            # Refused before saying "launching", and no empty output folder is left behind.
            assert "launching" not in res.output and not (tmp_path / "o").exists()
    res = CliRunner().invoke(app, ["sft", "-o", str(tmp_path / "o"), "--gpus", "0"], input="")
    assert res.exit_code == 2 and "at least 1" in res.stderr and not (tmp_path / "o").exists()


def test_two_cpu_processes_train_one_mdpo_step_together(tiny_model_dir, tmp_path):
    """`learnat mdpo --gpus 2 --cpu` runs accelerate launch -> torchrun -> 2 processes (gloo); input from
    stdin."""
    pairs = [{"id": f"p{i}", "prompt": f"Question: How many singers are older than {30 + i}?\n",
              "chosen": f"Final SQL: SELECT COUNT(*) FROM singer WHERE age > {30 + i}",
              "rejected": "Final SQL: SELECT name FROM singer", "margin": 0.5} for i in range(4)]
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "learnat_commands.main", "mdpo", "--model", str(tiny_model_dir), "-o",
         str(out), "--gpus", "2",
         "--cpu", "--max-steps", "1", "--grad-accum", "1", "--batch-size", "1", "--master-port",
         str(_free_port())],
        input="".join(json.dumps(p) + "\n" for p in pairs), capture_output=True, text=True, env=env,
        timeout=300, check=False,
        cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stdout  # data only on stdout: rank 0's manifest
    man = json.loads(lines[0])
    assert man["world_size"] == 2 and man["steps"] == 1
    # One optimizer step consumed one pair per process: 2 of the 4 pairs, half an epoch (one process: 0.25).
    assert man["epochs"] == pytest.approx(0.5)
    assert (out / launch.SPOOLED_INPUT).read_text().count("\n") == 4
    assert (out / "adapter_model.safetensors").exists()
    cfg = json.loads((out / launch.LAUNCH_CONFIG).read_text())
    assert cfg["cpu"] is True and cfg["world_size"] == 2 and cfg["input"].endswith(launch.SPOOLED_INPUT)
