"""Dashboard accounts and roles. Passwords are stored as salted scrypt hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.errors import InvalidInput, PermissionDenied
from storage.models import Role, User

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


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


def create_user(session: Session, username: str, password: str, role: Role) -> User:
    if not username.strip():
        raise InvalidInput("username must not be empty")
    if len(password) < 8:
        raise InvalidInput("password must have at least 8 characters")
    if session.scalar(select(User).where(User.username == username)):
        raise InvalidInput(f"user {username!r} exists already")
    user = User(username=username, password_hash=hash_password(password), role=role)
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, username: str, password: str) -> Actor | None:
    user = session.scalar(select(User).where(User.username == username))
    if user is None or not verify_password(password, user.password_hash):
        return None
    return Actor(user.username, user.role)


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def require_role(actor: Actor, role: Role) -> None:
    """Admins may do everything a reviewer may; a reviewer may not do admin actions."""
    if role is Role.admin and actor.role is not Role.admin:
        raise PermissionDenied(f"{actor.name} is a {actor.role.value}; this action needs an admin")
