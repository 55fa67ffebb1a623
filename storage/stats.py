"""Aggregates: answers and votes per day and per served model (the overview), pairs by status and source."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, distinct, func, select
from sqlalchemy.orm import Session

from storage.models import Feedback, Interaction, InteractionStatus, PreferencePair, Vote


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
