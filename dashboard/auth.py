"""Sign-in: local accounts (scrypt hashes in storage/), optionally OIDC through Streamlit's st.login.

The role kept here only decides what the UI shows; every action is checked again by storage/.
"""

from __future__ import annotations

import streamlit as st
from streamlit.errors import StreamlitSecretNotFoundError

from dashboard.queries import read
from storage.models import Role
from storage.users import Actor, authenticate, list_users

ACTOR_KEY = "actor"


def current_actor() -> Actor | None:
    return st.session_state.get(ACTOR_KEY)


def _account(username: str | None) -> Actor | None:
    """The account's name and role as the database holds them now."""
    user = next((u for u in read(list_users) if u.username == username), None)
    return Actor(user.username, user.role) if user else None


def signed_in_actor() -> Actor | None:
    """The signed-in user, re-read on every run: a changed role applies at the next click and a
    session naming no account (deleted, or forged) is signed out."""
    actor = current_actor()
    if actor is None:
        return None
    fresh = _account(actor.name)
    if fresh is None:
        st.session_state.pop(ACTOR_KEY, None)
    else:
        st.session_state[ACTOR_KEY] = fresh
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
    if oidc_configured():
        _oidc_sign_in()
    with st.form("sign_in"):
        username = st.text_input("Username")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        actor = read(lambda session: authenticate(session, username.strip(), password))
        if actor is None:
            st.error("Unknown user or wrong password.")
            return
        st.session_state[ACTOR_KEY] = actor
        st.rerun()


def _oidc_sign_in() -> None:
    if not st.user.is_logged_in:
        st.button("Sign in with single sign-on", on_click=st.login)
        return
    actor = _account(st.user.get("email"))  # the local account named by the e-mail holds the role
    if actor is None:
        st.error(f"{st.user.get('email')} has no Flywheel account; ask an admin to create one.")
        st.button("Sign out", on_click=st.logout)
        return
    st.session_state[ACTOR_KEY] = actor
    st.rerun()


def sign_out() -> None:
    st.session_state.pop(ACTOR_KEY, None)
    if oidc_configured() and st.user.is_logged_in:
        st.logout()


def account_sidebar(actor: Actor) -> None:
    with st.sidebar:
        st.caption(f"Signed in as **{actor.name}** · {actor.role.value}")
        st.button("Sign out", on_click=sign_out, key="sign_out")
