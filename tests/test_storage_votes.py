"""The review of votes on SQLite and PostgreSQL: pending by default, approve / reject like pairs (audited), a
changed vote waits for review again, the queue's filter and pages, and which votes may teach KTO."""

from __future__ import annotations

import pytest
from test_storage_interactions import ask

from storage.audit import list_events
from storage.db import session_scope
from storage.errors import InvalidTransition
from storage.interactions import (
    VoteFilter,
    approve_vote,
    count_teaching_votes_since,
    count_votes,
    fail_interaction,
    list_votes,
    record_vote,
    reject_vote,
    teaching_votes,
)
from storage.models import Feedback, PairStatus, Role, Vote, utcnow
from storage.users import Actor

REVIEWER, ADMIN = Actor("rita", Role.reviewer), Actor("ada", Role.admin)


def vote(engine, interaction_id: int, user: str, value: Vote) -> int:
    with session_scope(engine) as session:
        return record_vote(session, interaction_id, user, value)[0].id


def test_votes_are_reviewed_like_pairs(engine):
    good, bad, other = (vote(engine, ask(engine, f"answer {n}", thread=str(n)), "U2", v)
                        for n, v in enumerate((Vote.up, Vote.down, Vote.up)))
    with session_scope(engine) as session:
        assert session.get(Feedback, good).status is PairStatus.pending  # nobody reviewed it yet
        approve_vote(session, good, REVIEWER)
        reject_vote(session, bad, ADMIN, reason="the answer was fine")  # an admin may review too
    with session_scope(engine) as session:
        with pytest.raises(InvalidTransition, match=f"vote {bad} is rejected; it cannot become approved"):
            approve_vote(session, bad, REVIEWER)
        stored = session.get(Feedback, good)
        assert (stored.status, stored.reviewer) == (PairStatus.approved, "rita") and stored.reviewed_at.tzinfo
        events = [(e.actor, e.action, e.target_id, e.details["after"]["status"]) for e in list_events(session, target_type="vote")]
        assert sorted(events) == [("ada", "reject", bad, "rejected"), ("rita", "approve", good, "approved")]
        assert [v.id for v in list_votes(session)] == [other]  # the queue shows what waits
        assert count_votes(session, VoteFilter(status=None, vote=Vote.up)) == 2


def test_a_changed_vote_waits_for_review_again(engine):
    interaction_id = ask(engine)
    feedback_id = vote(engine, interaction_id, "U2", Vote.up)
    with session_scope(engine) as session:
        approve_vote(session, feedback_id, REVIEWER)
    vote(engine, interaction_id, "U2", Vote.up)  # the same click again keeps the review
    with session_scope(engine) as session:
        assert session.get(Feedback, feedback_id).status is PairStatus.approved
    vote(engine, interaction_id, "U2", Vote.down)
    with session_scope(engine) as session:
        stored = session.get(Feedback, feedback_id)
        assert (stored.vote, stored.status, stored.reviewer, stored.reviewed_at) == (Vote.down, PairStatus.pending, None, None)


def test_the_queue_pages_newest_first(engine):
    ids = [vote(engine, ask(engine, f"answer {n}", thread=str(n)), "U2", Vote.down) for n in range(5)]
    with session_scope(engine) as session:
        first = list_votes(session, limit=3)
        second = list_votes(session, limit=3, before_id=first[-1].id)
        assert [v.id for v in first + second] == ids[::-1]
        assert first[0].interaction.answer == "answer 4"


def test_teaching_votes_are_the_approved_ones_on_answers(engine):
    since = utcnow()
    approved, pending, rejected = (vote(engine, ask(engine, f"answer {n}", thread=str(n)), "U2", Vote.up) for n in range(3))
    failed = ask(engine, "", thread="9")
    with session_scope(engine) as session:
        fail_interaction(session, failed, "vLLM down")
    failed_vote = vote(engine, failed, "U3", Vote.down)
    with session_scope(engine) as session:
        approve_vote(session, approved, REVIEWER)
        reject_vote(session, rejected, REVIEWER)
    with session_scope(engine) as session:
        assert [v.id for v in teaching_votes(session)] == [approved]
        assert [v.id for v in teaching_votes(session, include_pending=True)] == [approved, pending]
        assert failed_vote not in [v.id for v in list_votes(session, VoteFilter(status=None))]  # no answer to judge
        assert count_teaching_votes_since(session, since) == 1
        assert count_teaching_votes_since(session, utcnow()) == 0
        assert count_teaching_votes_since(session, None, include_pending=True) == 2
