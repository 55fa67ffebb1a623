"""SFT with TRL + PEFT LoRA on the chosen answers (approved alternatives and 👍 answers).

Usable before DPO: it teaches the model to produce the answers people preferred.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from training.callbacks import ProgressCallback, Reporter
from training.config import TrainConfig
from training.dpo import TrainResult, common_args, run_trainer
from training.modeling import load_policy, load_tokenizer


def sft_dataset(preferences: Dataset) -> Dataset:
    """Prompt-completion records from preference records: the chosen answer is the completion."""
    return preferences.map(
        lambda r: {"prompt": r["prompt"], "completion": r["chosen"]},
        remove_columns=[c for c in preferences.column_names if c != "prompt"],
    )


def train_sft(
    cfg: TrainConfig, model_dir: Path, train: Dataset, output_dir: Path, *,
    start_adapter: Path | None = None, report: Reporter = lambda _step, _values: False,
) -> TrainResult:
    model, peft_config = load_policy(model_dir, cfg, start_adapter)
    callback = ProgressCallback(report)
    trainer = SFTTrainer(
        model=model, args=SFTConfig(**common_args(cfg, output_dir / "trainer")), train_dataset=sft_dataset(train),
        processing_class=load_tokenizer(model_dir), peft_config=peft_config, callbacks=[callback],
    )
    return run_trainer(trainer, callback, output_dir / "adapter")
