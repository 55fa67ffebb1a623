"""What DPO and SFT runs share: device-aware training arguments, fitting with progress, saving the adapter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from training.callbacks import ProgressCallback, Reporter
from training.config import TrainConfig
from training.modeling import load_policy, load_tokenizer, release_memory


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
        # Non-reentrant checkpointing and no unused-parameter search: what DDP needs with frozen LoRA bases.
        gradient_checkpointing_kwargs={"use_reentrant": False},
        ddp_find_unused_parameters=False,
        use_cpu=cfg.resolved_device == "cpu",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        include_num_input_tokens_seen=True,
        use_liger_kernel=cfg.use_liger,
        seed=cfg.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


class AdapterSaveError(RuntimeError):
    """The trained adapter could not be written (disk full, folder not writable): the run fails with it."""


def save_adapter(trainer, adapter_path: Path) -> None:
    """Rank 0 saves only the trained adapter: TRL's frozen "ref" copy (when continuing an adapter) is not the
    result. Under FSDP every rank first takes part in gathering the full state dict from the shards."""
    state_dict = trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
    if not trainer.accelerator.is_main_process:
        return
    try:
        trainer.model.save_pretrained(str(adapter_path), selected_adapters=["default"], state_dict=state_dict)
        trainer.processing_class.save_pretrained(str(adapter_path))
    except Exception as exc:  # OSError, or safetensors' own error wrapping one
        raise AdapterSaveError(f"could not write the adapter to {adapter_path}: {exc}") from exc


def median(values: list[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None


def fit(
    trainer_class, args, cfg: TrainConfig, model_dir: Path, train: Dataset, output_dir: Path,
    start_adapter: Path | None, report: Reporter,
) -> TrainResult:
    """Train a TRL trainer from the base model (fresh LoRA) or from `start_adapter`; save the adapter."""
    model, peft_config = load_policy(model_dir, cfg, start_adapter)
    callback = ProgressCallback(report)
    trainer = trainer_class(
        model=model, args=args, train_dataset=train, processing_class=load_tokenizer(model_dir),
        peft_config=peft_config, callbacks=[callback],
    )
    trainer.train()
    adapter_path = output_dir / "adapter"
    if not callback.cancelled:
        save_adapter(trainer, adapter_path)
    result = TrainResult(adapter_path, trainer.state.global_step, callback.cancelled, median(callback.tokens_per_s))
    del trainer, model
    release_memory()
    return result
