"""A reviewer's decision on a pending item of the review queue (a preference pair or a vote): the same role,
transition, who-and-when and audit event for both."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from storage.audit import record_event
from storage.models import PairStatus, utcnow
from storage.states import transition
from storage.users import Actor, Role, require_role


def decide_review(session: Session, item, status: PairStatus, actor: Actor, target_type: str, **details: Any) -> None:
    """Approve or reject `item` (pending only: InvalidTransition otherwise), audited with before -> after."""
    require_role(actor, Role.reviewer)
    transition(item, status, f"{target_type.replace('_', ' ')} {item.id}")
    item.reviewer, item.reviewed_at = actor.name, utcnow()
    record_event(session, actor.name, "approve" if status is PairStatus.approved else "reject", target_type, item.id,
                 before={"status": PairStatus.pending.value}, after={"status": status.value}, **details)


def newest_first(session: Session, query, id_column, limit: int, before_id: int | None) -> list:
    """One page of a review queue, newest (highest id) first, keyset-paginated: pass the last id seen as
    `before_id`. Fast at 100k+ rows, where OFFSET is not."""
    query = query.order_by(id_column.desc()).limit(limit)
    if before_id is not None:
        query = query.where(id_column < before_id)
    return list(session.scalars(query))
