"""The loop's state as the database holds it: the version answering now (and the canary), pairs
waiting and approved since the last run, votes waiting for review, and that run. `training.status` adds vLLM
and the scheduler."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from storage.interactions import count_votes
from storage.models import ModelVersion, TrainingRun
from storage.pairs import PairFilter, count_approved_since, count_pairs
from storage.registry import active_version, canary_version
from storage.runs import last_run, last_started_at


@dataclass(frozen=True)
class LoopState:
    active: ModelVersion | None  # None: the base model answers
    canary: ModelVersion | None
    pending_pairs: int
    approved_since_last_run: int
    pending_votes: int
    last_run: TrainingRun | None


def loop_state(session: Session) -> LoopState:
    return LoopState(
        active=active_version(session), canary=canary_version(session),
        pending_pairs=count_pairs(session, PairFilter()),
        approved_since_last_run=count_approved_since(session, last_started_at(session)),
        pending_votes=count_votes(session),
        last_run=last_run(session),
    )
