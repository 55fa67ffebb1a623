"""Helpers for tests and benchmarks: a free port for a server, a real adapter without training one."""

from __future__ import annotations

import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def random_lora_adapter(base_model_dir: Path, out_dir: Path, *, rank: int = 8, seed: int = 0,
                        target_modules: tuple[str, ...] = ("q_proj", "v_proj")) -> Path:
    """Save a PEFT LoRA adapter whose weights are random (not the usual zero B), so it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    # Scaling 4 (alpha / r): large enough that greedy answers visibly change (scaling 1 did not).
    config = LoraConfig(r=rank, lora_alpha=4 * rank, target_modules=list(target_modules),
                        init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(out_dir)
    return out_dir
