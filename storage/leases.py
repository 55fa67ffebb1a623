"""Named leases with an expiry, held in the database: one scheduler, one run at a time, across processes."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import Lease, utcnow


def acquire_lease(session: Session, name: str, holder: str, ttl_s: float) -> bool:
    """Take or renew `name` for `holder`; False if someone else holds an unexpired lease.

    Callers use a short transaction of its own: on SQLite it is IMMEDIATE (one writer), on
    PostgreSQL the row lock from FOR UPDATE / the primary key makes the race safe.
    """
    now = utcnow()
    # populate_existing: the row as locked now, not a copy this session loaded earlier.
    locked = select(Lease).where(Lease.name == name).with_for_update().execution_options(populate_existing=True)
    lease = session.scalar(locked)
    if lease is None:
        try:
            with session.begin_nested():
                session.add(Lease(name=name, holder=holder, expires_at=now + timedelta(seconds=ttl_s)))
        except IntegrityError:  # another process inserted it first
            return False
        return True
    if lease.holder != holder and lease.expires_at > now:
        return False
    lease.holder, lease.expires_at = holder, now + timedelta(seconds=ttl_s)
    return True


def release_lease(session: Session, name: str, holder: str) -> None:
    session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))


def lease_holder(session: Session, name: str) -> str | None:
    lease = session.get(Lease, name)
    return lease.holder if lease and lease.expires_at > utcnow() else None


def lock_until_commit(session: Session, name: str) -> None:
    """Serialize the transactions that take `name`, until each ends. SQLite's IMMEDIATE transactions
    are serialized already; PostgreSQL takes a transaction-scoped advisory lock."""
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        session.execute(select(func.pg_advisory_xact_lock(key)))
