"""Accounts (admins only): add reviewers and admins, change a role, reset a password, disable or enable.

The rules (roles, the password policy, the last enabled admin) and the audit are storage/users.py's,
the same functions `flywheel users` calls; this page only asks and shows.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st
from sqlalchemy.orm import Session

from dashboard.auth import current_actor
from dashboard.queries import act, read
from dashboard.widgets import ago, confirm_button, when
from storage.models import Role, User
from storage.users import MIN_PASSWORD_LENGTH, create_user, list_users, set_enabled, set_password, set_role

actor = current_actor()
ROLES = list(Role)
st.title("Accounts")
st.caption("Reviewers curate pairs; admins also promote models, start and cancel runs, and manage accounts. "
           "With single sign-on, an account's name is the person's e-mail.")

users = read(list_users)
st.dataframe(
    pd.DataFrame({
        "account": [u.username for u in users],
        "role": [u.role.value for u in users],
        "enabled": [u.enabled for u in users],
        "created": [when(u.created_at) for u in users],
        "last sign-in": [ago(u.last_sign_in_at) if u.last_sign_in_at else "never" for u in users],
    }),
    hide_index=True,
)


def password_fields(prefix: str) -> str | None:
    """A password typed twice; None when the two differ."""
    password = st.text_input("Password", type="password", key=f"{prefix}_pw",
                             help=f"At least {MIN_PASSWORD_LENGTH} characters.")
    repeated = st.text_input("Repeat the password", type="password", key=f"{prefix}_pw_repeat")
    return password if password == repeated else None


def act_with(password: str | None, action: Callable[[Session, str], str]) -> None:
    """Run `action` with the password typed twice, or say that the two differ."""
    if password is None:
        st.error("The two passwords differ.")
    else:
        act(lambda session: action(session, password))


st.subheader("Add an account")
with st.form("add_account", clear_on_submit=True):
    name = st.text_input("Username or e-mail", key="new_username")
    role = st.selectbox("Role", ROLES, format_func=lambda r: r.value, key="new_role")
    password = password_fields("new")
    added = st.form_submit_button("Add account", type="primary", key="add_user")
if added:
    act_with(password, lambda s, pw: f"Account {create_user(s, name, pw, role, actor=actor).username} created "
                                     f"({role.value}).")

st.subheader("Change an account")
by_name: dict[str, User] = {u.username: u for u in users}
chosen = by_name[st.selectbox("Account", list(by_name), key="account")]
state = "enabled" if chosen.enabled else "disabled"
st.markdown(f"**{chosen.username}** · {chosen.role.value} · {state}")
role_col, password_col, state_col = st.columns(3)
with role_col:
    new_role = st.selectbox("Role", ROLES, index=ROLES.index(chosen.role), format_func=lambda r: r.value,
                            key=f"role_of_{chosen.id}")
    if st.button("Change role", key="set_role", disabled=new_role is chosen.role):
        act(lambda s: f"{set_role(s, chosen.username, new_role, actor).username} is now a {new_role.value}.")
with password_col:
    with st.form("reset_password", clear_on_submit=True):
        new_password = password_fields("reset")
        reset = st.form_submit_button("Reset password", key="set_password")
    if reset:
        act_with(new_password,
                 lambda s, pw: f"Password of {set_password(s, chosen.username, pw, actor).username} reset.")
with state_col:
    st.markdown("**Access**")
    if chosen.enabled:
        confirm_button(f"Disable {chosen.username}", "disable",
                       lambda: act(lambda s: f"{set_enabled(s, chosen.username, False, actor).username} disabled: "
                                             "signed out at their next click."),
                       question=f"Disable {chosen.username}? They are signed out at their next click.")
    elif st.button(f"Enable {chosen.username}", key="enable"):
        act(lambda s: f"{set_enabled(s, chosen.username, True, actor).username} enabled.")
