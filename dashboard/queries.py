"""Data access for the pages: a transaction helper, cached aggregates, and actions that report refusals.

Everything here calls storage/ (and serving/ for the adapters): the rules live there, not in the UI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import streamlit as st
from sqlalchemy.orm import Session

from flywheel.settings import Settings
from storage import stats
from storage.db import get_engine, require_migrated, session_scope
from storage.errors import StorageError

SETTINGS_KEY = "settings"
FLASH_KEY = "flash"


def current_settings() -> Settings:
    """The settings the entry script read once (app.py puts them in the session)."""
    return st.session_state[SETTINGS_KEY]


@st.cache_resource(show_spinner=False)
def check_migrated(database_url: str) -> None:
    """Raises DatabaseNotMigrated once per URL until the schema is current (a success is cached)."""
    require_migrated(get_engine(database_url))


@contextmanager
def db() -> Iterator[Session]:
    """One committed transaction on the configured database."""
    with session_scope(get_engine(current_settings().database_url)) as session:
        yield session


def read(query: Callable[[Session], object]):
    """Run a read-only query in its own transaction."""
    with db() as session:
        return query(session)


def act(action: Callable[[Session], str], *, after: Callable[[], None] | None = None) -> None:
    """Run a write in one transaction (see `perform`)."""

    def in_transaction() -> str:
        with db() as session:
            return action(session)

    perform(in_transaction, after=after)


def perform(action: Callable[[], str], *, after: Callable[[], None] | None = None) -> None:
    """Run an action. A refusal from storage/ is shown and nothing is changed; success shows its
    message on the next run, calls `after` (e.g. to sync vLLM) and refreshes every cached read."""
    try:
        message = action()
    except StorageError as exc:
        st.error(str(exc), icon=":material/block:")
        return
    st.session_state[FLASH_KEY] = ("success", message)
    if after is not None:
        after()
    st.cache_data.clear()
    st.rerun()


def flash(kind: str, message: str) -> None:
    st.session_state.setdefault(f"{FLASH_KEY}_extra", []).append((kind, message))


def show_flash() -> None:
    """Messages from the action that caused this rerun."""
    shown = [st.session_state.pop(FLASH_KEY, None), *st.session_state.pop(f"{FLASH_KEY}_extra", [])]
    for item in filter(None, shown):
        kind, message = item
        (st.success if kind == "success" else st.warning)(message)


@st.cache_data(ttl=60, show_spinner=False)
def overview_stats(database_url: str, days: int) -> tuple[list[dict], list[dict]]:
    """Answers per day and votes per (day, model) over the last `days` days, cached a minute."""
    since = datetime.now().astimezone() - timedelta(days=days)
    with session_scope(get_engine(database_url)) as session:
        return stats.daily_interactions(session, since), stats.daily_votes_by_model(session, since)
