"""The scheduler: exactly one active scheduler and one run however many start, takeover, the start rule."""

from __future__ import annotations

import time

import pytest
from training_support import add_command_pairs, add_voted_answers, wait_for

from flywheel.settings import load_settings
from storage.db import make_engine, session_scope
from storage.leases import lease_holder
from storage.interactions import approve_vote
from storage.models import RunKind, RunStatus
from storage.runs import active_run, list_runs
from storage.users import SYSTEM
from training.scheduler import LEASE, FlywheelScheduler, next_run, why_not_start


@pytest.fixture
def sched_settings(tmp_path, database_url, base_model_dir):
    # min_pair_chars far above the pairs' length: a started run fails at its snapshot in seconds
    # instead of training for minutes; the test is about who starts it, not the training.
    return load_settings(
        home=tmp_path / "home", database_url=database_url, base_model_path=base_model_dir, vllm_url="http://127.0.0.1:9",
        scheduler_interval_s=0.5, min_new_pairs=4, min_new_votes=6, min_interval_minutes=0, min_pair_chars=10_000,
    )


def runs(engine):
    with session_scope(engine) as session:
        return [(r.id, r.status) for r in list_runs(session)]


def test_start_rule(sched_settings, engine):
    with session_scope(engine) as session:
        assert why_not_start(session, sched_settings) == "0 new approved pair(s), 4 needed; 0 new vote(s), 6 needed for KTO"
    add_command_pairs(engine, 4)
    with session_scope(engine) as session:
        assert why_not_start(session, sched_settings) is None
        assert next_run(session, sched_settings) == (RunKind.dpo, "4 new approved pair(s)")
        hourly = sched_settings.model_copy(update={"min_interval_minutes": 60})
        assert why_not_start(session, hourly) is None  # no run yet: the interval does not apply


def test_kto_is_picked_when_votes_wait_but_too_few_pairs(sched_settings, engine):
    add_command_pairs(engine, 3)  # one short of a DPO run
    votes = add_voted_answers(engine, 6, approve=False)
    with session_scope(engine) as session:
        assert next_run(session, sched_settings)[0] is None  # nobody reviewed the votes yet
        assert next_run(session, sched_settings.model_copy(update={"kto_pending_votes": True}))[0] is RunKind.kto
        for feedback_id in votes[:5]:
            approve_vote(session, feedback_id, SYSTEM)
    with session_scope(engine) as session:
        assert next_run(session, sched_settings)[1] == "3 new approved pair(s), 4 needed; 5 new vote(s), 6 needed for KTO"
        approve_vote(session, votes[5], SYSTEM)
    with session_scope(engine) as session:
        assert next_run(session, sched_settings) == (
            RunKind.kto, "6 new vote(s) to learn from and too few pairs (3 new approved pair(s), 4 needed)")
        assert next_run(session, sched_settings.model_copy(update={"min_new_votes": 0}))[0] is None  # KTO off
    run_id = FlywheelScheduler(sched_settings, engine=engine).maybe_start_run()
    # Its own process fails at the KTO snapshot in seconds: every answer is shorter than min_pair_chars here.
    wait_for(lambda: runs(engine) == [(run_id, RunStatus.failed)], 180, "the KTO run process to end")
    with session_scope(engine) as session:
        run = list_runs(session)[0]
        assert run.kind is RunKind.kto and "no votes or pairs to learn from (9 answer shorter than" in run.error  # 3 pairs, 6 votes
    add_command_pairs(engine, 8)  # 5 more (the first 3 are stored already): DPO comes first
    with session_scope(engine) as session:
        assert next_run(session, sched_settings)[0] is RunKind.dpo


def test_two_schedulers_start_exactly_one_run(sched_settings, database_url):
    first_engine, second_engine = make_engine(database_url), make_engine(database_url)
    first = FlywheelScheduler(sched_settings, engine=first_engine, holder="scheduler-a")
    second = FlywheelScheduler(sched_settings, engine=second_engine, holder="scheduler-b")
    first.start(), second.start()
    try:
        wait_for(lambda: first.is_leader or second.is_leader, 20, "a leader")
        time.sleep(1.5)  # several ticks of both
        assert first.is_leader != second.is_leader  # exactly one runs the jobs
        leader, follower = (first, second) if first.is_leader else (second, first)
        with session_scope(first_engine) as session:
            assert lease_holder(session, LEASE) == leader.holder

        add_command_pairs(first_engine, 6)  # threshold reached
        wait_for(lambda: runs(first_engine), 20, "a run")
        time.sleep(2)  # more ticks of both: still one run
        assert len(runs(first_engine)) == 1
        # The run's own process fails at the snapshot (pairs too short for these settings); it ends.
        wait_for(lambda: runs(first_engine)[0][1] is RunStatus.failed, 180, "the run process to end")
        with session_scope(first_engine) as session:
            assert "unusable" in list_runs(session)[0].error and active_run(session) is None
        time.sleep(1.5)  # no new pairs since that run: no second run
        assert len(runs(first_engine)) == 1

        leader.stop()  # the follower takes over once the lease is released
        wait_for(lambda: follower.is_leader, 10, "the follower to take over")
    finally:
        first.stop(), second.stop()
        first_engine.dispose(), second_engine.dispose()
