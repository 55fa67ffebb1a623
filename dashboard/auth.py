"""Sign-in: local accounts (storage/users.py, storage/signin.py), optionally OIDC through Streamlit's st.login.

The role kept here only decides what the UI shows; every action is checked again by storage/. The
account is re-read on every run, so a changed role applies at the next click and a disabled account
is signed out there; so is a session idle for longer than FLYWHEEL_SESSION_IDLE_MINUTES.
"""

from __future__ import annotations

from datetime import timedelta

import streamlit as st
from streamlit.errors import StreamlitSecretNotFoundError

from dashboard.queries import current_settings, db, read
from storage.models import Role, utcnow
from storage.signin import sign_in, sign_in_verified
from storage.users import Actor, get_actor

ACTOR_KEY = "actor"
LAST_SEEN_KEY = "last_seen"
SIGNED_OUT_KEY = "signed_out_because"


def current_actor() -> Actor | None:
    return st.session_state.get(ACTOR_KEY)


def client_address() -> str:
    """The browser's address, which sign-in failures are also counted by ("" when Streamlit has none)."""
    address = st.context.ip_address
    return address if isinstance(address, str) else ""  # Streamlit's AppTest hands a stand-in object


def _start_session(actor: Actor) -> None:
    st.session_state[ACTOR_KEY], st.session_state[LAST_SEEN_KEY] = actor, utcnow()
    st.session_state.pop(SIGNED_OUT_KEY, None)


def signed_in_actor() -> Actor | None:
    """The signed-in user as the database holds the account now, or None (signed out, with the reason
    shown on the sign-in page) when the session was idle too long or names no enabled account."""
    actor = current_actor()
    if actor is None:
        return None
    idle_limit = timedelta(minutes=current_settings().session_idle_minutes)
    last_seen = st.session_state.get(LAST_SEEN_KEY)
    if last_seen is not None and utcnow() - last_seen > idle_limit:
        sign_out(f"You were signed out after {current_settings().session_idle_minutes:g} minutes without activity.")
        return None
    fresh = read(lambda session: get_actor(session, actor.name))
    if fresh is None:
        sign_out("You were signed out: this account is disabled or no longer exists.")
        return None
    st.session_state[ACTOR_KEY], st.session_state[LAST_SEEN_KEY] = fresh, utcnow()
    return fresh


def is_admin(actor: Actor | None) -> bool:
    return actor is not None and actor.role is Role.admin


def oidc_configured() -> bool:
    """Streamlit's built-in login is on when secrets.toml has an [auth] section."""
    try:
        return "auth" in st.secrets
    except (FileNotFoundError, StreamlitSecretNotFoundError):
        return False


def sign_in_page() -> None:
    with st.columns([1, 1.4, 1])[1]:
        _sign_in_form()


def _sign_in_form() -> None:
    st.title(":material/cycle: Flywheel")
    st.caption("Curate what the team's assistant learns from, and decide which model answers.")
    if SIGNED_OUT_KEY in st.session_state:
        st.info(st.session_state[SIGNED_OUT_KEY], icon=":material/logout:")
    if oidc_configured():
        _oidc_sign_in()
    with st.form("sign_in"):
        username = st.text_input("Username")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        with db() as session:
            result = sign_in(session, username, password, client_address())
        if result.actor is None:
            st.error(result.message)
            return
        _start_session(result.actor)
        st.rerun()


def _oidc_sign_in() -> None:
    if not st.user.is_logged_in:
        st.button("Sign in with single sign-on", on_click=st.login)
        return
    email = st.user.get("email") or ""
    with db() as session:  # the enabled local account named by the e-mail holds the role
        actor = sign_in_verified(session, email, client_address())
    if actor is None:
        st.error(f"{email} has no enabled Flywheel account; ask an admin to create one.")
        st.button("Sign out", on_click=st.logout)
        return
    _start_session(actor)
    st.rerun()


def sign_out(reason: str | None = None) -> None:
    st.session_state.pop(ACTOR_KEY, None)
    st.session_state.pop(LAST_SEEN_KEY, None)
    if reason:
        st.session_state[SIGNED_OUT_KEY] = reason
    if oidc_configured() and st.user.is_logged_in:
        st.logout()


def account_sidebar(actor: Actor) -> None:
    with st.sidebar:
        st.caption(f"Signed in as **{actor.name}** · {actor.role.value}")
        st.button("Sign out", on_click=sign_out, key="sign_out")
