"""Training settings as plain data: what one run needs, read from Settings or given directly (bench/).

Kept free of storage/ and flywheel/ imports so that bench/training.py runs on a machine with only
torch, transformers, peft, trl and datasets installed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    beta: float = 0.1
    sft_weight: float = 1.0
    learning_rate: float = 5e-4  # the settings' defaults (flywheel/settings.py says why)
    epochs: float = 1
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_length: int = 256
    qlora: bool = False
    device: str = "auto"  # "cpu", "cuda" or "auto" (CUDA when present)
    bf16: bool | None = None  # None: bf16 on CUDA, fp32 on the CPU
    max_steps: int = -1
    seed: int = 0
    liger_kernels: bool = False  # Liger's Triton RMSNorm / RoPE / SwiGLU kernels (CUDA only)

    @classmethod
    def from_settings(cls, settings, **overrides: Any) -> TrainConfig:
        values = dict(
            lora_r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
            target_modules=settings.target_modules, beta=settings.dpo_beta, sft_weight=settings.sft_weight,
            learning_rate=settings.learning_rate, epochs=settings.epochs, batch_size=settings.batch_size,
            gradient_accumulation_steps=settings.gradient_accumulation_steps, max_length=settings.max_length,
            qlora=settings.qlora, liger_kernels=settings.liger_kernels,
        )
        return cls(**{**values, **overrides})

    @property
    def resolved_device(self) -> str:
        if self.device == "auto":
            import torch  # here, not at the top: the scheduler and launcher never load torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    @property
    def use_bf16(self) -> bool:
        # The CPUs here have no native bf16: it made DPO steps 15x slower (ENVIRONMENT.md).
        return self.resolved_device == "cuda" if self.bf16 is None else self.bf16

    @property
    def use_liger(self) -> bool:
        return self.liger_kernels and self.resolved_device == "cuda"  # Triton kernels

    @property
    def use_qlora(self) -> bool:
        return self.qlora and self.resolved_device == "cuda"  # bitsandbytes 4-bit needs CUDA

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "device": self.resolved_device, "bf16": self.use_bf16, "qlora": self.use_qlora,
                "liger_kernels": self.use_liger}
