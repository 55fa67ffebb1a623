"""Shared by the training and scheduler tests: approved pairs with a clear preference, queued runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flywheel.settings import Settings, load_settings
from sqlalchemy import Engine
from storage.db import make_engine, session_scope, upgrade
from storage.interactions import approve_vote, complete_interaction, get_or_create_conversation, record_vote, start_interaction
from storage.models import PairSource, RunKind, Vote
from storage.pairs import approve_pair, create_pair
from storage.runs import queue_run
from storage.users import SYSTEM
from training.synthetic import synthetic_pairs


def training_database(home: Path, **settings_overrides) -> tuple[Settings, Engine]:
    """A migrated SQLite database in `home`, and settings pointing at it."""
    url = f"sqlite:///{home / 'flywheel.db'}"
    upgrade(url)
    return load_settings(home=home, database_url=url, **settings_overrides), make_engine(url)


def add_approved_pairs(engine, records: list[dict]) -> list[int]:
    with session_scope(engine) as session:
        ids = []
        for record in records:
            pair = create_pair(session, record["prompt"], record["chosen"][0]["content"],
                               record["rejected"][0]["content"], PairSource.imported)
            if pair is not None:
                approve_pair(session, pair.id, SYSTEM)
                ids.append(pair.id)
        return ids


def add_command_pairs(engine, count: int) -> list[int]:
    """`count` approved pairs: the exact command in backticks (chosen) vs a vague answer (rejected)."""
    return add_approved_pairs(engine, synthetic_pairs(count))


def add_voted_answers(engine, count: int, *, approve: bool = True) -> list[int]:
    """`count` answered questions, one each (no vote contrast, so no pair): every other one answered with the
    exact command and voted 👍, the others answered vaguely and voted 👎. Returns the votes' ids."""
    ids = []
    for n, record in enumerate(synthetic_pairs(count)):
        good = n % 2 == 0
        answer = record["chosen" if good else "rejected"][0]["content"]
        with session_scope(engine) as session:
            conversation = get_or_create_conversation(session, "slack", "T1", "C1", f"{n}.0")
            interaction = start_interaction(session, conversation, record["prompt"], user_id="U1")
            session.flush()
            complete_interaction(session, interaction.id, answer=answer, served_model="base", model_version_id=None,
                                 latency_ms=1.0)
            feedback, pairs = record_vote(session, interaction.id, "U2", Vote.up if good else Vote.down)
            assert pairs == []
            if approve:
                approve_vote(session, feedback.id, SYSTEM)
            ids.append(feedback.id)
    return ids


def queue_dpo(engine, overrides: dict | None = None) -> int:
    with session_scope(engine) as session:
        return queue_run(session, RunKind.dpo, {"overrides": overrides or {}}, triggered_by="test").id


def wait_for(condition, timeout_s: float, what: str):
    """Poll `condition` until it returns something truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
