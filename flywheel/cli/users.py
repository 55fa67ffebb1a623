"""`flywheel users add | list | set-role | set-password | disable | enable`: accounts, over storage/users.py
(the same rules as the dashboard's Accounts page: roles, the password policy, the last enabled admin)."""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape

from flywheel.cli.common import acting_as, console, db_session, settings
from flywheel.cli.output import AS, JSON, emit, iso, table
from storage.models import Role, User
from storage.users import (
    create_user,
    get_user,
    list_users,
    normalize_username,
    require_may_set_password,
    require_role,
    set_enabled,
    set_password,
    set_role,
)

users_app = typer.Typer(help="Dashboard accounts: add, list, change a role or password, disable, enable.",
                        no_args_is_help=True)
NAME = typer.Argument(..., metavar="NAME", help="A username, or the e-mail single sign-on gives.")


def user_record(user: User) -> dict[str, Any]:
    return {"username": user.username, "role": user.role.value, "enabled": user.enabled,
            "created_at": iso(user.created_at), "last_sign_in_at": iso(user.last_sign_in_at)}


def done(as_json: bool, message: str, user: User) -> None:
    console.print(escape(message), highlight=False)
    emit(as_json, user_record(user))


def new_password(name: str) -> str:
    """FLYWHEEL_USER_PASSWORD, or asked for twice without echo (on standard error: stdout stays JSON)."""
    configured = settings().user_password
    if configured is not None:
        return configured.get_secret_value()
    return typer.prompt(f"password for {name!r}", hide_input=True, confirmation_prompt=True, err=True)


@users_app.command("add")
def add(name: str = NAME, role: Role = typer.Option(Role.reviewer, help="reviewer or admin."), as_user: str = AS,
        as_json: bool = JSON) -> None:
    """Create an enabled account (admins only); the password is asked for or read from FLYWHEEL_USER_PASSWORD."""
    with db_session() as session:  # refused before a password is asked for
        require_role(acting_as(session, as_user), Role.admin)
        name = normalize_username(name)
    password = new_password(name)  # asked outside any transaction: typing must not hold a database lock
    with db_session() as session:
        user = create_user(session, name, password, role, actor=acting_as(session, as_user))
    done(as_json, f"account {user.username!r} created ({role.value})", user)


@users_app.command("list")
def list_(as_json: bool = JSON) -> None:
    """Every account with its role, whether it is enabled, and its last sign-in."""
    with db_session() as session:
        records = [user_record(user) for user in list_users(session)]
    rows = [(r["username"], r["role"], "yes" if r["enabled"] else "no", r["created_at"], r["last_sign_in_at"])
            for r in records]
    emit(as_json, records, table("Accounts", ("account", "role", "enabled", "created", "last sign-in"), rows))


@users_app.command("set-role")
def change_role(name: str = NAME, role: Role = typer.Argument(..., help="reviewer or admin."), as_user: str = AS,
                as_json: bool = JSON) -> None:
    """Make an account a reviewer or an admin (admins only; the last enabled admin stays one)."""
    with db_session() as session:
        user = set_role(session, name, role, acting_as(session, as_user))
    done(as_json, f"{user.username} is now a {role.value}", user)


@users_app.command("set-password")
def change_password(name: str = NAME, as_user: str = AS, as_json: bool = JSON) -> None:
    """Set an account's password (an admin for anyone, everyone for themselves)."""
    with db_session() as session:
        require_may_set_password(acting_as(session, as_user), name)
        name = get_user(session, name).username
    password = new_password(name)
    with db_session() as session:
        user = set_password(session, name, password, acting_as(session, as_user))
    done(as_json, f"password of {user.username} changed", user)


def _set_enabled(name: str, enabled: bool, as_user: str, as_json: bool) -> None:
    with db_session() as session:
        user = set_enabled(session, name, enabled, acting_as(session, as_user))
    done(as_json, f"{user.username} {'enabled' if enabled else 'disabled'}", user)


@users_app.command("disable")
def disable(name: str = NAME, as_user: str = AS, as_json: bool = JSON) -> None:
    """Disable an account: it cannot sign in, and its open dashboard session ends at its next click."""
    _set_enabled(name, False, as_user, as_json)


@users_app.command("enable")
def enable(name: str = NAME, as_user: str = AS, as_json: bool = JSON) -> None:
    """Enable a disabled account again."""
    _set_enabled(name, True, as_user, as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
