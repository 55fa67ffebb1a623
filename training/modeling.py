"""Loading the policy for training or scoring: base model (4-bit NF4 for QLoRA), plus a LoRA adapter."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from training.config import TrainConfig


def load_tokenizer(model_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(cfg: TrainConfig) -> BitsAndBytesConfig | None:
    if not cfg.use_qlora:
        return None
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def load_base_model(model_dir: Path, cfg: TrainConfig):
    device = cfg.resolved_device
    return AutoModelForCausalLM.from_pretrained(
        str(model_dir),
        dtype=torch.bfloat16 if cfg.use_bf16 else torch.float32,
        quantization_config=quantization_config(cfg),
        device_map={"": device} if device == "cuda" else None,
    )


def lora_config(cfg: TrainConfig) -> LoraConfig:
    return LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules, task_type="CAUSAL_LM",
    )


def load_policy(model_dir: Path, cfg: TrainConfig, adapter_path: Path | None):
    """(model, peft_config): continue the given adapter (trainable), or a fresh LoRA config for the trainer."""
    model = load_base_model(model_dir, cfg)
    if adapter_path is None:
        return model, lora_config(cfg)
    return PeftModel.from_pretrained(model, str(adapter_path), is_trainable=True), None
