"""DPO with TRL + PEFT LoRA: the preference loss plus SFT on the chosen answers.

Reward accuracy alone is not learning (ENVIRONMENT.md): pure DPO reached held-out reward accuracy
1.0 while greedy answers never changed. The SFT term on the chosen answers makes the model
actually generate them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from training.callbacks import ProgressCallback, Reporter
from training.config import TrainConfig
from training.modeling import load_policy, load_tokenizer


@dataclass
class TrainResult:
    adapter_path: Path
    steps: int
    cancelled: bool
    tokens_per_s: float | None  # median over logged steps


def common_args(cfg: TrainConfig, output_dir: Path) -> dict:
    """TrainingArguments shared by DPO and SFT; the device decides precision and checkpointing."""
    return dict(
        output_dir=str(output_dir),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_length=cfg.max_length,
        bf16=cfg.use_bf16,
        # On the CPU checkpointing only costs time (ENVIRONMENT.md); on CUDA it saves memory.
        gradient_checkpointing=cfg.resolved_device == "cuda",
        use_cpu=cfg.resolved_device == "cpu",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        include_num_input_tokens_seen=True,
        seed=cfg.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def dpo_config(cfg: TrainConfig, output_dir: Path) -> DPOConfig:
    losses = ["sigmoid", "sft"] if cfg.sft_weight > 0 else ["sigmoid"]
    weights = [1.0, cfg.sft_weight] if cfg.sft_weight > 0 else [1.0]
    return DPOConfig(**common_args(cfg, output_dir), beta=cfg.beta, loss_type=losses, loss_weights=weights)


def median(values: list[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None


def save_adapter(trainer, adapter_path: Path) -> None:
    """Save only the trained adapter ("default"); TRL's frozen "ref" copy is not part of the result."""
    trainer.model.save_pretrained(str(adapter_path), selected_adapters=["default"])
    trainer.processing_class.save_pretrained(str(adapter_path))


def run_trainer(trainer, callback: ProgressCallback, adapter_path: Path) -> TrainResult:
    trainer.train()
    if not callback.cancelled and trainer.accelerator.is_main_process:
        save_adapter(trainer, adapter_path)
    return TrainResult(adapter_path, trainer.state.global_step, callback.cancelled, median(callback.tokens_per_s))


def train_dpo(
    cfg: TrainConfig, model_dir: Path, train: Dataset, output_dir: Path, *,
    start_adapter: Path | None = None, report: Reporter = lambda _step, _values: False,
) -> TrainResult:
    """Train on a conversational preference dataset (prompt messages, chosen, rejected)."""
    model, peft_config = load_policy(model_dir, cfg, start_adapter)
    callback = ProgressCallback(report)
    trainer = DPOTrainer(
        model=model, args=dpo_config(cfg, output_dir / "trainer"), train_dataset=train,
        processing_class=load_tokenizer(model_dir), peft_config=peft_config, callbacks=[callback],
    )
    return run_trainer(trainer, callback, output_dir / "adapter")
