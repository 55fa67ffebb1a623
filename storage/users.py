"""Dashboard accounts and roles: every account rule, for the dashboard and `flywheel users` alike.

Passwords are stored as salted scrypt hashes. Names (a username, or an e-mail for single sign-on) are
kept in lower case and matched without regard to case. Accounts are disabled, never deleted, and the
last enabled admin can be neither disabled nor demoted. Every change is audited with before -> after.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.audit import record_event
from storage.errors import InvalidInput, InvalidTransition, NotFound, PermissionDenied
from storage.leases import lock_until_commit
from storage.models import Role, User

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256  # hashing a megabyte-long "password" would be a cheap way to burn CPU
MAX_USERNAME_LENGTH = 64
ACCOUNTS_LOCK = "accounts"  # account changes one at a time: two admins demoting each other leave one


@dataclass(frozen=True)
class Actor:
    """Who is acting: a signed-in user, or the system itself (scheduler, CLI run by an operator)."""

    name: str
    role: Role


SYSTEM = Actor("system", Role.admin)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    _, salt, digest = stored.split("$")
    candidate = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), **_SCRYPT)
    return hmac.compare_digest(candidate.hex(), digest)


def normalize_username(username: str) -> str:
    name = username.strip().lower()
    if not name:
        raise InvalidInput("a username must not be empty")
    if len(name) > MAX_USERNAME_LENGTH or any(c.isspace() for c in name):
        raise InvalidInput(f"a username (or e-mail) has at most {MAX_USERNAME_LENGTH} characters and no spaces")
    return name


def check_password_policy(password: str, username: str) -> None:
    """The password policy; a refusal names the rule that was broken."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"password too short: the password policy asks for at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password too long: the password policy allows at most {MAX_PASSWORD_LENGTH} characters")
    if password.strip().lower() == username:
        raise InvalidInput("password refused: the password policy forbids the account's own name")


def require_role(actor: Actor, role: Role) -> None:
    """Admins may do everything a reviewer may; a reviewer may not do admin actions."""
    if role is Role.admin and actor.role is not Role.admin:
        raise PermissionDenied(f"{actor.name} is a {actor.role.value}; this action needs an admin")


def require_may_set_password(actor: Actor, username: str) -> None:
    """An admin sets anyone's password; everyone may set their own."""
    if actor.name != normalize_username(username):
        require_role(actor, Role.admin)


def find_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(func.lower(User.username) == username.strip().lower()))


def get_user(session: Session, username: str) -> User:
    user = find_user(session, username)
    if user is None:
        raise NotFound(f"no account named {username.strip().lower()!r}")
    return user


def get_actor(session: Session, username: str) -> Actor | None:
    """The enabled account of this name as the database holds it now, or None."""
    user = find_user(session, username)
    return Actor(user.username, user.role) if user is not None and user.enabled else None


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def _audit(session: Session, actor: Actor, action: str, user: User, before: dict, after: dict, **details: Any) -> None:
    record_event(session, actor.name, action, "user", user.id, account=user.username, before=before, after=after,
                 **details)


def create_user(session: Session, username: str, password: str, role: Role, *, actor: Actor = SYSTEM) -> User:
    """A new enabled account. `actor` is the admin creating it (the system itself for `flywheel init`)."""
    require_role(actor, Role.admin)
    name = normalize_username(username)
    check_password_policy(password, name)
    lock_until_commit(session, ACCOUNTS_LOCK)
    if find_user(session, name) is not None:
        raise InvalidInput(f"an account named {name!r} exists already")
    user = User(username=name, password_hash=hash_password(password), role=role, enabled=True)
    session.add(user)
    session.flush()
    _audit(session, actor, "create_user", user, {}, {"role": role.value, "enabled": True})
    return user


def _refuse_if_last_admin(session: Session, user: User, change: str) -> None:
    if user.role is not Role.admin or not user.enabled:
        return
    others = select(func.count(User.id)).where(User.role == Role.admin, User.enabled.is_(True), User.id != user.id)
    if not session.scalar(others):
        raise InvalidTransition(f"{user.username} is the last enabled admin; make another admin before you {change}")


def set_role(session: Session, username: str, role: Role, actor: Actor) -> User:
    require_role(actor, Role.admin)
    lock_until_commit(session, ACCOUNTS_LOCK)
    user = get_user(session, username)
    if user.role is role:
        raise InvalidInput(f"{user.username} is a {role.value} already")
    if role is not Role.admin:
        _refuse_if_last_admin(session, user, "demote them")
    before, user.role = user.role, role
    _audit(session, actor, "set_role", user, {"role": before.value}, {"role": role.value})
    return user


def set_password(session: Session, username: str, password: str, actor: Actor) -> User:
    require_may_set_password(actor, username)
    user = get_user(session, username)
    check_password_policy(password, user.username)
    user.password_hash = hash_password(password)
    _audit(session, actor, "set_password", user, {}, {}, password="changed")  # never the password itself
    return user


def set_enabled(session: Session, username: str, enabled: bool, actor: Actor) -> User:
    """Disable or enable an account. A disabled account cannot sign in, and a session it has is signed
    out at its next click; its name stays in the audit trail and on the pairs it reviewed."""
    require_role(actor, Role.admin)
    lock_until_commit(session, ACCOUNTS_LOCK)
    user = get_user(session, username)
    if user.enabled == enabled:
        raise InvalidInput(f"{user.username} is {'enabled' if enabled else 'disabled'} already")
    if not enabled:
        if user.username == actor.name:
            raise InvalidInput("you cannot disable your own account; ask another admin")
        _refuse_if_last_admin(session, user, "disable them")
    user.enabled = enabled
    _audit(session, actor, "enable_user" if enabled else "disable_user", user, {"enabled": not enabled},
           {"enabled": enabled})
    return user
