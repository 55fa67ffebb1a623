"""Audit trail: who did what to which record, and when. A change records `before` and `after`
(the fields it changed, as they were and as they are) among its details."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import AuditEvent


def record_event(
    session: Session, actor: str, action: str, target_type: str, target_id: int | None, **details: Any
) -> AuditEvent:
    event = AuditEvent(actor=actor, action=action, target_type=target_type, target_id=target_id, details=details)
    session.add(event)
    return event


def list_events(
    session: Session, limit: int | None = 200, target_type: str | None = None, *, actor: str | None = None,
    actions: Collection[str] = (), since: datetime | None = None, until: datetime | None = None,
) -> list[AuditEvent]:
    """Newest first. `actor` matches without regard to case; `until` is exclusive."""
    query = select(AuditEvent).order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()).limit(limit)
    if target_type:
        query = query.where(AuditEvent.target_type == target_type)
    if actor:
        query = query.where(func.lower(AuditEvent.actor) == actor.strip().lower())
    if actions:
        query = query.where(AuditEvent.action.in_(actions))
    if since is not None:
        query = query.where(AuditEvent.created_at >= since)
    if until is not None:
        query = query.where(AuditEvent.created_at < until)
    return list(session.scalars(query))


def recorded_actions(session: Session) -> list[str]:
    return list(session.scalars(select(AuditEvent.action).distinct().order_by(AuditEvent.action)))


def describe_change(details: dict[str, Any]) -> str:
    """One line: "role: reviewer → admin; account=rita" (before → after first, the other details after)."""
    before, after = details.get("before", {}), details.get("after", {})
    changes = [f"{key}: {before.get(key, '—')} → {after.get(key, '—')}" for key in dict.fromkeys([*before, *after])]
    others = [f"{key}={value}" for key, value in details.items()
              if key not in ("before", "after") and value not in ("", None)]
    return "; ".join(changes + others)


CSV_COLUMNS = ("when_utc", "actor", "action", "target_type", "target_id", "change", "details_json")


def events_csv(events: list[AuditEvent]) -> str:
    """Events as CSV, one row each: the readable change and, for tools, every detail as JSON."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for e in events:
        writer.writerow((e.created_at.isoformat(), e.actor, e.action, e.target_type, e.target_id,
                         describe_change(e.details), json.dumps(e.details, ensure_ascii=False, sort_keys=True)))
    return out.getvalue()
