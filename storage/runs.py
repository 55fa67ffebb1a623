"""Dataset snapshots and training runs: queueing, progress, heartbeat, per-step metrics, cancellation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.audit import record_event
from storage.errors import InvalidInput, NotFound
from storage.models import DatasetSnapshot, RunKind, RunMetric, RunStatus, TrainingRun, utcnow
from storage.states import transition
from storage.users import Actor, Role, require_role

ACTIVE_RUN_STATUSES = (RunStatus.queued, RunStatus.running)


def get_or_create_snapshot(
    session: Session, content_hash: str, pair_ids: list[int], train_count: int, eval_count: int, path: str,
    dropped: dict[str, int] | None = None, feedback_ids: list[int] | None = None,
) -> DatasetSnapshot:
    """Snapshots are immutable and content-addressed: the same hash returns the stored one. `dropped`: approved
    pairs (and votes) left out, by reason; `feedback_ids`: the votes in a KTO snapshot."""
    found = session.scalar(select(DatasetSnapshot).where(DatasetSnapshot.content_hash == content_hash))
    if found:
        return found
    snapshot = DatasetSnapshot(
        content_hash=content_hash, pair_ids=pair_ids, train_count=train_count, eval_count=eval_count, path=path,
        dropped=dropped or {}, feedback_ids=feedback_ids or [],
    )
    session.add(snapshot)
    session.flush()
    return snapshot


def describe_drops(dropped: dict[str, int]) -> str:
    """A snapshot's left-out pairs in words: "1 chosen equals rejected, 3 near-duplicate"."""
    return ", ".join(f"{count} {reason}" for reason, count in sorted(dropped.items()))


def list_snapshots(session: Session) -> list[DatasetSnapshot]:
    return list(session.scalars(select(DatasetSnapshot).order_by(DatasetSnapshot.id.desc())))


def get_run(session: Session, run_id: int) -> TrainingRun:
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise NotFound(f"no training run {run_id}")
    return run


def active_run(session: Session) -> TrainingRun | None:
    return session.scalar(select(TrainingRun).where(TrainingRun.status.in_(ACTIVE_RUN_STATUSES)).limit(1))


def queue_run(
    session: Session, kind: RunKind, config: dict[str, Any], *, triggered_by: str = "scheduler",
    parent_version_id: int | None = None,
) -> TrainingRun:
    """Queue a run; refuses while another run is queued or running (one run at a time)."""
    running = active_run(session)
    if running is not None:
        raise InvalidInput(f"run {running.id} is {running.status.value}; one run at a time")
    run = TrainingRun(kind=kind, config=config, triggered_by=triggered_by, parent_version_id=parent_version_id)
    try:
        with session.begin_nested():
            session.add(run)
    except IntegrityError:
        raise InvalidInput("another run was queued a moment ago; one run at a time") from None
    record_event(session, triggered_by, "queue_run", "training_run", run.id, kind=kind.value)
    return run


def start_run(session: Session, run_id: int, *, pid: int, log_path: str, output_dir: str) -> TrainingRun:
    run = get_run(session, run_id)
    transition(run, RunStatus.running, f"run {run_id}")
    run.pid, run.log_path, run.output_dir = pid, log_path, output_dir
    run.started_at = run.heartbeat_at = utcnow()
    return run


def attach_snapshot(session: Session, run_id: int, snapshot_id: int, total_steps: int) -> None:
    run = get_run(session, run_id)
    run.snapshot_id, run.total_steps = snapshot_id, total_steps


def record_step(session: Session, run_id: int, step: int, values: dict[str, Any]) -> bool:
    """Store one step's metrics and beat the heart. Returns True if cancellation was requested."""
    run = get_run(session, run_id)
    existing = session.scalar(select(RunMetric).filter_by(run_id=run_id, step=step))
    if existing:
        existing.values = {**existing.values, **values}
    else:
        session.add(RunMetric(run_id=run_id, step=step, values=values))
    run.current_step = max(run.current_step, step)
    run.heartbeat_at = utcnow()
    return run.cancel_requested


def heartbeat(session: Session, run_id: int) -> bool:
    run = get_run(session, run_id)
    run.heartbeat_at = utcnow()
    return run.cancel_requested


def finish_run(
    session: Session, run_id: int, status: RunStatus, *, error: str | None = None,
    eval_metrics: dict[str, Any] | None = None, not_registered_reason: str | None = None,
) -> TrainingRun:
    run = get_run(session, run_id)
    transition(run, status, f"run {run_id}")
    run.active_slot = None
    run.finished_at = utcnow()
    run.error = error
    if eval_metrics is not None:
        run.eval_metrics = eval_metrics
    run.not_registered_reason = not_registered_reason
    return run


def request_cancel(session: Session, run_id: int, actor: Actor) -> TrainingRun:
    """Ask a run to stop. A queued run is cancelled at once; a running one stops at its next step."""
    require_role(actor, Role.admin)
    run = get_run(session, run_id)
    before = {"status": run.status.value, "cancel_requested": run.cancel_requested}
    if run.status is RunStatus.queued:
        finish_run(session, run_id, RunStatus.cancelled, error="cancelled before it started")
    elif run.status is RunStatus.running:
        run.cancel_requested = True
    else:
        raise InvalidInput(f"run {run_id} is {run.status.value}; only a queued or running run can be cancelled")
    record_event(session, actor.name, "cancel_run", "training_run", run_id, before=before,
                 after={"status": run.status.value, "cancel_requested": run.cancel_requested})
    return run


def reap_stale_runs(session: Session, heartbeat_timeout_s: float) -> list[TrainingRun]:
    """Mark running runs whose heartbeat stopped as failed (their process died or hung)."""
    cutoff = utcnow() - timedelta(seconds=heartbeat_timeout_s)
    stale = session.scalars(
        select(TrainingRun).where(TrainingRun.status == RunStatus.running, TrainingRun.heartbeat_at < cutoff)
    ).all()
    reaped = []
    for run in stale:
        finish_run(session, run.id, RunStatus.failed, error=f"no heartbeat for {heartbeat_timeout_s:.0f} s; process gone")
        record_event(session, "scheduler", "reap_run", "training_run", run.id)
        reaped.append(run)
    return reaped


def list_runs(session: Session, limit: int = 50) -> list[TrainingRun]:
    return list(session.scalars(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)))


def last_run(session: Session) -> TrainingRun | None:
    return session.scalar(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(1))


def last_started_at(session: Session):
    """When the latest run (of any outcome) was queued: the scheduler's 'since the last run'."""
    return session.scalar(select(func.max(TrainingRun.created_at)))


def run_metrics(session: Session, run_id: int) -> list[RunMetric]:
    return list(session.scalars(select(RunMetric).where(RunMetric.run_id == run_id).order_by(RunMetric.step)))


def latest_finished_run(session: Session, status: RunStatus | None = None) -> TrainingRun | None:
    """The run that finished last (with `status`, if given)."""
    query = select(TrainingRun).where(TrainingRun.finished_at.is_not(None))
    if status is not None:
        query = query.where(TrainingRun.status == status)
    return session.scalar(query.order_by(TrainingRun.finished_at.desc()).limit(1))
