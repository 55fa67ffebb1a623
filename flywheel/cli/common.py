"""What every CLI command shares: settings, a migrated engine, and turning refusals into clean exits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from flywheel.settings import Settings, SettingsError, get_settings, masked_url
from storage.db import DatabaseNotMigrated, get_engine, require_migrated, session_scope
from storage.errors import StorageError
from storage.users import Actor, get_actor

console = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    # Escaped: a message quoting user input (e.g. "[x]") must print as it is; soft wrap keeps lines whole.
    console.print(f"[red]error:[/red] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        raise fail(str(exc), 2) from None


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Storage refusals and database failures end the command with their message, not a traceback."""
    try:
        yield
    except (DatabaseNotMigrated, StorageError) as exc:
        raise fail(str(exc)) from None
    except OperationalError as exc:  # unreachable server, locked file: say which database, hide the password
        raise fail(f"cannot use the database {masked_url(url)}: {exc.orig}") from None


@contextmanager
def db_session() -> Iterator[Session]:
    """A transaction on the migrated database."""
    url = settings().database_url
    with database_errors(url):
        engine = get_engine(url)
        require_migrated(engine)
        with session_scope(engine) as session:
            yield session


def acting_as(session: Session, username: str) -> Actor:
    """The account `--as` names, with its role as stored now; storage/ then checks that role."""
    actor = get_actor(session, username)
    if actor is None:
        raise fail(f"--as {username}: there is no enabled account of that name")
    return actor
