"""KTO with TRL + PEFT LoRA: learns from unpaired good / bad answers (votes nobody rewrote), no pairs needed.

TRL's KTOTrainer pairs each example with another answer of its batch to estimate the KL term, in the dataset's
order (sequential sampling): the examples are shuffled once, with the run's seed, so that a batch mixes votes of
both signs instead of the order they were stored in.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from trl import KTOConfig, KTOTrainer

from training.callbacks import Reporter
from training.config import TrainConfig
from training.trainer import TrainResult, common_args, fit


def kto_weights(labels: list[bool]) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) for these labels. TRL's docs (after the KTO paper) want
    desirable_weight * n_desirable / (undesirable_weight * n_undesirable) in [1, 4/3]: undesirable examples keep
    weight 1 and desirable ones get n_undesirable / n_desirable, which makes it 1. One label alone: 1 and 1."""
    desirable = sum(bool(label) for label in labels)
    undesirable = len(labels) - desirable
    return (undesirable / desirable, 1.0) if desirable and undesirable else (1.0, 1.0)


def kto_config(cfg: TrainConfig, output_dir: Path, labels: list[bool]) -> KTOConfig:
    desirable, undesirable = kto_weights(labels)
    return KTOConfig(**common_args(cfg, output_dir), beta=cfg.beta, desirable_weight=desirable,
                     undesirable_weight=undesirable)


def train_kto(
    cfg: TrainConfig, model_dir: Path, train: Dataset, output_dir: Path, *,
    start_adapter: Path | None = None, report: Reporter = lambda _step, _values: False,
) -> TrainResult:
    """Train on an unpaired preference dataset (prompt messages, completion, label)."""
    args = kto_config(cfg, output_dir / "trainer", train["label"])
    return fit(KTOTrainer, args, cfg, model_dir, train.shuffle(seed=cfg.seed), output_dir, start_adapter, report)
