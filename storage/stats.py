"""Aggregates: answers and votes per day and per served model (the dashboard's overview); pairs, votes and
runs counted for the metrics the scheduler exports (each an indexed or bounded query: they run at every scrape)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, distinct, func, select
from sqlalchemy.orm import Session

from storage.models import (
    Feedback,
    Interaction,
    InteractionStatus,
    PairSource,
    PairStatus,
    PreferencePair,
    RunKind,
    RunStatus,
    TrainingRun,
    Vote,
)

ID_CHUNK = 500  # ids per IN (...) list: far below SQLite's limit on bound parameters


def _day(column):
    # date() exists on SQLite and PostgreSQL; SQLite returns text, PostgreSQL a date: callers get str.
    return func.date(column)


def daily_interactions(session: Session, since: datetime) -> list[dict]:
    """Per day: answers given, and how many of them got at least one vote."""
    day = _day(Interaction.created_at).label("day")
    query = (
        select(day, func.count(distinct(Interaction.id)), func.count(distinct(Feedback.interaction_id)))
        .outerjoin(Feedback, Feedback.interaction_id == Interaction.id)
        .where(Interaction.created_at >= since, Interaction.status == InteractionStatus.ok)
        .group_by(day)
        .order_by(day)
    )
    return [{"day": str(d), "interactions": n, "with_feedback": voted} for d, n, voted in session.execute(query)]


def daily_votes_by_model(session: Session, since: datetime) -> list[dict]:
    """Per day and served model (version name or "base"): thumbs up and thumbs down."""
    day = _day(Feedback.created_at).label("day")
    up = func.sum(case((Feedback.vote == Vote.up, 1), else_=0))
    query = (
        select(day, Interaction.served_model, up, func.count(Feedback.id))
        .join(Interaction, Interaction.id == Feedback.interaction_id)
        .where(Feedback.created_at >= since)
        .group_by(day, Interaction.served_model)
        .order_by(day)
    )
    return [
        {"day": str(d), "model": model or "unknown", "up": int(ups or 0), "votes": total}
        for d, model, ups, total in session.execute(query)
    ]


def pair_counts(session: Session, *, since: datetime | None = None, per_day: bool = False) -> list[dict]:
    """Pairs by status and source (their current status): all, or those created since `since`; with
    `per_day`, also by the day they were created."""
    P = PreferencePair
    keys = [P.status.label("status"), P.source.label("source")]
    if per_day:
        keys.insert(0, _day(P.created_at).label("day"))
    query = select(*keys, func.count(P.id).label("count")).group_by(*keys).order_by(*keys)
    if since is not None:
        query = query.where(P.created_at >= since)
    return [
        {**row, "status": row["status"].value, "source": row["source"].value}
        | ({"day": str(row["day"])} if per_day else {})
        for row in (r._asdict() for r in session.execute(query))
    ]
def pair_source_counts(session: Session, pair_ids: list[int]) -> dict[PairSource, int]:
    """How many of these pairs came from each source."""
    counts: dict[PairSource, int] = {}
    for start in range(0, len(pair_ids), ID_CHUNK):
        chunk = pair_ids[start : start + ID_CHUNK]
        query = select(PreferencePair.source, func.count()).where(PreferencePair.id.in_(chunk))
        for source, n in session.execute(query.group_by(PreferencePair.source)):
            counts[source] = counts.get(source, 0) + n
    return counts


def oldest_pending_pair_at(session: Session) -> datetime | None:
    """When the oldest pair still waiting for review was created (None: the queue is empty)."""
    query = select(func.min(PreferencePair.created_at)).where(PreferencePair.status == PairStatus.pending)
    return session.scalar(query)


def votes_on_answers(session: Session, served_model: str, since: datetime, until: datetime) -> dict[Vote, int]:
    """Votes on the answers `served_model` gave between `since` and `until` (a range of one index)."""
    query = (
        select(Feedback.vote, func.count())
        .join(Interaction, Interaction.id == Feedback.interaction_id)
        .where(Interaction.served_model == served_model, Interaction.created_at >= since,
               Interaction.created_at <= until)
        .group_by(Feedback.vote)
    )
    return {vote: n for vote, n in session.execute(query)}


def run_counts(session: Session) -> dict[tuple[RunKind, RunStatus], int]:
    query = select(TrainingRun.kind, TrainingRun.status, func.count()).group_by(TrainingRun.kind, TrainingRun.status)
    return {(kind, status): n for kind, status, n in session.execute(query)}


def gate_decisions(session: Session) -> dict[bool, int]:
    """Succeeded runs whose candidate passed the gate (True: registered) or not (False)."""
    passed = TrainingRun.not_registered_reason.is_(None)
    query = select(passed, func.count()).where(TrainingRun.status == RunStatus.succeeded).group_by(passed)
    return {bool(flag): n for flag, n in session.execute(query)}
