"""The dashboard's pages, run by Streamlit's AppTest against a real seeded database (no vLLM needed:
serving is pointed at a closed port, which the pages must report without losing the registry change)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from dashboard_support import ADMIN, APP, REVIEWER, app_env, click, confirm, seed, signed_in, stored  # noqa: F401
from storage.audit import list_events
from storage.errors import PermissionDenied
from storage.models import Interaction, InteractionStatus, PairSource, PairStatus, RunKind, RunStatus, utcnow
from storage.pairs import PairFilter, count_pairs, get_pair, import_jsonl, reject_pair
from storage.registry import active_version, canary_version, get_version, get_version_by_name, promote_version
from storage.runs import get_run, queue_run
from storage.stats import daily_interactions, daily_votes_by_model
from storage.users import SYSTEM, Actor, Role


@pytest.fixture
def seeded(sqlite_url, app_env):
    app_env(sqlite_url)
    return sqlite_url, seed(sqlite_url)


# --- sign-in -------------------------------------------------------------------------------------


def test_wrong_password_is_refused_and_a_reviewer_gets_in(seeded):
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.text_input[0].input(REVIEWER[0])
    at.text_input[1].input("not-the-password")
    at.button[0].click().run()
    assert "wrong password" in at.error[0].value
    assert "actor" not in at.session_state

    at.text_input[1].input(REVIEWER[1])
    at.button[0].click().run()
    assert at.session_state["actor"] == Actor(REVIEWER[0], Role.reviewer)
    assert [m.label for m in at.metric] == ["Pending pairs", "Active model", "Canary", "Last run"]

    click(at, "sign_out")
    assert "actor" not in at.session_state and at.button[0].label == "Sign in"


def test_a_database_that_is_not_migrated_is_reported(tmp_path, app_env):
    app_env(f"sqlite:///{tmp_path / 'empty.db'}")
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert "flywheel db upgrade" in at.error[0].value


# --- overview and data ---------------------------------------------------------------------------


def test_overview_shows_the_loop_state_and_plots(seeded):
    _, data = seeded
    at = signed_in(REVIEWER)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Pending pairs": "8", "Active model": data.active, "Canary": "none", "Last run": "succeeded"}
    assert at.metric[3].proto.delta.startswith(f"#{data.run_id} · ")
    assert len(at.get("vega_lite_chart")) == 3  # answers/day, feedback rate, thumbs-up share per version


def test_overview_aggregates_on_both_databases(database_url):
    seed(database_url)
    since = utcnow() - timedelta(days=30)
    daily, votes = stored(database_url, lambda s: (daily_interactions(s, since), daily_votes_by_model(s, since)))
    assert len(daily) == 6 and all(len(row["day"]) == 10 for row in daily)  # six days, as YYYY-MM-DD
    assert (sum(r["interactions"] for r in daily), sum(r["with_feedback"] for r in daily)) == (33 + 5, 18)
    by_model = {m: sum(r["votes"] for r in votes if r["model"] == m) for m in ("v1", "base")}
    assert by_model == {"v1": 7, "base": 11} and sum(r["up"] for r in votes) == 10


def test_data_page_counts_pairs_and_lists_snapshots(seeded):
    url, data = seeded
    stored(url, lambda s: import_jsonl(s, ['{"prompt": "q?", "chosen": "good", "rejected": "bad"}'], SYSTEM,
                                       approve=True))
    at = signed_in(REVIEWER, "data")
    assert {m.label: m.value for m in at.metric} == {"Pending pairs": "8", "Approved pairs": "1",
                                                     "Rejected pairs": "0"}
    snapshots = at.dataframe[0].value
    assert list(snapshots["train"]) == [24] and snapshots["content hash"][0].startswith("abab")
    assert "1 approved pair" in at.get("download_button")[0].proto.label


# --- review queue --------------------------------------------------------------------------------


@pytest.fixture
def seeded_any_db(database_url, app_env):
    """The seeded database on SQLite and on PostgreSQL."""
    app_env(database_url)
    return database_url, seed(database_url)


def test_review_actions_change_the_stored_pairs(seeded_any_db):
    url, data = seeded_any_db
    newest, second, third, fourth, fifth, *_ = data.pending_ids
    at = signed_in(REVIEWER, "review")
    assert [c.label for c in at.checkbox][:2] == [f"**#{newest}** · arena", f"**#{second}** · imported"]

    click(at, f"approve_{newest}")
    assert f"#{newest}" in at.success[0].value
    click(at, f"reject_{second}")
    at.text_area(key=f"edit_{third}").input("We use Opsgenie now, schedule 0.").run()
    assert at.button(key=f"approve_{third}").label == "Approve edited"
    click(at, f"approve_{third}")
    at.checkbox(key=f"sel_{fourth}").check()
    at.checkbox(key=f"sel_{fifth}").check().run()
    assert at.button(key="bulk_approve").label == "Approve selected (2)"
    click(at, "bulk_approve")

    pairs = stored(url, lambda s: {i: get_pair(s, i) for i in data.pending_ids})
    assert pairs[newest].status is PairStatus.approved and pairs[newest].reviewer == REVIEWER[0]
    assert pairs[second].status is PairStatus.rejected
    assert pairs[third].chosen == "We use Opsgenie now, schedule 0."
    assert pairs[third].original_chosen == "We use PagerDuty, schedule 0."
    assert pairs[fourth].status is pairs[fifth].status is PairStatus.approved
    events = stored(url, lambda s: [(e.actor, e.action, e.target_id) for e in list_events(s, target_type="preference_pair")])
    assert sorted(events) == sorted([(REVIEWER[0], "approve", i) for i in (newest, third, fourth, fifth)]
                                    + [(REVIEWER[0], "reject", second)])
    assert f"#{newest}" not in " ".join(c.label for c in at.checkbox)  # decided pairs leave the queue
    assert len(at.checkbox) == 3


def test_a_bulk_action_leaves_pairs_decided_elsewhere_alone(seeded):
    url, data = seeded
    newest, second, *_ = data.pending_ids
    at = signed_in(REVIEWER, "review")
    at.checkbox(key=f"sel_{newest}").check()
    at.checkbox(key=f"sel_{second}").check().run()
    stored(url, lambda s: reject_as_another_reviewer(s, second))  # another reviewer is quicker
    click(at, "bulk_approve")
    assert at.success[0].value == f"Approved 1 pair(s): #{newest}"
    pairs = stored(url, lambda s: [get_pair(s, i) for i in (newest, second)])
    assert [(p.status, p.reviewer) for p in pairs] == [(PairStatus.approved, REVIEWER[0]), (PairStatus.rejected, "other")]


def reject_as_another_reviewer(session, pair_id):
    reject_pair(session, pair_id, Actor("other", Role.reviewer))


def test_review_filters_and_keyset_pages(seeded):
    url, data = seeded
    lines = [f'{{"prompt": "question {n}", "chosen": "good {n}", "rejected": "bad {n}"}}' for n in range(15)]
    stored(url, lambda s: import_jsonl(s, lines, SYSTEM))
    at = signed_in(REVIEWER, "review")
    assert "23 pair(s) match · page 1" in at.caption[0].value
    first_page = [c.key for c in at.checkbox]
    assert len(first_page) == 10
    click(at, "older")
    second_page = [c.key for c in at.checkbox]
    assert len(second_page) == 10 and not set(first_page) & set(second_page) and "page 2" in at.caption[0].value
    click(at, "newer")
    assert [c.key for c in at.checkbox] == first_page

    at.selectbox(key="f_source").select(PairSource.arena).run()
    assert [c.key for c in at.checkbox] == [f"sel_{data.pending_ids[0]}"]
    at.selectbox(key="f_source").select(None).run()
    at.text_input(key="f_text").input("rollback --to").run()
    assert len(at.checkbox) == 5  # the five better answers from Slack threads
    at.text_input(key="f_channel").input("C-data").run()
    assert len(at.checkbox) == 2
    assert "Staging. How do I roll back deploy" in " ".join(t.value for t in at.text)  # thread context shown


def test_review_shows_the_differences(seeded):
    _, data = seeded
    at = signed_in(REVIEWER, "review")
    html = " ".join(element.proto.body for element in at.get("html"))  # st.html: user text never goes through markdown
    assert "line-through" in html and "<span" in html and "PagerDuty" in html


# --- models --------------------------------------------------------------------------------------


def test_a_reviewer_cannot_promote(seeded):
    url, data = seeded
    at = signed_in(REVIEWER, "models")
    assert not [b for b in at.button if b.label.startswith(("Promote", "Roll back", "Start canary"))]
    with pytest.raises(PermissionDenied):
        stored(url, lambda s: promote_version(s, data.candidate_id, Actor(REVIEWER[0], Role.reviewer)))

    # A session that claims more than its account has is corrected from the database at the next run.
    at = signed_in(REVIEWER, "models")
    at.session_state["actor"] = Actor(REVIEWER[0], Role.admin)
    at.run()
    assert at.session_state["actor"].role is Role.reviewer
    assert not [b for b in at.button if b.label.startswith("Promote")]
    at.session_state["actor"] = Actor("nobody", Role.admin)
    at.run()
    assert "actor" not in at.session_state and at.button[0].label == "Sign in"

    # A reviewer who replays an admin's confirmation (a forged widget event) changes nothing either.
    at = signed_in(ADMIN, "models")
    click(at, "promote")
    at.session_state["actor"] = Actor(REVIEWER[0], Role.reviewer)
    click(at, "promote_yes")
    assert not [b for b in at.button if b.key in ("promote", "promote_yes")]
    assert stored(url, lambda s: active_version(s).name) == data.active


def test_models_page_compares_candidate_and_active(seeded):
    _, data = seeded
    at = signed_in(ADMIN, "models")
    assert at.selectbox(key="compare").value == data.candidate
    table = at.dataframe[1].value
    row = table[table["metric"] == "eval_accuracy"].iloc[0]
    assert (row[data.active], row[data.candidate], round(row["change"], 3)) == (0.6, 0.8, 0.2)
    texts = [t.value for t in at.text]
    assert "Delete the cluster." in texts and "Run `deploy rollback --to previous`." in texts
    lineage = " ".join(m.value for m in at.markdown)
    assert f"from {data.active}" in lineage and f"run #{data.run_id}" in lineage and "24 train / 6 eval" in lineage


def test_models_page_shows_the_held_out_answers_of_both_versions_with_what_they_say(seeded):
    """The evaluation's greedy answers, as the runner stores them: the question, the preferred answer and both
    versions' answers, marked by whether they say its key content; people's text stays text."""
    url, data = seeded
    held_out = [{"prompt": "How do I restart *billing*?", "chosen": "Run `systemctl restart billing`.",
                 "answer": "Use systemctl restart billing.", "incumbent_answer": "Restart it."}]

    def evaluated(session):
        version = get_version_by_name(session, data.candidate)
        version.metrics = {**version.metrics, "compared_with": data.active, "key_content_share": 1.0,
                           "incumbent": {"key_content_share": 0.0}, "held_out_answers": held_out}

    stored(url, evaluated)
    at = signed_in(ADMIN, "models")
    texts = [t.value for t in at.text]
    for text in ("How do I restart *billing*?", "Run `systemctl restart billing`.", "Use systemctl restart billing.",
                 "Restart it."):
        assert text in texts, text
    captions = [c.value for c in at.caption]
    assert f"{data.active} · ✗ misses key content" in captions and f"{data.candidate} · ✓ says the key content" in captions
    table = at.dataframe[1].value
    assert "key_content_share" in set(table["metric"]) and not {"held_out_answers", "incumbent"} & set(table["metric"])


def test_admin_promotes_rolls_back_and_runs_a_canary_even_with_vllm_down(seeded):
    url, data = seeded
    at = signed_in(ADMIN, "models")
    confirm(at, "promote")
    assert f"{data.candidate} is now active" in at.success[0].value
    assert "vLLM was not updated" in at.warning[0].value  # the registry change stands
    assert stored(url, lambda s: active_version(s).name) == data.candidate

    confirm(at, "rollback")
    assert stored(url, lambda s: active_version(s).name) == data.active

    at.selectbox(key="compare").select(data.candidate).run()
    click(at, "start_canary")  # a retired version cannot be a canary: storage refuses, the page says so
    click(at, "start_canary_yes")
    assert "cannot become canary" in at.error[0].value
    assert stored(url, canary_version) is None
    actions = stored(url, lambda s: [e.action for e in list_events(s, target_type="model_version")])
    assert actions[:2] == ["rollback", "promote"]
    assert list(at.dataframe[-1].value["action"])[:2] == ["rollback", "promote"]  # the audit trail on the page


def test_admin_starts_and_stops_a_canary(sqlite_url, app_env):
    app_env(sqlite_url)
    data = seed(sqlite_url)
    at = signed_in(ADMIN, "models")
    at.slider(key="canary_share").set_value(25).run()
    confirm(at, "start_canary")
    canary = stored(sqlite_url, canary_version)
    assert (canary.name, canary.canary_share) == (data.candidate, 0.25)
    assert {m.label: m.value for m in at.metric}["Canary"] == f"{data.candidate} · 25%"
    confirm(at, "stop_canary")
    assert stored(sqlite_url, canary_version) is None
    assert stored(sqlite_url, lambda s: get_version(s, data.candidate_id).status.value) == "candidate"


# --- training ------------------------------------------------------------------------------------


def test_training_page_shows_progress_curves_and_cancels(seeded):
    url, data = seeded
    queued = stored(url, lambda s: queue_run(s, RunKind.dpo, {}, triggered_by="scheduler").id)
    at = signed_in(REVIEWER, "training")
    assert not [b for b in at.button if "Start a run" in b.label or b.label == "Cancel run"]
    at = signed_in(ADMIN, "training")
    assert list(at.dataframe[0].value["status"]) == ["queued", "succeeded", "succeeded"]

    at.selectbox(key="run_id").select(data.run_id).run()
    assert at.get("progress")[0].proto.text == "step 6/6"
    assert len(at.get("arrow_line_chart")) + len(at.get("vega_lite_chart")) == 3  # loss, accuracy, margin

    confirm(at, "start_run")  # one run at a time: the queued run makes storage refuse a second one
    assert "one run at a time" in at.error[0].value

    at.selectbox(key="run_id").select(queued).run()
    confirm(at, f"cancel_{queued}")
    assert stored(url, lambda s: get_run(s, queued).status) is RunStatus.cancelled


# --- playground ----------------------------------------------------------------------------------


def test_playground_records_a_failed_answer_when_vllm_is_down(seeded):
    url, _ = seeded
    at = signed_in(REVIEWER, "playground")
    at.chat_input[0].set_value("Is anyone there?").run()
    assert "could not answer" in at.error[0].value
    failed = stored(url, lambda s: s.scalars(select(Interaction).where(Interaction.user_id == REVIEWER[0])).all())
    assert [(i.prompt_text, i.status) for i in failed] == [("Is anyone there?", InteractionStatus.failed)]
    assert stored(url, lambda s: count_pairs(s, PairFilter(source=PairSource.arena))) == 1  # only the seeded one
