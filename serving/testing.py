"""Helpers for tests and benchmarks: a free port for a server, a real adapter without training one."""

from __future__ import annotations

import math
import socket
from pathlib import Path

from serving.gpu_memory import ModelShape

MODULE_PARENTS = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
                  "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def random_lora_adapter(base_model_dir: Path, out_dir: Path, *, rank: int = 8, seed: int = 0,
                        target_modules: tuple[str, ...] = ("q_proj", "v_proj")) -> Path:
    """Save a PEFT LoRA adapter for a Llama-style model whose weights are random (not the usual zero B), so it
    changes outputs. Built from config.json alone: an 8B model need not be loaded to make one."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    shape, tensors = ModelShape.read(base_model_dir), {}
    dims = shape.module_dims()
    for layer in range(shape.layers):
        for module in target_modules:
            fan_in, fan_out = dims[module]
            prefix = f"base_model.model.model.layers.{layer}.{MODULE_PARENTS[module]}.{module}"
            # nn.Linear's default initialization (what PEFT leaves with init_lora_weights=False), B included.
            tensors[f"{prefix}.lora_A.weight"] = uniform((rank, fan_in), 1 / math.sqrt(fan_in), generator)
            tensors[f"{prefix}.lora_B.weight"] = uniform((fan_out, rank), 1 / math.sqrt(rank), generator)
    # Scaling 4 (alpha / r): large enough that greedy answers visibly change (scaling 1 did not).
    config = LoraConfig(r=rank, lora_alpha=4 * rank, target_modules=list(target_modules), task_type="CAUSAL_LM",
                        base_model_name_or_path=str(base_model_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out_dir))
    save_file(tensors, str(out_dir / "adapter_model.safetensors"))
    return out_dir


def uniform(size: tuple[int, int], bound: float, generator):
    import torch

    return (torch.rand(size, generator=generator) * 2 - 1) * bound
