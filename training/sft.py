"""SFT with TRL + PEFT LoRA on the chosen answers (approved alternatives and 👍 answers).

Usable before DPO: it teaches the model to produce the answers people preferred.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from training.callbacks import Reporter
from training.config import TrainConfig
from training.trainer import TrainResult, common_args, fit


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
    args = SFTConfig(**common_args(cfg, output_dir / "trainer"))
    return fit(SFTTrainer, args, cfg, model_dir, sft_dataset(train), output_dir, start_adapter, report)
