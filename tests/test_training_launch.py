"""How a run process is started: one process on one GPU, or `accelerate launch` over several."""

import sys
from pathlib import Path

from flywheel.settings import load_settings
from training.launcher import gpu_env, run_command


def test_several_processes_go_through_accelerate_launch_with_the_same_entry_point(tmp_path):
    settings = load_settings(home=tmp_path, train_processes=2, train_launch_args="--mixed_precision bf16")
    command = run_command(settings, 7, Path("run-7.log"))
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[3:7] == ["--num_processes", "2", "--mixed_precision", "bf16"]
    assert command[7:] == ["-m", "flywheel", "train", "run", "7", "--log-file", "run-7.log"]
    assert gpu_env(settings) == {}  # accelerate hands each process its own GPU


def test_one_process_sees_exactly_one_gpu(tmp_path, monkeypatch):
    """TRL refuses nn.DataParallel, which Trainer uses when one process sees several GPUs
    (seen on a 2-GPU H200 machine: the run failed before its first step)."""
    settings = load_settings(home=tmp_path)
    assert run_command(settings, 3, Path("l"))[1:3] == ["-m", "flywheel"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_env(settings) == {"CUDA_VISIBLE_DEVICES": "0"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpu_env(settings) == {"CUDA_VISIBLE_DEVICES": "2"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_env(settings) == {"CUDA_VISIBLE_DEVICES": ""}
