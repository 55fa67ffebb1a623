"""Loading the policy for training or scoring: base model (4-bit NF4 for QLoRA), plus a LoRA adapter."""

from __future__ import annotations

import gc
from pathlib import Path

import torch
from accelerate.utils import parse_flag_from_env
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from serving.gpu_memory import ModelShape, check_room, run_need
from training.config import TrainConfig


def load_tokenizer(model_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def sharded() -> bool:
    """Under `accelerate launch` with an FSDP config (deploy/accelerate/fsdp.yaml): each GPU holds a shard."""
    return parse_flag_from_env("ACCELERATE_USE_FSDP")


def quantization_config(cfg: TrainConfig, *, for_fsdp: bool = False) -> BitsAndBytesConfig | None:
    if not cfg.use_qlora:
        return None
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        # FSDP shards parameters of one dtype: the packed 4-bit weights are stored as bf16 elements then.
        **({"bnb_4bit_quant_storage": torch.bfloat16} if for_fsdp else {}),
    )


def load_base_model(model_dir: Path, cfg: TrainConfig, *, for_fsdp: bool = False):
    """The base on this process's GPU; for FSDP training, loaded for FSDP to shard (rank 0 reads the
    weights, the other ranks get theirs from it) instead of a whole copy on every GPU."""
    on_gpu = cfg.resolved_device == "cuda" and not for_fsdp
    return AutoModelForCausalLM.from_pretrained(
        str(model_dir),
        dtype=torch.bfloat16 if cfg.use_bf16 else torch.float32,
        quantization_config=quantization_config(cfg, for_fsdp=for_fsdp),
        device_map={"": "cuda"} if on_gpu else None,
    )


def lora_config(cfg: TrainConfig) -> LoraConfig:
    return LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules, task_type="CAUSAL_LM",
    )


def load_policy(model_dir: Path, cfg: TrainConfig, adapter_path: Path | None):
    """(model, peft_config): continue the given adapter (trainable), or a fresh LoRA config for the trainer."""
    model = load_base_model(model_dir, cfg, for_fsdp=sharded())
    if adapter_path is None:
        return model, lora_config(cfg)
    return PeftModel.from_pretrained(model, str(adapter_path), is_trainable=True), None


def require_gpu_room(model_dir: Path, cfg: TrainConfig, what: str) -> None:
    """Refuse (InsufficientGPUMemory) a CUDA run that would not fit beside what already holds the GPU
    (vLLM, mostly): better a clear failure now than running out of memory halfway."""
    if cfg.resolved_device != "cuda":
        return
    need = run_need(ModelShape.read(model_dir), qlora=cfg.use_qlora, batch_size=cfg.batch_size,
                    max_length=cfg.max_length, lora_r=cfg.lora_r, target_modules=cfg.target_modules)
    free, total = torch.cuda.mem_get_info()
    check_room(need, free, total, what)


def release_memory() -> None:
    """Give the memory of models that went out of scope back (the trainer holds reference cycles), so that
    evaluation after training reuses it instead of adding to the process's peak."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
