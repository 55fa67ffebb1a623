"""How a run process is started: one process on one GPU, or `accelerate launch` over several."""

import sys
from pathlib import Path

import torch
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import prepare_multi_gpu_env

from flywheel.settings import load_settings
from training.config import TrainConfig
from training.launcher import gpu_env, run_command
from training.modeling import quantization_config, sharded


def test_several_processes_go_through_accelerate_launch_with_the_same_entry_point(tmp_path):
    settings = load_settings(home=tmp_path, train_processes=2, train_launch_args="--mixed_precision bf16")
    command = run_command(settings, 7, Path("run-7.log"))
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[3:7] == ["--num_processes", "2", "--mixed_precision", "bf16"]
    assert command[7:] == ["-m", "flywheel", "train", "run", "7", "--log-file", "run-7.log"]
    assert "CUDA_VISIBLE_DEVICES" not in gpu_env(settings)  # accelerate hands each process its own GPU


def test_one_process_sees_exactly_one_gpu(tmp_path, monkeypatch):
    """TRL refuses nn.DataParallel, which Trainer uses when one process sees several GPUs
    (seen on a 2-GPU H200 machine: the run failed before its first step)."""
    settings = load_settings(home=tmp_path)
    assert run_command(settings, 3, Path("l"))[1:3] == ["-m", "flywheel"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_env(settings)["CUDA_VISIBLE_DEVICES"] == "0"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpu_env(settings)["CUDA_VISIBLE_DEVICES"] == "2"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_env(settings)["CUDA_VISIBLE_DEVICES"] == ""


def test_runs_use_expandable_segments_unless_the_operator_chose_otherwise(tmp_path, monkeypatch):
    settings = load_settings(home=tmp_path)
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    assert gpu_env(settings)["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    assert gpu_env(settings)["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128"


FSDP_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "accelerate" / "fsdp.yaml"


def test_the_shipped_fsdp_config_gives_every_run_process_fsdp2(tmp_path, monkeypatch):
    """What `accelerate launch` makes of the command the launcher builds with deploy/accelerate/fsdp.yaml:
    accelerate's own parser and environment (no GPUs needed to read them)."""
    settings = load_settings(home=tmp_path, train_processes=4, train_launch_args=f"--config_file {FSDP_CONFIG}")
    command = run_command(settings, 9, Path("run-9.log"))
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(command[3:]))
    assert args.num_processes == 4 and args.use_fsdp and args.mixed_precision == "bf16"
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT" and env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "true"
    monkeypatch.setenv("ACCELERATE_USE_FSDP", env["ACCELERATE_USE_FSDP"])
    assert sharded()  # so the run loads its base for FSDP to shard, not a whole copy per GPU
    qlora = quantization_config(TrainConfig(device="cuda", qlora=True), for_fsdp=True)
    assert qlora.bnb_4bit_quant_storage == torch.bfloat16  # FSDP shards one dtype
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    assert not sharded()
