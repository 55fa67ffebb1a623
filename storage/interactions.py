"""Conversations, answers (interactions), votes and better answers: what the bot and playground record; and the
review of votes (approved votes teach KTO runs)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, case, func, null, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, joinedload

from storage.errors import InvalidInput, NotFound
from storage.models import (
    Alternative,
    Conversation,
    Feedback,
    Interaction,
    InteractionStatus,
    PairSource,
    PairStatus,
    PreferencePair,
    Vote,
    utcnow,
)
from storage.pairs import create_pair
from storage.review import decide_review, newest_first
from storage.users import Actor


def prompt_hash(prompt_messages: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(prompt_messages, sort_keys=True).encode()).hexdigest()


@lru_cache(maxsize=4)
def _question_statements(dialect_name: str):
    """(conversation upsert, question insert) for a dialect, built once: building and keying a statement
    costs more CPU than running it, and a burst of questions runs these a hundred times at once."""
    insert = (postgresql if dialect_name == "postgresql" else sqlite).insert
    conversation = insert(Conversation.__table__).values(
        {name: bindparam(name) for name in ("source", "team_id", "channel_id", "thread_ts", "created_at")}
    )
    # The no-op update makes RETURNING give the id of a row a concurrent writer inserted first.
    conversation = conversation.on_conflict_do_update(
        index_elements=["source", "team_id", "channel_id", "thread_ts"], set_={"source": conversation.excluded.source}
    ).returning(Conversation.__table__.c.id)
    columns = ("conversation_id", "prompt_messages", "prompt_hash", "user_id", "event_id", "question_ts", "created_at")
    question = insert(Interaction.__table__).values({name: bindparam(name) for name in columns})
    question = question.on_conflict_do_nothing(index_elements=["event_id"])  # a redelivered event adds nothing
    return conversation, question.returning(Interaction.__table__.c.id)


def _conversation_id(session: Session, source: str, team_id: str, channel_id: str, thread_ts: str) -> int:
    statement = _question_statements(session.get_bind().dialect.name)[0]
    values = dict(source=source, team_id=team_id, channel_id=channel_id, thread_ts=thread_ts, created_at=utcnow())
    return session.connection().execute(statement, values).scalar_one()


def _interaction_id(
    session: Session, conversation_id: int, prompt_messages: list[dict[str, Any]], user_id: str,
    event_id: str | None, question_ts: str | None,
) -> int | None:
    statement = _question_statements(session.get_bind().dialect.name)[1]
    values = dict(conversation_id=conversation_id, prompt_messages=prompt_messages,
                  prompt_hash=prompt_hash(prompt_messages), user_id=user_id, event_id=event_id,
                  question_ts=question_ts, created_at=utcnow())
    return session.connection().execute(statement, values).scalar_one_or_none()


def get_or_create_conversation(
    session: Session, source: str, team_id: str = "", channel_id: str = "", thread_ts: str = ""
) -> Conversation:
    return session.get(Conversation, _conversation_id(session, source, team_id, channel_id, thread_ts))


def start_interaction(
    session: Session,
    conversation: Conversation,
    prompt_messages: list[dict[str, Any]],
    *,
    user_id: str = "",
    event_id: str | None = None,
    question_ts: str | None = None,
) -> Interaction | None:
    """Record a question before it is answered, so a failed generation still leaves it stored.

    Returns None when `event_id` was seen already (a Slack retry): the caller must not answer again.
    """
    interaction_id = _interaction_id(session, conversation.id, prompt_messages, user_id, event_id, question_ts)
    return None if interaction_id is None else session.get(Interaction, interaction_id)


def record_question(
    session: Session, source: str, where: tuple[str, str, str], prompt_messages: list[dict[str, Any]], *,
    user_id: str, event_id: str | None, question_ts: str | None,
) -> int | None:
    """`start_interaction` for a question that must be stored before it is acknowledged (the bot's hot
    path: a burst of a hundred waits on it): two statements, no ORM unit of work. `where` is (team,
    channel, thread). Returns the interaction id, or None when `event_id` was stored before."""
    conversation_id = _conversation_id(session, source, *where)
    return _interaction_id(session, conversation_id, prompt_messages, user_id, event_id, question_ts)


def get_interaction(session: Session, interaction_id: int) -> Interaction:
    interaction = session.get(Interaction, interaction_id)
    if interaction is None:
        raise NotFound(f"no interaction {interaction_id}")
    return interaction


def complete_interaction(
    session: Session,
    interaction_id: int,
    *,
    answer: str,
    served_model: str,
    model_version_id: int | None,
    latency_ms: float,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
) -> Interaction:
    interaction = get_interaction(session, interaction_id)
    interaction.answer, interaction.served_model = answer, served_model
    interaction.model_version_id, interaction.latency_ms = model_version_id, latency_ms
    interaction.prompt_tokens, interaction.completion_tokens = prompt_tokens, completion_tokens
    interaction.status, interaction.error = InteractionStatus.ok, None
    return interaction


def fail_interaction(session: Session, interaction_id: int, error: str) -> Interaction:
    interaction = get_interaction(session, interaction_id)
    interaction.status, interaction.error = InteractionStatus.failed, error
    return interaction


def set_message_ts(session: Session, interaction_id: int, message_ts: str) -> None:
    get_interaction(session, interaction_id).message_ts = message_ts


def set_prompt_messages(session: Session, interaction_id: int, prompt_messages: list[dict[str, Any]]) -> None:
    """The prompt as the model will see it (the question with its thread), once the thread has been read."""
    interaction = get_interaction(session, interaction_id)
    interaction.prompt_messages, interaction.prompt_hash = prompt_messages, prompt_hash(prompt_messages)


@dataclass(frozen=True)
class WaitingQuestion:
    """A stored question still owed an answer, and where the answer goes."""

    interaction_id: int
    team_id: str
    channel_id: str
    thread_ts: str
    user_id: str
    replace_ts: str | None  # Try again: in place of this message


def waiting_questions(session: Session, source: str, since: datetime) -> list[WaitingQuestion]:
    """Questions of `source` stored but not answered (oldest first): asked since `since`, or asked again
    (Try again) whenever. The bot's answer queue is fed from here, so a question acked is a question
    answered by whichever bot process owns its channel, after a restart too."""
    query = (
        select(Interaction.id, Conversation.team_id, Conversation.channel_id, Conversation.thread_ts,
               Interaction.user_id, Interaction.replace_ts)
        .join(Conversation)
        .where(Conversation.source == source, Interaction.status == InteractionStatus.pending,
               or_(Interaction.created_at >= since, Interaction.replace_ts.is_not(None)))
        .order_by(Interaction.id)
    )
    return [WaitingQuestion(*row) for row in session.execute(query)]


def ask_again(session: Session, interaction_id: int, replace_ts: str) -> bool:
    """Try again on a failed answer: the question waits again, to be answered in place of `replace_ts` (the
    notice the button was under). False when it is waiting or answered already (a second click)."""
    interaction = get_interaction(session, interaction_id)
    if interaction.status is not InteractionStatus.failed:
        return False
    interaction.status, interaction.error, interaction.replace_ts = InteractionStatus.pending, None, replace_ts
    return True


@lru_cache(maxsize=4)
def _vote_upsert(dialect_name: str):
    """One statement, atomic on both backends: concurrent clicks of the same user cannot add a second row.
    Built once per dialect (a burst of votes runs it a hundred times at once)."""
    insert = (postgresql if dialect_name == "postgresql" else sqlite).insert
    columns = ("interaction_id", "user_id", "vote", "comment", "created_at", "updated_at")
    upsert = insert(Feedback.__table__).values({name: bindparam(name) for name in columns})
    # A changed vote is a new judgement: it waits for review again (the same vote again keeps its review).
    table, changed = Feedback.__table__, Feedback.__table__.c.vote != upsert.excluded.vote
    review = {"status": case((changed, PairStatus.pending.value), else_=table.c.status),
              **{name: case((changed, null()), else_=table.c[name]) for name in ("reviewer", "reviewed_at")}}
    upsert = upsert.on_conflict_do_update(
        index_elements=["interaction_id", "user_id"],
        set_={**{name: upsert.excluded[name] for name in ("vote", "comment", "updated_at")}, **review},
    )
    return upsert.returning(Feedback.__table__.c.id)


def record_vote(
    session: Session, interaction_id: int, user_id: str, vote: Vote, comment: str | None = None
) -> tuple[Feedback, list[PreferencePair]]:
    """One vote per (interaction, user): a second click changes it. Returns the vote and any new
    vote-contrast pairs (the same prompt answered twice, one answer up and the other down)."""
    interaction = get_interaction(session, interaction_id)
    now = utcnow()
    values = dict(interaction_id=interaction_id, user_id=user_id, vote=vote, comment=comment, created_at=now,
                  updated_at=now)
    feedback_id = session.connection().execute(_vote_upsert(session.get_bind().dialect.name), values).scalar_one()
    feedback = session.get(Feedback, feedback_id, populate_existing=True)
    return feedback, _vote_contrast_pairs(session, interaction)


def _vote_contrast_pairs(session: Session, interaction: Interaction) -> list[PreferencePair]:
    """Pair this answer with other answers to the same prompt whose net vote has the opposite sign."""
    if interaction.status is not InteractionStatus.ok:
        return []
    net = func.sum(case((Feedback.vote == Vote.up, 1), else_=-1))
    nets = dict(session.execute(  # this answer's and its siblings' net votes, in one query
        select(Interaction.id, net).join(Feedback, Feedback.interaction_id == Interaction.id)
        .where(Interaction.prompt_hash == interaction.prompt_hash, Interaction.status == InteractionStatus.ok)
        .group_by(Interaction.id)
    ).all())
    mine = nets.pop(interaction.id, 0)
    opposite = [other for other, theirs in nets.items() if theirs * mine < 0]
    pairs = []
    for other in session.scalars(select(Interaction).where(Interaction.id.in_(opposite))) if opposite else []:
        if other.answer == interaction.answer:
            continue
        chosen, rejected = (interaction, other) if mine > 0 else (other, interaction)
        pair = create_pair(
            session, interaction.prompt_messages, chosen.answer, rejected.answer, PairSource.vote_contrast,
            interaction_id=rejected.id, channel_id=interaction.conversation.channel_id,
        )
        if pair:
            pairs.append(pair)
    return pairs


def record_alternative(
    session: Session, interaction_id: int, user_id: str, text: str
) -> tuple[Alternative, PreferencePair | None]:
    """A user's better answer: stored, and turned into a pending pair (chosen = it, rejected = the bot's).

    An interaction whose generation failed has no answer to reject: the text is kept, no pair is made."""
    interaction = get_interaction(session, interaction_id)
    if not text or not text.strip():
        raise InvalidInput("the better answer is empty")
    if text.strip() == interaction.answer.strip():
        raise InvalidInput("the better answer is the same as the bot's answer")
    alternative = Alternative(interaction_id=interaction_id, user_id=user_id, text=text)
    session.add(alternative)
    session.flush()
    if not interaction.answer.strip():
        return alternative, None
    pair = create_pair(
        session, interaction.prompt_messages, text, interaction.answer, PairSource.alternative,
        interaction_id=interaction_id, alternative_id=alternative.id,
        channel_id=interaction.conversation.channel_id,
    )
    return alternative, pair


# --- the review of votes (KTO learns from the approved ones) -------------------------------------


@dataclass(frozen=True)
class VoteFilter:
    status: PairStatus | None = PairStatus.pending
    vote: Vote | None = None

    def apply(self, query):
        query = query.join(Interaction).where(Interaction.status == InteractionStatus.ok)  # only answers are judged
        if self.status is not None:
            query = query.where(Feedback.status == self.status)
        if self.vote is not None:
            query = query.where(Feedback.vote == self.vote)
        return query


def list_votes(
    session: Session, flt: VoteFilter = VoteFilter(), *, limit: int = 50, before_id: int | None = None
) -> list[Feedback]:
    """Newest first, keyset-paginated like the pairs; each with its interaction (prompt and answer) loaded."""
    query = flt.apply(select(Feedback).options(joinedload(Feedback.interaction)))
    return newest_first(session, query, Feedback.id, limit, before_id)


def count_votes(session: Session, flt: VoteFilter = VoteFilter()) -> int:
    return session.scalar(flt.apply(select(func.count(Feedback.id)))) or 0


def get_vote(session: Session, feedback_id: int) -> Feedback:
    feedback = session.get(Feedback, feedback_id)
    if feedback is None:
        raise NotFound(f"no vote {feedback_id}")
    return feedback


def approve_vote(session: Session, feedback_id: int, actor: Actor) -> Feedback:
    """The reviewer agrees with the vote: the answer is good (👍) or bad (👎) as voted."""
    feedback = get_vote(session, feedback_id)
    decide_review(session, feedback, PairStatus.approved, actor, "vote")
    return feedback


def reject_vote(session: Session, feedback_id: int, actor: Actor, *, reason: str = "") -> Feedback:
    feedback = get_vote(session, feedback_id)
    decide_review(session, feedback, PairStatus.rejected, actor, "vote", reason=reason)
    return feedback


def _teaching(query, include_pending: bool):
    """Votes that may teach: approved ones (and, per the setting, pending ones too), on stored answers."""
    statuses = [PairStatus.approved, PairStatus.pending] if include_pending else [PairStatus.approved]
    return VoteFilter(status=None).apply(query).where(Feedback.status.in_(statuses), Interaction.answer != "")


def teaching_votes(session: Session, *, include_pending: bool = False) -> list[Feedback]:
    """Oldest first, each with its interaction loaded."""
    query = select(Feedback).options(joinedload(Feedback.interaction)).order_by(Feedback.id)
    return list(session.scalars(_teaching(query, include_pending)))


def count_teaching_votes_since(session: Session, since: datetime | None, *, include_pending: bool = False) -> int:
    """Votes that may teach, cast, changed or reviewed after `since` (a review or a change updates the row)."""
    query = _teaching(select(func.count(Feedback.id)), include_pending)
    if since is not None:
        query = query.where(Feedback.updated_at > since)
    return session.scalar(query) or 0
