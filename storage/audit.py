"""Audit trail: who did what to which record, and when."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import AuditEvent


def record_event(
    session: Session, actor: str, action: str, target_type: str, target_id: int | None, **details: Any
) -> AuditEvent:
    event = AuditEvent(actor=actor, action=action, target_type=target_type, target_id=target_id, details=details)
    session.add(event)
    return event


def list_events(session: Session, limit: int = 200, target_type: str | None = None) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()).limit(limit)
    if target_type:
        query = query.where(AuditEvent.target_type == target_type)
    return list(session.scalars(query))
