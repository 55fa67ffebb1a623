"""Conversations, interactions, votes and better answers on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from storage.db import session_scope
from storage.errors import InvalidInput, NotFound
from storage.interactions import (
    complete_interaction,
    fail_interaction,
    get_interaction,
    get_or_create_conversation,
    record_alternative,
    record_vote,
    set_message_ts,
    start_interaction,
)
from storage.models import Feedback, InteractionStatus, PairSource, PairStatus, PreferencePair, Vote

QUESTION = [{"role": "user", "content": "How do I restart the ingest service?"}]


def ask(engine, answer="Run `make restart`.", *, prompt=QUESTION, event_id=None, thread="1.0") -> int:
    """Record one answered question in its own transaction, as the bot does; returns its id."""
    with session_scope(engine) as session:
        conversation = get_or_create_conversation(session, "slack", "T1", "C1", thread)
        interaction = start_interaction(session, conversation, prompt, user_id="U1", event_id=event_id)
        session.flush()
        complete_interaction(session, interaction.id, answer=answer, served_model="base",
                             model_version_id=None, latency_ms=12.5, prompt_tokens=10, completion_tokens=5)
        return interaction.id


def test_conversation_is_found_again_by_thread(engine):
    with session_scope(engine) as session:
        first = get_or_create_conversation(session, "slack", "T1", "C1", "1.0")
    with session_scope(engine) as session:
        again = get_or_create_conversation(session, "slack", "T1", "C1", "1.0")
        other = get_or_create_conversation(session, "slack", "T1", "C1", "2.0")
    assert again.id == first.id and other.id != first.id


def test_interaction_lifecycle_and_slack_retry_dedupe(engine):
    interaction_id = ask(engine, event_id="Ev1")
    with session_scope(engine) as session:
        conversation = get_or_create_conversation(session, "slack", "T1", "C1", "1.0")
        assert start_interaction(session, conversation, QUESTION, event_id="Ev1") is None  # Slack retry
        set_message_ts(session, interaction_id, "171.5")
    with session_scope(engine) as session:
        stored = get_interaction(session, interaction_id)
        assert stored.status is InteractionStatus.ok and stored.answer == "Run `make restart`."
        assert stored.message_ts == "171.5" and stored.prompt_text == QUESTION[0]["content"]
        assert stored.created_at.tzinfo is not None
        with pytest.raises(NotFound, match="no interaction 9999"):
            get_interaction(session, 9999)


def test_failed_generation_keeps_the_question(engine):
    with session_scope(engine) as session:
        conversation = get_or_create_conversation(session, "slack", "T1", "C1", "1.0")
        interaction = start_interaction(session, conversation, QUESTION, event_id="Ev2")
        session.flush()
        fail_interaction(session, interaction.id, "model server down")
    with session_scope(engine) as session:
        stored = get_interaction(session, interaction.id)
        assert stored.status is InteractionStatus.failed and stored.error == "model server down"
        assert stored.prompt_messages == QUESTION
        # A better answer to a failed generation is kept, but there is no answer to reject.
        alternative, pair = record_alternative(session, interaction.id, "U2", "Run `make restart`.")
        assert alternative.id and pair is None


def test_second_vote_changes_the_first(engine):
    interaction_id = ask(engine)
    with session_scope(engine) as session:
        first, _ = record_vote(session, interaction_id, "U2", Vote.up)
    with session_scope(engine) as session:
        second, _ = record_vote(session, interaction_id, "U2", Vote.down, comment="wrong command")
        record_vote(session, interaction_id, "U3", Vote.up)
    with session_scope(engine) as session:
        votes = {f.user_id: f for f in session.query(Feedback).filter_by(interaction_id=interaction_id)}
    assert len(votes) == 2 and second.id == first.id
    assert votes["U2"].vote is Vote.down and votes["U2"].comment == "wrong command"
    assert votes["U2"].updated_at >= first.updated_at and votes["U3"].vote is Vote.up


def test_better_answer_becomes_pending_pair(engine):
    interaction_id = ask(engine)
    with session_scope(engine) as session:
        alternative, pair = record_alternative(session, interaction_id, "U2", "Run `systemctl restart ingest`.")
    assert pair.status is PairStatus.pending and pair.source is PairSource.alternative
    assert (pair.prompt, pair.chosen, pair.rejected) == (QUESTION, alternative.text, "Run `make restart`.")
    assert (pair.interaction_id, pair.alternative_id, pair.channel_id) == (interaction_id, alternative.id, "C1")
    with session_scope(engine) as session:
        with pytest.raises(InvalidInput, match="empty"):
            record_alternative(session, interaction_id, "U2", "   ")
        with pytest.raises(InvalidInput, match="same as the bot's answer"):
            record_alternative(session, interaction_id, "U2", " Run `make restart`. ")
        # The same better answer again is stored as an alternative but makes no second pair.
        assert record_alternative(session, interaction_id, "U3", "Run `systemctl restart ingest`.")[1] is None
    with session_scope(engine) as session:
        assert session.query(PreferencePair).count() == 1


def test_opposite_votes_on_two_answers_make_a_contrast_pair(engine):
    good = ask(engine, "Run `systemctl restart ingest`.", thread="1.0")
    bad = ask(engine, "Reboot the whole cluster.", thread="2.0")
    ask(engine, "Unrelated answer.", prompt=[{"role": "user", "content": "Other question?"}], thread="3.0")
    with session_scope(engine) as session:
        assert record_vote(session, good, "U1", Vote.up)[1] == []  # nothing to contrast yet
    with session_scope(engine) as session:
        _, pairs = record_vote(session, bad, "U2", Vote.down)
    assert len(pairs) == 1
    pair = pairs[0]
    assert (pair.chosen, pair.rejected, pair.source) == (
        "Run `systemctl restart ingest`.", "Reboot the whole cluster.", PairSource.vote_contrast)
    assert pair.interaction_id == bad
    with session_scope(engine) as session:  # the same contrast seen again adds nothing
        assert record_vote(session, bad, "U3", Vote.down)[1] == []
        assert session.query(PreferencePair).count() == 1
