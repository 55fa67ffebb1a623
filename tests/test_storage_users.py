"""Account rules and sign-in protection, on SQLite and PostgreSQL: roles, the password policy, the last
enabled admin, disabled accounts, the audit of every change; lockout timing driven by an explicit clock."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from storage.audit import list_events
from storage.db import session_scope
from storage.errors import InvalidInput, InvalidTransition, NotFound, PermissionDenied
from storage.models import Role, User, utcnow
from storage.signin import WRONG, sign_in, sign_in_verified
from storage.users import (
    Actor,
    create_user,
    get_actor,
    list_users,
    require_role,
    set_enabled,
    set_password,
    set_role,
)

ADA, RITA = Actor("ada", Role.admin), Actor("rita", Role.reviewer)


@pytest.fixture
def team(engine):
    """An admin (ada) and a reviewer (rita), created by the system as `flywheel init` would."""
    with session_scope(engine) as session:
        create_user(session, "ada", "correct horse", Role.admin)
        create_user(session, "rita", "battery staple", Role.reviewer)
    return engine


def in_session(engine, work):
    with session_scope(engine) as session:
        return work(session)


def test_accounts_are_hashed_named_without_case_and_checked_by_policy(team):
    with session_scope(team) as session:
        stored = session.query(User).filter_by(username="ada").one().password_hash
        assert stored.startswith("scrypt$") and "correct horse" not in stored
        user = create_user(session, "  Bob@Example.COM ", "a long passphrase", Role.reviewer, actor=ADA)
        assert user.username == "bob@example.com"  # an e-mail, as single sign-on gives it
        with pytest.raises(InvalidInput, match="'bob@example.com' exists already"):
            create_user(session, "BOB@example.com", "another passphrase", Role.reviewer, actor=ADA)
        with pytest.raises(InvalidInput, match="password too short: the password policy asks for at least 8"):
            create_user(session, "carl", "short", Role.reviewer, actor=ADA)
        with pytest.raises(InvalidInput, match="forbids the account's own name"):
            create_user(session, "carlos123", "Carlos123", Role.reviewer, actor=ADA)
        with pytest.raises(InvalidInput, match="no spaces"):
            create_user(session, "carl os", "a long passphrase", Role.reviewer, actor=ADA)
        with pytest.raises(PermissionDenied, match="rita is a reviewer; this action needs an admin"):
            create_user(session, "dan", "a long passphrase", Role.reviewer, actor=RITA)
    assert in_session(team, lambda s: [u.username for u in list_users(s)]) == ["ada", "bob@example.com", "rita"]
    assert in_session(team, lambda s: get_actor(s, "Bob@example.com")) == Actor("bob@example.com", Role.reviewer)
    require_role(ADA, Role.reviewer)  # admins may do what reviewers do


def test_roles_change_and_the_last_enabled_admin_stays(team):
    with session_scope(team) as session:
        with pytest.raises(InvalidTransition, match="ada is the last enabled admin; make another admin before you"):
            set_role(session, "ada", Role.reviewer, ADA)
        with pytest.raises(InvalidTransition, match="last enabled admin"):
            set_enabled(session, "ada", False, Actor("other-admin", Role.admin))
        with pytest.raises(PermissionDenied):
            set_role(session, "rita", Role.admin, RITA)
        with pytest.raises(InvalidInput, match="rita is a reviewer already"):
            set_role(session, "rita", Role.reviewer, ADA)
        with pytest.raises(NotFound, match="no account named 'nobody'"):
            set_role(session, "nobody", Role.admin, ADA)
        set_role(session, "rita", Role.admin, ADA)
    with session_scope(team) as session:
        set_role(session, "ada", Role.reviewer, Actor("rita", Role.admin))  # now there is another admin
    assert in_session(team, lambda s: (get_actor(s, "ada"), get_actor(s, "rita"))) == (
        Actor("ada", Role.reviewer), Actor("rita", Role.admin))
    with session_scope(team) as session, pytest.raises(InvalidInput, match="cannot disable your own account"):
        set_enabled(session, "rita", False, Actor("rita", Role.admin))


def test_a_disabled_account_cannot_sign_in_or_act_and_can_be_enabled_again(team):
    with session_scope(team) as session:
        set_enabled(session, "rita", False, ADA)
        with pytest.raises(InvalidInput, match="rita is disabled already"):
            set_enabled(session, "rita", False, ADA)
    assert in_session(team, lambda s: get_actor(s, "rita")) is None  # the dashboard signs the session out
    refused = in_session(team, lambda s: sign_in(s, "rita", "battery staple", "10.0.0.1"))
    assert (refused.actor, refused.message) == (None, WRONG)  # the same words as for a wrong password
    assert in_session(team, lambda s: sign_in_verified(s, "rita")) is None
    in_session(team, lambda s: set_enabled(s, "rita", True, ADA))
    assert in_session(team, lambda s: sign_in(s, "rita", "battery staple").actor) == RITA


def test_passwords_are_reset_by_an_admin_or_their_owner(team):
    with session_scope(team) as session:
        with pytest.raises(PermissionDenied):
            set_password(session, "ada", "a new passphrase", RITA)
        set_password(session, "rita", "rita's own new one", RITA)
        set_password(session, "rita", "reset by the admin", ADA)
        with pytest.raises(InvalidInput, match="at least 8 characters"):
            set_password(session, "rita", "short", ADA)
    assert in_session(team, lambda s: sign_in(s, "rita", "rita's own new one").actor) is None
    assert in_session(team, lambda s: sign_in(s, "rita", "reset by the admin").actor) == RITA


def test_every_account_change_is_audited_with_before_and_after(team):
    with session_scope(team) as session:
        set_role(session, "rita", Role.admin, ADA)
        set_password(session, "rita", "another passphrase", ADA)
        set_enabled(session, "rita", False, ADA)
    events = in_session(team, lambda s: [(e.actor, e.action, e.details) for e in list_events(s, target_type="user")])
    assert events == [
        ("ada", "disable_user", {"account": "rita", "before": {"enabled": True}, "after": {"enabled": False}}),
        ("ada", "set_password", {"account": "rita", "before": {}, "after": {}, "password": "changed"}),
        ("ada", "set_role", {"account": "rita", "before": {"role": "reviewer"}, "after": {"role": "admin"}}),
        ("system", "create_user", {"account": "rita", "before": {}, "after": {"role": "reviewer", "enabled": True}}),
        ("system", "create_user", {"account": "ada", "before": {}, "after": {"role": "admin", "enabled": True}}),
    ]
    assert "another passphrase" not in str(events)


def test_two_admins_demoting_each_other_at_once_leave_one_admin(team):
    in_session(team, lambda s: set_role(s, "rita", Role.admin, ADA))
    barrier, outcomes = threading.Barrier(2), []

    def demote(name: str, actor: Actor) -> None:
        barrier.wait()
        try:
            in_session(team, lambda s: set_role(s, name, Role.reviewer, actor))
            outcomes.append("demoted")
        except InvalidTransition:
            outcomes.append("refused")

    threads = [threading.Thread(target=demote, args=args) for args in
               (("ada", Actor("rita", Role.admin)), ("rita", ADA))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["demoted", "refused"]
    admins = in_session(team, lambda s: [u.username for u in list_users(s) if u.role is Role.admin])
    assert len(admins) == 1


# --- sign-in protection -----------------------------------------------------------------------------


def attempt(engine, name: str, password: str, client: str = "10.0.0.1", *, at):
    return in_session(engine, lambda s: sign_in(s, name, password, client, now=at))


def test_five_failures_lock_the_account_for_a_growing_delay(team):
    t0 = utcnow()
    for n in range(4):
        assert attempt(team, "rita", "wrong", at=t0 + timedelta(seconds=n)).message == WRONG
    fifth = attempt(team, "rita", "wrong", at=t0 + timedelta(seconds=4))
    assert fifth.message == f"{WRONG} Too many failed sign-ins. Try again in 1 minute."
    locked = attempt(team, "rita", "battery staple", at=t0 + timedelta(seconds=30))  # even the right password
    assert (locked.actor, locked.message) == (None, "Too many failed sign-ins. Try again in 1 minute.")
    assert locked.retry_after == timedelta(seconds=34)
    other = attempt(team, "ada", "correct horse", "10.0.0.2", at=t0 + timedelta(seconds=31))
    assert other.actor == ADA  # only that account is locked
    # After the minute, one more failure locks it for 2 minutes, then 4: the delay doubles.
    assert attempt(team, "rita", "wrong", at=t0 + timedelta(seconds=65)).retry_after == timedelta(minutes=2)
    assert attempt(team, "rita", "battery staple", at=t0 + timedelta(seconds=180)).actor is None
    assert attempt(team, "rita", "wrong", at=t0 + timedelta(seconds=186)).retry_after == timedelta(minutes=4)
    assert attempt(team, "rita", "battery staple", at=t0 + timedelta(seconds=186 + 241)).actor == RITA
    # A success clears the account's count: the next failure is the first again.
    assert attempt(team, "rita", "wrong", at=t0 + timedelta(seconds=430)).retry_after is None


def test_failures_older_than_15_minutes_no_longer_count(team):
    t0 = utcnow()
    for n in range(4):
        attempt(team, "rita", "wrong", at=t0 + timedelta(seconds=n))
    late = attempt(team, "rita", "wrong", at=t0 + timedelta(minutes=15, seconds=1))  # the first has aged out
    assert late.retry_after is None and late.message == WRONG


def test_an_unknown_name_is_locked_exactly_like_an_account(team):
    t0 = utcnow()
    for n in range(5):
        for name in ("rita", "nobody-here"):
            result = attempt(team, name, "wrong", at=t0 + timedelta(seconds=n))
    locked = [attempt(team, name, "whatever", at=t0 + timedelta(seconds=10)) for name in ("rita", "nobody-here")]
    assert locked[0].message == locked[1].message == "Too many failed sign-ins. Try again in 1 minute."
    assert result.message.startswith(WRONG)


def test_one_client_trying_many_names_is_locked_out(team):
    t0 = utcnow()
    for n in range(20):  # a password sprayed over 20 names, 1 failure each: no account reaches 5
        attempt(team, f"user{n}", "Summer2026!", "203.0.113.9", at=t0 + timedelta(seconds=n))
    from_there = attempt(team, "ada", "correct horse", "203.0.113.9", at=t0 + timedelta(seconds=30))
    assert from_there.actor is None and "Too many failed sign-ins" in from_there.message
    assert attempt(team, "ada", "correct horse", "198.51.100.7", at=t0 + timedelta(seconds=31)).actor == ADA
    # Without an address (Streamlit gave none) only the names are counted.
    assert attempt(team, "ada", "correct horse", "", at=t0 + timedelta(seconds=32)).actor == ADA


def test_sign_ins_are_audited(team):
    t0 = utcnow()
    attempt(team, "rita", "battery staple", at=t0)
    attempt(team, "rita", "wrong", at=t0)
    attempt(team, "ghost", "wrong", at=t0)
    in_session(team, lambda s: set_enabled(s, "rita", False, ADA))
    attempt(team, "rita", "battery staple", at=t0)
    for n in range(4):
        attempt(team, "ghost", "wrong", at=t0 + timedelta(seconds=n))
    attempt(team, "ghost", "wrong", at=t0 + timedelta(seconds=5))
    in_session(team, lambda s: sign_in_verified(s, "ada", "10.0.0.3", now=t0))
    events = in_session(team, lambda s: [(e.actor, e.action, e.details.get("reason"), e.details.get("method"))
                                         for e in reversed(list_events(s, actions=("sign_in", "sign_in_failed",
                                                                                   "sign_in_locked")))])
    assert events == [
        ("rita", "sign_in", None, "password"), ("rita", "sign_in_failed", "wrong password", None),
        ("ghost", "sign_in_failed", "unknown user", None), ("rita", "sign_in_failed", "account disabled", None),
        *[("ghost", "sign_in_failed", "unknown user", None)] * 4, ("ghost", "sign_in_locked", None, None),
        ("ada", "sign_in", None, "oidc"),
    ]
    users = in_session(team, lambda s: {u.username: u.last_sign_in_at for u in list_users(s)})
    assert users["ada"] == t0 and users["rita"] == t0


def test_old_attempts_are_pruned(team):
    from sqlalchemy import func, select

    from storage.models import SignInAttempt

    t0 = utcnow() - timedelta(days=3)
    attempt(team, "rita", "wrong", at=t0)
    attempt(team, "rita", "battery staple", at=t0 + timedelta(days=3))
    assert in_session(team, lambda s: s.scalar(select(func.count(SignInAttempt.id)))) == 1
