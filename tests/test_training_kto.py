"""A real KTO run from votes alone on the CPU with the bundled model, through the runner (no vLLM needed): the
approved votes become desirable / undesirable examples, balanced by TRL's weights, and the run registers a
candidate that moved towards the 👍 answers and away from the 👎 ones on held-out prompts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from test_training_runs import ADMIN, TRAINING, closed_port_url
from training_support import add_voted_answers, training_database

from storage.db import session_scope
from storage.interactions import approve_vote, reject_vote
from storage.models import RunKind, RunStatus, VersionStatus
from storage.registry import list_versions
from storage.runs import get_run, run_metrics
from storage.users import SYSTEM
from training.evaluation import example_metrics
from training.kto import kto_weights
from training.launcher import queue
from training.runner import execute_run
from training.snapshots import load_snapshot

pytestmark = [pytest.mark.training]


def test_weights_balance_desirable_against_undesirable():
    for desirable, undesirable in ((3, 9), (9, 3), (5, 5)):
        d, u = kto_weights([True] * desirable + [False] * undesirable)
        assert 1 <= d * desirable / (u * undesirable) <= 4 / 3 and u == 1.0
    assert kto_weights([True] * 4) == (1.0, 1.0)  # one label alone: nothing to balance


def test_held_out_examples_are_scored_by_the_sign_of_their_implicit_reward():
    labels = torch.tensor([True, True, False])
    reference = (torch.tensor([-2.0, -4.0, -8.0]), torch.tensor([2, 2, 4]))
    policy = (torch.tensor([-1.0, -5.0, -9.0]), torch.tensor([2, 2, 4]))  # rewards +0.1, -0.1, -0.1 at beta 0.1
    metrics = example_metrics(policy, reference, labels, 0.1)
    assert metrics["reward_accuracy"] == pytest.approx(2 / 3)  # the second desirable answer went down
    assert metrics["reward_margin"] == pytest.approx(0.0 - (-0.1))
    assert metrics["chosen_perplexity"] == pytest.approx(math.exp(6 / 4))  # of the desirable answers only
    assert "chosen_perplexity" not in example_metrics(policy, reference, torch.tensor([False] * 3), 0.1)


def test_a_kto_run_learns_from_votes_alone_and_registers_a_candidate(tmp_path, base_model_dir):
    settings, engine = training_database(tmp_path, base_model_path=base_model_dir, vllm_url=closed_port_url(),
                                         **TRAINING)
    votes = add_voted_answers(engine, 18, approve=False)
    approved, disagreed, unreviewed = votes[:15], votes[15], votes[16:]
    with session_scope(engine) as session:
        for feedback_id in approved:
            approve_vote(session, feedback_id, SYSTEM)
        reject_vote(session, disagreed, SYSTEM)  # a reviewer disagreed with this vote: it teaches nothing
    run_id = queue(engine, settings, ADMIN, RunKind.kto, {"max_steps": 3})
    execute_run(settings, run_id, engine=engine)
    with session_scope(engine) as session:
        run = get_run(session, run_id)
        assert run.kind is RunKind.kto and run.status is RunStatus.succeeded, run.error
        snapshot = run.snapshot
        assert snapshot.pair_ids == [] and snapshot.feedback_ids == approved
        assert not set(unreviewed) & set(snapshot.feedback_ids)
        examples = load_snapshot(snapshot)
        assert sorted(examples["train"].column_names) == ["completion", "label", "prompt"]
        assert snapshot.train_count + snapshot.eval_count == 15
        steps = run_metrics(session, run_id)
        assert [s.step for s in steps] == [1, 2, 3] and all(s.values["loss"] > 0 for s in steps)
        metrics, base = run.eval_metrics, run.eval_metrics["incumbent"]
        assert metrics["pairs"] == snapshot.eval_count and base["reward_accuracy"] == 0.0
        # The held-out examples: rewards up for the 👍 answers and down for the 👎 ones, more often than not.
        assert metrics["reward_accuracy"] > 0.5 and metrics["reward_margin"] > 0, metrics
        assert run.not_registered_reason is None, run.not_registered_reason
        versions = list_versions(session)
        assert [(v.training_run_id, v.status) for v in versions] == [(run_id, VersionStatus.candidate)]
        assert Path(versions[0].adapter_path, "adapter_config.json").exists()
