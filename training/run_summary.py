"""What one finished run is, gathered from the database: what its model card and its MLflow run show."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from storage.registry import get_version, list_versions
from storage.runs import get_run
from storage.stats import pair_source_counts

BASE = "base"
BUNDLED_BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what `flywheel model prepare` converts


@dataclass
class RunSummary:
    run_id: int
    kind: str
    base_model: str  # a Hugging Face id for the bundled model, else the folder given in settings
    parent: str  # the version the run started from, or "base"
    hyperparameters: dict[str, Any]
    overrides: dict[str, Any]
    snapshot_hash: str = ""
    snapshot_id: int | None = None
    train_pairs: int = 0
    eval_pairs: int = 0
    pairs_by_source: dict[str, int] = field(default_factory=dict)
    eval_metrics: dict[str, Any] = field(default_factory=dict)
    passed_gate: bool = False
    version: str | None = None  # the version it registered
    regression_answers: list[Any] = field(default_factory=list)


def base_model_id(settings) -> str:
    return BUNDLED_BASE_MODEL_ID if settings.base_model_path is None else str(settings.base_model_path)


def summarize_run(session: Session, settings, run_id: int) -> RunSummary:
    run = get_run(session, run_id)
    parent = get_version(session, run.parent_version_id).name if run.parent_version_id else BASE
    summary = RunSummary(
        run_id=run.id, kind=run.kind.value, base_model=base_model_id(settings), parent=parent,
        hyperparameters=dict(run.config.get("train", {})), overrides=dict(run.config.get("overrides", {})),
        eval_metrics=dict(run.eval_metrics or {}), passed_gate=bool(run.eval_metrics) and not run.not_registered_reason,
    )
    if run.snapshot is not None:
        summary.snapshot_hash, summary.snapshot_id = run.snapshot.content_hash, run.snapshot.id
        summary.train_pairs, summary.eval_pairs = run.snapshot.train_count, run.snapshot.eval_count
        counts = pair_source_counts(session, list(run.snapshot.pair_ids))
        summary.pairs_by_source = {source.value: n for source, n in sorted(counts.items())}
    version = next((v for v in list_versions(session) if v.training_run_id == run.id), None)
    if version is not None:
        summary.version, summary.regression_answers = version.name, list(version.regression_answers)
    return summary
