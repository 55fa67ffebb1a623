"""The dashboard's team pages (Accounts, Audit log) and sign-in protection, run by Streamlit's AppTest
against a real seeded database: what an admin does there reaches storage/, a reviewer cannot open
them, a disabled or idle session is signed out at its next click, and repeated failures lock out."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from streamlit.testing.v1 import AppTest

from dashboard_support import ADMIN, APP, REVIEWER, app_env, click, confirm, seed, signed_in, stored  # noqa: F401
from storage.audit import events_csv, list_events
from storage.models import Role, utcnow
from storage.pairs import approve_pair
from storage.signin import sign_in
from storage.users import Actor, create_user, find_user, set_enabled

NEW = ("rachel@example.com", "rachels-password")


@pytest.fixture
def seeded(sqlite_url, app_env):
    app_env(sqlite_url)
    return sqlite_url, seed(sqlite_url)


def account(url: str, name: str):
    return stored(url, lambda s: find_user(s, name))


def add_account(at: AppTest, name: str, password: str, repeated: str | None = None, role: Role = Role.reviewer):
    at.text_input(key="new_username").input(name)
    at.selectbox(key="new_role").select(role)
    at.text_input(key="new_pw").input(password)
    at.text_input(key="new_pw_repeat").input(repeated if repeated is not None else password)
    return click(at, "add_user")


def test_an_admin_adds_changes_resets_and_disables_an_account(seeded):
    url, _ = seeded
    at = signed_in(ADMIN, "accounts")
    assert list(at.dataframe[0].value["account"]) == ["ada", "rita"]
    add_account(at, NEW[0], "short")
    assert "password too short: the password policy asks for at least 8 characters" in at.error[0].value
    add_account(at, NEW[0], NEW[1], "a different one")
    assert at.error[0].value == "The two passwords differ." and account(url, NEW[0]) is None
    add_account(at, NEW[0], NEW[1])
    assert f"Account {NEW[0]} created (reviewer)." in at.success[0].value
    assert list(at.dataframe[0].value["account"]) == ["ada", NEW[0], "rita"]

    at.selectbox(key="account").select(NEW[0]).run()
    user = account(url, NEW[0])
    at.selectbox(key=f"role_of_{user.id}").select(Role.admin).run()
    click(at, "set_role")
    assert account(url, NEW[0]).role is Role.admin
    at.text_input(key="reset_pw").input("a brand new password")
    at.text_input(key="reset_pw_repeat").input("a brand new password")
    click(at, "set_password")
    assert stored(url, lambda s: sign_in(s, *NEW).actor) is None
    assert stored(url, lambda s: sign_in(s, NEW[0], "a brand new password").actor) == Actor(NEW[0], Role.admin)

    confirm(at, "disable")
    assert account(url, NEW[0]).enabled is False and "signed out at their next click" in at.success[0].value
    click(at, "enable")
    assert account(url, NEW[0]).enabled is True
    actions = stored(url, lambda s: [e.action for e in list_events(s, limit=5, target_type="user", actor="ada")])
    assert actions == ["enable_user", "disable_user", "set_password", "set_role", "create_user"]


def test_the_page_shows_storage_refusals_for_the_last_admin(seeded):
    url, _ = seeded
    at = signed_in(ADMIN, "accounts")
    at.selectbox(key="account").select("ada").run()
    at.selectbox(key=f"role_of_{account(url, 'ada').id}").select(Role.reviewer).run()
    click(at, "set_role")
    assert "ada is the last enabled admin" in at.error[0].value
    confirm(at, "disable")
    assert "cannot disable your own account" in at.error[0].value
    assert account(url, "ada").role is Role.admin and account(url, "ada").enabled


def test_a_reviewer_has_no_team_pages_and_no_promote_control(seeded):
    at = signed_in(REVIEWER)
    for page in ("accounts", "audit"):
        with pytest.raises(ValueError, match="Could not find a navigation page"):  # not in their navigation
            at.switch_page(f"views/{page}.py")
    at.switch_page("views/models.py").run()
    assert not [b for b in at.button if b.label.startswith(("Promote", "Roll back", "Start canary"))]
    assert signed_in(ADMIN, "audit").title[0].value == "Audit log"


def test_a_disabled_account_is_signed_out_at_its_next_click(seeded):
    url, data = seeded
    at = signed_in(REVIEWER, "review")
    stored(url, lambda s: set_enabled(s, REVIEWER[0], False, Actor(ADMIN[0], Role.admin)))
    click(at, f"approve_{data.pending_ids[0]}")  # the next click
    assert "actor" not in at.session_state and at.button[0].label == "Sign in"
    assert "this account is disabled" in at.info[0].value
    assert stored(url, lambda s: list_events(s, target_type="preference_pair")) == []  # the click did nothing


def test_an_idle_session_is_signed_out(seeded, app_env):
    url, _ = seeded
    app_env(url, SESSION_IDLE_MINUTES="5")
    at = signed_in(REVIEWER)
    at.session_state["last_seen"] = utcnow() - timedelta(minutes=4)
    at.run()
    assert at.session_state["actor"].name == REVIEWER[0]  # 4 minutes: still signed in, and seen now
    at.session_state["last_seen"] = utcnow() - timedelta(minutes=6)
    at.run()
    assert "actor" not in at.session_state and "after 5 minutes without activity" in at.info[0].value


def sign_in_as(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input[0].input(name)
    at.text_input[1].input(password)
    at.button[0].click().run()
    return at


def test_repeated_failures_lock_out_without_saying_whether_the_account_exists(seeded):
    url, _ = seeded
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    for name in ("rita", "nobody"):
        for _ in range(4):
            assert sign_in_as(at, name, "wrong password").error[0].value == "Unknown user or wrong password."
        fifth = sign_in_as(at, name, "wrong password").error[0].value
        assert fifth == "Unknown user or wrong password. Too many failed sign-ins. Try again in 1 minute."
    locked = sign_in_as(at, *REVIEWER).error[0].value  # the right password, during the lockout
    assert locked == sign_in_as(at, "nobody", "anything").error[0].value == (
        "Too many failed sign-ins. Try again in 1 minute.")
    assert "actor" not in at.session_state
    assert sign_in_as(at, *ADMIN).session_state["actor"].name == ADMIN[0]  # other accounts are not locked
    events = stored(url, lambda s: [e.action for e in list_events(s, actor="rita")])
    assert events[:2] == ["sign_in_locked", "sign_in_failed"] and events.count("sign_in_failed") == 5


def test_audit_log_filters_by_actor_action_and_date(seeded):
    url, data = seeded
    stored(url, lambda s: approve_pair(s, data.pending_ids[0], Actor(REVIEWER[0], Role.reviewer)))
    stored(url, lambda s: create_user(s, *NEW, Role.reviewer, actor=Actor(ADMIN[0], Role.admin)))
    at = signed_in(ADMIN, "audit")
    table = at.dataframe[0].value
    assert {"approve", "create_user", "promote", "sign_in"} <= set(table["action"])
    approval = table[table["action"] == "approve"].iloc[0]
    assert (approval["who"], approval["change"]) == ("rita", "status: pending → approved; edited=False")

    at.text_input(key="audit_actor").input("Rita").run()
    assert set(at.dataframe[0].value["who"]) == {"rita"}
    at.text_input(key="audit_actor").input("").run()
    at.multiselect(key="audit_actions").select("create_user").run()
    created = at.dataframe[0].value
    assert list(created["who"]) == ["ada", "system", "system"]  # rachel by ada; ada and rita by the seed
    assert created["change"][0] == f"role: — → reviewer; enabled: — → True; account={NEW[0]}"
    today = utcnow().date()
    at.date_input(key="audit_dates").set_value((today, today)).run()
    assert len(at.dataframe[0].value) == 3
    at.date_input(key="audit_dates").set_value((today - timedelta(days=2), today - timedelta(days=1))).run()
    assert at.dataframe[0].value.empty and at.get("download_button")[0].proto.disabled


def test_the_audit_csv_has_every_event_with_its_change(database_url):
    seed(database_url)
    stored(database_url, lambda s: create_user(s, *NEW, Role.reviewer, actor=Actor(ADMIN[0], Role.admin)))
    events = stored(database_url, lambda s: list_events(s, None))
    rows = list(csv.DictReader(io.StringIO(events_csv(events))))
    assert len(rows) == len(events) and rows[0]["actor"] == "ada" and rows[0]["action"] == "create_user"
    assert rows[0]["change"] == f"role: — → reviewer; enabled: — → True; account={NEW[0]}"
    assert rows[0]["when_utc"].endswith("+00:00") and '"account": "rachel@example.com"' in rows[0]["details_json"]
