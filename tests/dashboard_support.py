"""What the dashboard tests share: a small but complete seeded database (accounts, answers and votes
over several days, pending pairs from every source, a finished run with metrics, an active and a
candidate version, all written through storage/'s functions as the bot and trainer would), the
settings fixture that points the app at it, and AppTest helpers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from flywheel.settings import get_settings

from storage.db import make_engine, session_scope
from storage.interactions import (
    complete_interaction,
    get_or_create_conversation,
    record_alternative,
    record_vote,
    start_interaction,
)
from storage.models import PairSource, Role, RunKind, RunStatus, Vote, utcnow
from storage.pairs import create_pair
from storage.registry import promote_version, register_version
from storage.runs import attach_snapshot, finish_run, get_or_create_snapshot, queue_run, record_step, start_run
from storage.users import SYSTEM, create_user

ADMIN = ("ada", "admin-password")
REVIEWER = ("rita", "reviewer-password")


APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
CLOSED_PORT_URL = "http://127.0.0.1:9"  # nothing listens there: serving is "down"


@pytest.fixture
def app_env(monkeypatch, tmp_path):
    """Points the app (which reads get_settings() once) at a test database through FLYWHEEL_* variables."""

    def configure(url: str, vllm_url: str = CLOSED_PORT_URL, **extra: str) -> None:
        env = {"DATABASE_URL": url, "HOME": str(tmp_path / "home"), "VLLM_URL": vllm_url,
               "REQUEST_RETRIES": "0", **extra}
        for name, value in env.items():
            monkeypatch.setenv(f"FLYWHEEL_{name}", value)
        get_settings.cache_clear()

    yield configure
    get_settings.cache_clear()


def signed_in(user: tuple[str, str] = ADMIN, page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    username, password = at.text_input
    username.input(user[0])
    password.input(user[1])
    at.button[0].click().run()
    assert not at.exception, at.exception
    if page:
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, at.exception
    return at


def stored(url: str, query):
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            return query(session)
    finally:
        engine.dispose()


def click(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception, at.exception
    return at


def confirm(at: AppTest, key: str) -> AppTest:
    """Press a two-step button, then Confirm."""
    return click(click(at, key), f"{key}_yes")


@dataclass
class Seeded:
    pending_ids: list[int]  # newest first, as the queue shows them
    active: str
    candidate: str
    candidate_id: int
    run_id: int


def seed(url: str, adapters: tuple[str, str] = ("/nonexistent/a", "/nonexistent/b"), base_model: str = "base") -> Seeded:
    """`adapters`: the adapter folders of the active and the candidate version."""
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            create_user(session, *ADMIN, Role.admin)
            create_user(session, *REVIEWER, Role.reviewer)
            _answers_and_votes(session)
            pending = _pairs(session)
            active, candidate, run_id = _run_and_versions(session, adapters, base_model)
            return Seeded(sorted(pending, reverse=True), active.name, candidate.name, candidate.id, run_id)
    finally:
        engine.dispose()


def _answers_and_votes(session) -> None:
    conversation = get_or_create_conversation(session, "slack", "T1", "C-ops", "1700000000.0001")
    for day in range(6):
        for n in range(3 + day):
            question = [{"role": "user", "content": f"How do I restart service {n} (day {day})?"}]
            interaction = start_interaction(session, conversation, question, user_id=f"U{n}")
            model = "v1" if day < 3 else "base"
            complete_interaction(session, interaction.id, answer=f"Run `systemctl restart svc{n}`.",
                                 served_model=model, model_version_id=None, latency_ms=120.0)
            interaction.created_at = utcnow() - timedelta(days=day, minutes=n)
            if n % 2 == 0:
                feedback, _ = record_vote(session, interaction.id, f"U{n}", Vote.up if n % 4 == 0 else Vote.down)
                feedback.created_at = interaction.created_at


def _pairs(session) -> list[int]:
    """Eight pending pairs: five from better answers in two channels, two imported, one from the arena."""
    ids = []
    for channel in ("C-ops", "C-data"):
        conversation = get_or_create_conversation(session, "slack", "T1", channel, f"{channel}.thread")
        for n in range(3 if channel == "C-ops" else 2):
            thread = [
                {"role": "user", "content": f"Our deploy {n} in {channel} is stuck."},
                {"role": "assistant", "content": "Which environment?"},
                {"role": "user", "content": f"Staging. How do I roll back deploy {n}?"},
            ]
            interaction = start_interaction(session, conversation, thread, user_id="U9")
            complete_interaction(session, interaction.id, answer=f"Delete the cluster and start over ({n}).",
                                 served_model="v1", model_version_id=None, latency_ms=90.0)
            _, pair = record_alternative(session, interaction.id, "U9", f"Run `deploy rollback --to previous` ({n}).")
            ids.append(pair.id)
    for n, source in enumerate((PairSource.imported, PairSource.imported, PairSource.arena)):
        prompt = [{"role": "user", "content": f"What is the on-call rota tool number {n}?"}]
        pair = create_pair(session, prompt, f"We use PagerDuty, schedule {n}.", f"I don't know {n}.", source)
        ids.append(pair.id)
    session.flush()
    return ids


def _run_and_versions(session, adapters: tuple[str, str], base_model: str):
    snapshot = get_or_create_snapshot(session, "ab" * 32, [1, 2, 3], train_count=24, eval_count=6, path="/tmp/s")
    runs = []
    for _ in range(2):
        run = queue_run(session, RunKind.dpo, {"beta": 0.1}, triggered_by="ada")
        start_run(session, run.id, pid=1, log_path="/nonexistent/run.log", output_dir="/tmp/run")
        attach_snapshot(session, run.id, snapshot.id, total_steps=6)
        for step in range(1, 7):
            record_step(session, run.id, step, {"loss": 0.7 / step, "reward_accuracy": step / 6,
                                                 "reward_margin": step * 0.3})
        finish_run(session, run.id, RunStatus.succeeded, eval_metrics={"eval_accuracy": 0.8})
        runs.append(run)
    answers = [{"prompt": "How do I roll back?", "answer": "Delete the cluster."}]
    active = register_version(session, adapter_path=adapters[0], base_model=base_model,
                              training_run_id=runs[0].id, parent_id=None,
                              metrics={"eval_accuracy": 0.6, "eval_margin": 0.4}, regression_answers=answers)
    promote_version(session, active.id, SYSTEM)
    better = [{"prompt": "How do I roll back?", "answer": "Run `deploy rollback --to previous`."}]
    candidate = register_version(session, adapter_path=adapters[1], base_model=base_model,
                                 training_run_id=runs[1].id, parent_id=active.id,
                                 metrics={"eval_accuracy": 0.8, "eval_margin": 0.9}, regression_answers=better)
    return active, candidate, runs[1].id
