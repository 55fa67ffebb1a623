"""The gauges the scheduler reads from the database at each scrape, on SQLite and PostgreSQL: pairs by status
and source, the review queue's age, the 👍 / 👎 share of the active version since its promotion and of the
version before it, runs, the gate, the last success and the lease holder. All written through storage/."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from storage.db import session_scope
from storage.interactions import (
    approve_vote, complete_interaction, get_or_create_conversation, record_vote, reject_vote, start_interaction,
)
from storage.leases import acquire_lease
from storage.models import Feedback, PairSource, RunKind, RunStatus, Vote, utcnow
from storage.pairs import approve_pair, create_pair, reject_pair
from storage.registry import promote_version, register_version, start_canary
from storage.runs import finish_run, queue_run, start_run
from storage.users import SYSTEM
from training.metrics import DatabaseCollector

WINDOW = timedelta(hours=24)


def scrape(engine, pending_votes_teach: bool = False) -> dict[tuple[str, frozenset], float]:
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(engine, "scheduler", WINDOW, pending_votes_teach))
    text = generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def answers(session, model: str, votes: list[Vote], at) -> None:
    """`len(votes)` answers by `model` created at `at`, each voted once."""
    conversation = get_or_create_conversation(session, "slack", "T1", "C1", f"thread-{model}-{at.timestamp()}")
    for n, vote in enumerate(votes):
        interaction = start_interaction(session, conversation, [{"role": "user", "content": f"q{n} {model}"}])
        complete_interaction(session, interaction.id, answer=f"a{n}", served_model=model, model_version_id=None,
                             latency_ms=10.0)
        interaction.created_at = at
        record_vote(session, interaction.id, f"U{n}", vote)


def finished_run(session, status: RunStatus, **eval_metrics):
    run = queue_run(session, RunKind.dpo, {}, triggered_by="test")
    start_run(session, run.id, pid=1, log_path="", output_dir="")
    run.started_at = utcnow() - timedelta(seconds=90)
    finish_run(session, run.id, status, eval_metrics=eval_metrics or None)
    return run


def test_database_gauges(engine):
    prompt = [{"role": "user", "content": "How do I restart nginx?"}]
    with session_scope(engine) as session:
        older = create_pair(session, prompt, "Run `systemctl restart nginx`.", "Reboot.", PairSource.alternative)
        older.created_at = utcnow() - timedelta(hours=30)
        create_pair(session, prompt, "`sudo systemctl restart nginx`", "Reboot.", PairSource.alternative)
        approve_pair(session, create_pair(session, prompt, "`nginx -s reload`", "No.", PairSource.imported).id, SYSTEM)
        reject_pair(session, create_pair(session, prompt, "`x`", "No idea.", PairSource.vote_contrast).id, SYSTEM)
        answers(session, "base", [Vote.up, Vote.down, Vote.down, Vote.down], utcnow() - timedelta(hours=2))
        answers(session, "base", [Vote.up] * 5, utcnow() - timedelta(hours=40))  # before the window: not counted
        run = finished_run(session, RunStatus.succeeded, tokens_per_s=512.0, reward_accuracy=1.0)
        finished_run(session, RunStatus.failed)
        v1 = register_version(session, adapter_path="/a/v1", base_model="base", training_run_id=run.id,
                              parent_id=None, metrics={})
        promote_version(session, v1.id, SYSTEM)
        answers(session, "v1", [Vote.up, Vote.up, Vote.down], v1.promoted_at)
        v2 = register_version(session, adapter_path="/a/v2", base_model="base", training_run_id=run.id,
                              parent_id=v1.id, metrics={})
        start_canary(session, v2.id, 0.2, SYSTEM)
        answers(session, "v2", [Vote.down], utcnow())
        acquire_lease(session, "scheduler", "host:42:abc", 60)
        first, second = session.scalars(select(Feedback.id).order_by(Feedback.id).limit(2))
        approve_vote(session, first, SYSTEM)
        reject_vote(session, second, SYSTEM)
        promoted_at = v1.promoted_at.timestamp()

    samples = scrape(engine)
    assert value(samples, "flywheel_database_up") == 1
    assert value(samples, "flywheel_pairs", status="pending", source="alternative") == 2
    assert value(samples, "flywheel_pairs", status="approved", source="imported") == 1
    assert value(samples, "flywheel_pairs", status="rejected", source="vote_contrast") == 1
    assert value(samples, "flywheel_pairs", status="approved", source="arena") == 0  # every pair of labels exists
    assert 30 * 3600 - 5 < value(samples, "flywheel_review_queue_oldest_age_seconds") < 30 * 3600 + 120
    assert value(samples, "flywheel_training_pairs_waiting") == 0  # approved before the last run was queued
    assert value(samples, "flywheel_votes", status="pending") == 11
    assert value(samples, "flywheel_votes", status="approved") == 1
    assert value(samples, "flywheel_votes", status="rejected") == 1
    assert value(samples, "flywheel_training_votes_waiting") == 1  # approved after the last run started
    # With FLYWHEEL_KTO_PENDING_VOTES the scheduler counts unreviewed votes too: the 4 on v1's and v2's answers,
    # cast after the last run was queued (the rejected one never).
    assert value(scrape(engine, pending_votes_teach=True), "flywheel_training_votes_waiting") == 1 + 4

    # The active version since its promotion, the canary, and the base model before the promotion.
    assert value(samples, "flywheel_model_serving", version="v1", role="active") == 1
    assert value(samples, "flywheel_model_serving", version="v2", role="canary") == 1
    assert value(samples, "flywheel_model_serving", version="base", role="previous") == 1
    assert value(samples, "flywheel_feedback_share", version="v1", role="active", vote="up") == pytest.approx(2 / 3)
    assert value(samples, "flywheel_feedback_share", version="base", role="previous", vote="down") == 0.75
    assert value(samples, "flywheel_feedback_votes", version="base", role="previous", vote="up") == 1
    assert value(samples, "flywheel_feedback_share", version="v2", role="canary", vote="down") == 1
    assert value(samples, "flywheel_model_promoted_timestamp_seconds", version="v1") == pytest.approx(promoted_at)

    assert value(samples, "flywheel_training_runs", kind="dpo", status="succeeded") == 1
    assert value(samples, "flywheel_training_runs", kind="dpo", status="failed") == 1
    assert value(samples, "flywheel_training_runs", kind="sft", status="running") == 0
    assert value(samples, "flywheel_training_gate_decisions", decision="passed") == 1
    assert value(samples, "flywheel_training_gate_decisions", decision="failed") == 0
    assert abs(value(samples, "flywheel_training_last_success_timestamp_seconds") - utcnow().timestamp()) < 60
    assert value(samples, "flywheel_training_last_run_tokens_per_second", run=str(run.id), kind="dpo") == 512
    [(duration_labels, duration)] = [(dict(k[1]), v) for k, v in samples.items()
                                     if k[0] == "flywheel_training_last_run_duration_seconds"]
    assert duration_labels["status"] == "failed" and 89 < duration < 150  # the run that finished last
    assert value(samples, "flywheel_scheduler_lease_holder", holder="host:42:abc") == 1


def test_an_empty_database(engine):
    samples = scrape(engine)
    assert value(samples, "flywheel_review_queue_oldest_age_seconds") == 0
    assert value(samples, "flywheel_training_last_success_timestamp_seconds") == 0
    assert value(samples, "flywheel_model_serving", version="base", role="active") == 1
    assert value(samples, "flywheel_feedback_votes", version="base", role="active", vote="down") == 0
    assert not [k for k in samples if k[0] in ("flywheel_feedback_share", "flywheel_scheduler_lease_holder")]
