"""The review queue's votes section and the start-a-run control's kinds, by Streamlit's AppTest against a real
seeded database (tests/dashboard_support.py: 18 votes on answers, none reviewed)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from dashboard_support import ADMIN, REVIEWER, app_env, click, confirm, seed, signed_in, stored  # noqa: F401
from storage.audit import list_events
from storage.interactions import VoteFilter, get_vote, list_votes
from storage.models import PairStatus, RunKind
from storage.runs import queue_run


@pytest.fixture
def seeded(sqlite_url, app_env):
    app_env(sqlite_url)
    return sqlite_url, seed(sqlite_url)


def votes_page(user) -> AppTest:
    at = signed_in(user, "review")
    at.get("button_group")[0].set_value("Votes").run()  # the section switch above the pairs
    assert not at.exception, at.exception
    return at


def test_reviewers_approve_and_reject_votes_like_pairs(seeded):
    url, _ = seeded
    pending = stored(url, lambda s: [v.id for v in list_votes(s, limit=100)])
    assert len(pending) == 18
    newest, second, third, fourth, *_ = pending
    at = votes_page(REVIEWER)
    assert "18 vote(s) match · page 1" in at.caption[0].value
    assert len([c for c in at.checkbox if c.key.startswith("v_sel_")]) == 10  # one page

    click(at, f"v_approve_{newest}")
    assert f"Approved 1 vote(s): #{newest}" == at.success[0].value
    click(at, f"v_reject_{second}")
    at.checkbox(key=f"v_sel_{third}").check()
    at.checkbox(key=f"v_sel_{fourth}").check().run()
    click(at, "v_bulk_approve")

    statuses = stored(url, lambda s: {i: (get_vote(s, i).status, get_vote(s, i).reviewer) for i in pending[:4]})
    assert statuses == {newest: (PairStatus.approved, REVIEWER[0]), second: (PairStatus.rejected, REVIEWER[0]),
                        third: (PairStatus.approved, REVIEWER[0]), fourth: (PairStatus.approved, REVIEWER[0])}
    events = stored(url, lambda s: sorted((e.action, e.target_id) for e in list_events(s, target_type="vote")))
    assert events == sorted([("approve", newest), ("reject", second), ("approve", third), ("approve", fourth)])
    assert "14 vote(s) match" in at.caption[0].value  # decided votes leave the queue

    at.selectbox(key="v_status").select(PairStatus.approved).run()
    assert "3 vote(s) match" in at.caption[0].value and not [c for c in at.checkbox if c.key.startswith("v_sel_")]


def test_the_votes_section_keeps_the_pairs_queue_apart(seeded):
    url, data = seeded
    at = signed_in(REVIEWER, "review")
    assert not [c for c in at.checkbox if c.key.startswith("v_")]  # pairs first, as before
    at = votes_page(ADMIN)  # an admin reviews too, as with pairs
    assert not [c for c in at.checkbox if c.key.startswith("sel_")]
    assert stored(url, lambda s: len(list_votes(s, VoteFilter(status=None), limit=100))) == 18


def test_an_admin_may_start_a_kto_run(seeded):
    url, _ = seeded
    stored(url, lambda s: queue_run(s, RunKind.dpo, {}, triggered_by="scheduler"))
    at = signed_in(ADMIN, "training")
    assert at.selectbox(key="run_kind").options == ["DPO", "SFT", "KTO"]
    at.selectbox(key="run_kind").select(RunKind.kto).run()
    click(at, "start_run")
    assert at.warning[0].value == "Snapshot the approved votes (and pairs) and start a KTO run now?"
    click(at, "start_run_yes")  # one run at a time: the queued run makes storage refuse a second one
    assert "one run at a time" in at.error[0].value
    assert "run_kind" not in [s.key for s in signed_in(REVIEWER, "training").selectbox]  # reviewers start no runs
