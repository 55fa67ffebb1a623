"""Signing in, and the protection around it.

Every attempt is recorded by the name as typed, whether or not such an account exists, so that a
lockout says nothing about which accounts exist. 5 failures within 15 minutes lock that name, and
20 from one client lock that client (a password sprayed over many names), for 1 minute, doubled by
each further failure up to 15 minutes. A successful sign-in clears its account's count, not its
client's. Successful, failed and refused sign-ins are audited.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from storage.audit import record_event
from storage.leases import lock_until_commit
from storage.models import SignInAttempt, SignInOutcome, User, utcnow
from storage.users import MAX_USERNAME_LENGTH, Actor, find_user, hash_password, verify_password

ACCOUNT_FAILURES = 5
CLIENT_FAILURES = 20
WINDOW = timedelta(minutes=15)
FIRST_DELAY = timedelta(minutes=1)
MAX_DELAY = timedelta(minutes=15)
KEPT_FOR = timedelta(days=1)  # older attempts no longer count; the audit trail keeps the record
WRONG = "Unknown user or wrong password."


@dataclass(frozen=True)
class SignInResult:
    actor: Actor | None  # None: refused, and `message` says why in words that reveal no account
    message: str = ""
    retry_after: timedelta | None = None


@lru_cache(maxsize=1)
def _decoy_hash() -> str:
    # Checking a password against this for an unknown name takes as long as for a real account.
    return hash_password("no account has this password")


def _lockout_left(session: Session, who, since: datetime, limit: int, now: datetime) -> timedelta | None:
    failures = session.scalars(
        select(SignInAttempt.created_at)
        .where(who, SignInAttempt.outcome == SignInOutcome.failed, SignInAttempt.created_at >= since)
        .order_by(SignInAttempt.created_at)
    ).all()
    if len(failures) < limit:
        return None
    delay = min(FIRST_DELAY * 2 ** min(len(failures) - limit, 10), MAX_DELAY)
    left = failures[-1] + delay - now
    return left if left > timedelta(0) else None


def lockout_left(session: Session, name: str, client: str, now: datetime) -> timedelta | None:
    """How much longer sign-ins as `name`, or from `client`, are refused (None: not locked)."""
    last_success = session.scalar(select(func.max(SignInAttempt.created_at)).where(
        SignInAttempt.username == name, SignInAttempt.outcome == SignInOutcome.ok))
    since = max(now - WINDOW, last_success) if last_success else now - WINDOW
    waits = [_lockout_left(session, SignInAttempt.username == name, since, ACCOUNT_FAILURES, now)]
    if client:  # without an address there is nothing to tell clients apart by
        waits.append(_lockout_left(session, SignInAttempt.client == client, now - WINDOW, CLIENT_FAILURES, now))
    return max(filter(None, waits), default=None)


def _locked_message(left: timedelta) -> str:
    minutes = math.ceil(left.total_seconds() / 60)
    return f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes > 1 else ''}."


def _record(session: Session, name: str, client: str, outcome: SignInOutcome, now: datetime) -> None:
    session.add(SignInAttempt(username=name, client=client[:64], outcome=outcome, created_at=now))


def _signed_in(session: Session, user: User, client: str, method: str, now: datetime) -> Actor:
    user.last_sign_in_at = now
    _record(session, user.username, client, SignInOutcome.ok, now)
    record_event(session, user.username, "sign_in", "user", user.id, client=client, method=method)
    return Actor(user.username, user.role)


def _why_refused(user: User | None, password: str) -> str | None:
    if user is None:
        verify_password(password, _decoy_hash())
        return "unknown user"
    if not verify_password(password, user.password_hash):
        return "wrong password"
    return None if user.enabled else "account disabled"


def sign_in(session: Session, username: str, password: str, client: str = "", *,
            now: datetime | None = None) -> SignInResult:
    """Check a password sign-in. `client` is the address it came from ("" when unknown)."""
    now = now or utcnow()
    name = username.strip().lower()[:MAX_USERNAME_LENGTH]
    lock_until_commit(session, f"sign-in:{name}")  # tries for one name are counted one at a time
    session.execute(delete(SignInAttempt).where(SignInAttempt.created_at < now - KEPT_FOR))
    left = lockout_left(session, name, client, now)
    if left is not None:
        _record(session, name, client, SignInOutcome.locked, now)
        record_event(session, name, "sign_in_locked", "user", None, client=client,
                     retry_after_s=round(left.total_seconds()))
        return SignInResult(None, _locked_message(left), left)
    user = find_user(session, name)
    reason = _why_refused(user, password)
    if reason is None:
        return SignInResult(_signed_in(session, user, client, "password", now))
    _record(session, name, client, SignInOutcome.failed, now)
    record_event(session, name, "sign_in_failed", "user", user.id if user else None, client=client, reason=reason)
    session.flush()
    left = lockout_left(session, name, client, now)
    message = WRONG if left is None else f"{WRONG} {_locked_message(left)}"
    return SignInResult(None, message, left)


def sign_in_verified(session: Session, username: str, client: str = "", *, method: str = "oidc",
                     now: datetime | None = None) -> Actor | None:
    """Sign in a name an identity provider has verified (an e-mail): the enabled account of that name,
    or None. Audited like a password sign-in."""
    now = now or utcnow()
    user = find_user(session, username)
    if user is None or not user.enabled:
        record_event(session, username.strip().lower()[:MAX_USERNAME_LENGTH], "sign_in_failed", "user",
                     user.id if user else None, client=client, method=method, reason="no enabled account")
        return None
    return _signed_in(session, user, client, method, now)
