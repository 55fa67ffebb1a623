"""Training runs: one active run at a time, transitions, metrics and heartbeat, the reaper, cancellation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from storage.audit import list_events
from storage.db import session_scope
from storage.errors import InvalidInput, InvalidTransition, PermissionDenied
from storage.models import Role, RunKind, RunStatus, TrainingRun
from storage.runs import (
    active_run,
    attach_snapshot,
    finish_run,
    get_or_create_snapshot,
    get_run,
    heartbeat,
    last_run,
    last_started_at,
    list_runs,
    queue_run,
    reap_stale_runs,
    record_step,
    request_cancel,
    run_metrics,
    start_run,
)
from storage.users import SYSTEM, Actor


def queue(engine) -> int:
    with session_scope(engine) as session:
        return queue_run(session, RunKind.dpo, {"beta": 0.1}, triggered_by="scheduler").id


def start(engine, run_id: int) -> None:
    with session_scope(engine) as session:
        start_run(session, run_id, pid=4242, log_path="/tmp/run.log", output_dir="/tmp/run")


def test_one_active_run_at_a_time(engine):
    first = queue(engine)
    with pytest.raises(InvalidInput, match=f"run {first} is queued; one run at a time"):
        queue(engine)
    start(engine, first)
    with pytest.raises(InvalidInput, match="is running"):
        queue(engine)
    with session_scope(engine) as session:
        finish_run(session, first, RunStatus.succeeded, eval_metrics={"accuracy": 0.8})
    second = queue(engine)  # the slot is free again
    with session_scope(engine) as session:
        assert active_run(session).id == second and last_run(session).id == second
        assert [r.id for r in list_runs(session)] == [second, first]
        assert last_started_at(session) == get_run(session, second).created_at
        assert get_run(session, first).eval_metrics == {"accuracy": 0.8}


def test_the_database_refuses_a_second_active_slot(engine):
    """Even a writer that skips queue_run's check (a racing scheduler) cannot add a second active run."""
    queue(engine)
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        session.add(TrainingRun(kind=RunKind.dpo, config={}))
        session.flush()


def test_transitions_metrics_and_heartbeat(engine):
    run_id = queue(engine)
    with session_scope(engine) as session:
        snapshot = get_or_create_snapshot(session, "abc123", [1, 2, 3], 2, 1, "/tmp/snap")
        assert get_or_create_snapshot(session, "abc123", [9], 1, 0, "/elsewhere").id == snapshot.id
        attach_snapshot(session, run_id, snapshot.id, total_steps=8)
        with pytest.raises(InvalidTransition, match=f"run {run_id} is queued; it cannot become succeeded"):
            finish_run(session, run_id, RunStatus.succeeded)
    start(engine, run_id)
    with session_scope(engine) as session:
        assert record_step(session, run_id, 1, {"loss": 0.69}) is False
        record_step(session, run_id, 2, {"loss": 0.5})
        record_step(session, run_id, 2, {"rewards/accuracies": 0.75})  # merged into step 2
        assert heartbeat(session, run_id) is False
    with session_scope(engine) as session:
        run = get_run(session, run_id)
        assert (run.current_step, run.total_steps, run.pid, run.snapshot.content_hash) == (2, 8, 4242, "abc123")
        assert run.heartbeat_at >= run.started_at
        assert [(m.step, m.values) for m in run_metrics(session, run_id)] == [
            (1, {"loss": 0.69}), (2, {"loss": 0.5, "rewards/accuracies": 0.75})]
        finish_run(session, run_id, RunStatus.failed, error="CUDA out of memory")
    with session_scope(engine) as session:
        run = get_run(session, run_id)
        assert (run.status, run.error, run.active_slot) == (RunStatus.failed, "CUDA out of memory", None)
        with pytest.raises(InvalidTransition, match="is failed; it cannot become running"):
            start_run(session, run_id, pid=1, log_path="", output_dir="")


def test_reaper_fails_runs_whose_heartbeat_stopped(engine):
    run_id = queue(engine)
    start(engine, run_id)
    with session_scope(engine) as session:
        assert reap_stale_runs(session, heartbeat_timeout_s=300) == []  # fresh heartbeat
        get_run(session, run_id).heartbeat_at -= timedelta(minutes=10)
    with session_scope(engine) as session:
        assert [r.id for r in reap_stale_runs(session, heartbeat_timeout_s=300)] == [run_id]
    with session_scope(engine) as session:
        run = get_run(session, run_id)
        assert run.status is RunStatus.failed and "no heartbeat for 300 s" in run.error
        assert active_run(session) is None
        assert ("reap_run", run_id) in [(e.action, e.target_id) for e in list_events(session)]


def test_cancel(engine):
    queued = queue(engine)
    with session_scope(engine) as session, pytest.raises(PermissionDenied, match="needs an admin"):
        request_cancel(session, queued, Actor("rita", Role.reviewer))
    with session_scope(engine) as session:
        assert request_cancel(session, queued, SYSTEM).status is RunStatus.cancelled  # at once
    running = queue(engine)
    start(engine, running)
    with session_scope(engine) as session:
        assert request_cancel(session, running, SYSTEM).status is RunStatus.running
    with session_scope(engine) as session:
        assert record_step(session, running, 1, {"loss": 0.6}) is True  # the trainer sees it at its next step
        finish_run(session, running, RunStatus.cancelled)
    with session_scope(engine) as session, pytest.raises(InvalidInput, match="only a queued or running run"):
        request_cancel(session, running, SYSTEM)
