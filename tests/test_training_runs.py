"""Real SFT runs and cancellation on the CPU with the bundled model, through the runner (no vLLM needed).

One module-wide SFT run trains on approved pairs (the chosen answers are the completions); a second
run, continuing from that adapter as the active version, is cancelled mid-way from another thread.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine
from training_support import add_command_pairs, wait_for, training_database

from flywheel.settings import Settings
from storage.db import session_scope
from storage.models import RunKind, RunStatus, VersionStatus
from storage.registry import active_version, get_version_by_name, list_versions, promote_version, register_version
from storage.runs import get_run, request_cancel, run_metrics
from storage.users import SYSTEM, Actor, Role
from training.launcher import queue
from training.runner import execute_run

pytestmark = [pytest.mark.training]

# Tiny and fast on 2 CPU cores: 12 pairs, short sequences, a few steps.
TRAINING = dict(max_length=64, batch_size=4, epochs=1, learning_rate=2e-3, lora_r=8, lora_alpha=16,
                eval_fraction=0.3, request_retries=0, request_timeout_s=2)
ADMIN = Actor("ops", Role.admin)


def closed_port_url() -> str:
    """A vLLM URL nobody listens on: regression answers are best effort and must not block the run."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@dataclass
class SftRun:
    settings: Settings
    engine: Engine
    run_id: int


@pytest.fixture(scope="module")
def sft(tmp_path_factory, base_model_dir):
    home = tmp_path_factory.mktemp("sft")
    settings, engine = training_database(home, base_model_path=base_model_dir, vllm_url=closed_port_url(), **TRAINING)
    add_command_pairs(engine, 12)
    run_id = queue(engine, settings, SYSTEM, RunKind.sft, {"max_steps": 2})
    execute_run(settings, run_id, engine=engine)
    yield SftRun(settings, engine, run_id)
    engine.dispose()


def test_sft_run_succeeds_with_step_metrics_and_learns_the_chosen_answers(sft):
    with session_scope(sft.engine) as session:
        run = get_run(session, sft.run_id)
        steps = run_metrics(session, sft.run_id)
        assert run.kind is RunKind.sft and run.status is RunStatus.succeeded, run.error
        assert run.error is None and run.finished_at is not None
        assert run.total_steps == len(steps) == run.current_step >= 2, [s.step for s in steps]
        assert [s.step for s in steps] == list(range(1, len(steps) + 1))
        for step in steps:
            assert {"loss", "learning_rate", "token_accuracy", "tokens_per_s"} <= set(step.values), step.values
            assert step.values["tokens_per_s"] > 0 and step.values["loss"] > 0
        assert "reward_margin" not in steps[0].values  # SFT logs no DPO rewards
        assert steps[-1].values["loss"] < steps[0].values["loss"]
        metrics, base = run.eval_metrics, run.eval_metrics["incumbent"]
        assert metrics["compared_with"] == "base" and metrics["steps"] == len(steps)
        assert metrics["pairs"] == run.snapshot.eval_count >= 2
        # SFT trains on the chosen answers: on held-out prompts they become more likely than for the base.
        assert metrics["chosen_perplexity"] < base["chosen_perplexity"], metrics
        versions = list_versions(session)
        if run.not_registered_reason is None:  # the gate passed: a candidate, never auto-promoted
            assert [v.training_run_id for v in versions] == [run.id] and versions[0].status is VersionStatus.candidate
            assert Path(versions[0].adapter_path, "adapter_config.json").exists()
            assert "vLLM unavailable" in versions[0].regression_answers[0]["error"]
        else:
            assert versions == [] and run.not_registered_reason.startswith("does not beat base")
        assert Path(run.output_dir, "adapter", "adapter_config.json").exists()


def the_sft_adapter_as_active_version(sft: SftRun) -> str:
    """The SFT run's adapter, promoted: what is served while the next run trains from it."""
    with session_scope(sft.engine) as session:
        run = get_run(session, sft.run_id)
        version = next(iter(list_versions(session)), None) or register_version(
            session, adapter_path=str(Path(run.output_dir, "adapter").resolve()), base_model="bundled",
            training_run_id=run.id, parent_id=None, metrics=run.eval_metrics)
        promote_version(session, version.id, SYSTEM)
        return version.name


def test_cancelled_run_stops_at_its_next_step_and_leaves_the_active_version(sft):
    served = the_sft_adapter_as_active_version(sft)
    run_id = queue(sft.engine, sft.settings, ADMIN, RunKind.dpo, {"max_steps": 200})
    errors: list[BaseException] = []

    def train() -> None:
        try:
            execute_run(sft.settings, run_id, engine=sft.engine)
        except BaseException as exc:  # reported by the test thread below
            errors.append(exc)

    worker = threading.Thread(target=train, daemon=True)
    worker.start()

    def trained_a_step():
        with session_scope(sft.engine) as session:
            run = get_run(session, run_id)
            assert run.status in (RunStatus.queued, RunStatus.running), run.error
            return run.current_step >= 1

    wait_for(trained_a_step, 300, "the run to train a step")
    with session_scope(sft.engine) as session:  # one transaction: no step is recorded in between (SQLite)
        at_cancel = get_run(session, run_id).current_step
        request_cancel(session, run_id, ADMIN)
    worker.join(300)
    assert not worker.is_alive() and errors == [], errors
    with session_scope(sft.engine) as session:
        run = get_run(session, run_id)
        assert run.status is RunStatus.cancelled, (run.status, run.error)
        assert run.parent_version_id == active_version(session).id  # it trained from the served adapter
        assert run.cancel_requested and run.error == f"cancelled at step {at_cancel + 1}"
        assert run.current_step == len(run_metrics(session, run_id)) == at_cancel + 1 < run.total_steps == 200
        assert not run.eval_metrics and run.finished_at is not None
        assert not Path(run.output_dir, "adapter").exists()  # nothing saved, nothing registered
        assert active_version(session).name == served and get_version_by_name(session, served).status is VersionStatus.active
        assert [v.name for v in list_versions(session)] == [served]
