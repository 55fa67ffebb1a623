"""The operator's CLI on SQLite and PostgreSQL: `flywheel status`, `versions`, `runs`, `pairs stats` and
`users`, each as a readable table and as `--json`; refusals (bad name, wrong state, non-admin) exit 1
with one line on standard error, nothing on standard output, and change nothing. vLLM is down here
(a closed port); tests/test_cli_serving.py runs the same commands against the real server."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest

from dashboard_support import ADMIN, CLOSED_PORT_URL, REVIEWER, seed, stored
from flywheel.settings import load_settings
from storage.audit import list_events
from storage.db import make_engine, session_scope
from storage.interactions import approve_vote, list_votes
from storage.models import RunKind, RunStatus
from storage.pairs import approve_pair
from storage.registry import active_version, canary_version
from storage.runs import get_run, queue_run
from storage.signin import sign_in
from storage.users import Actor, Role, get_actor, list_users
from training.scheduler import FlywheelScheduler


@pytest.fixture
def operator(cli, database_url):
    """`flywheel ARGS` against the seeded database (ada: admin, rita: reviewer; v1 active, v2 candidate)."""
    data = seed(database_url)

    def run(*args: str, input: str | None = None, **env: str):
        return cli(list(args), input=input, FLYWHEEL_DATABASE_URL=database_url, FLYWHEEL_VLLM_URL=CLOSED_PORT_URL,
                   FLYWHEEL_REQUEST_RETRIES="0", COLUMNS="200", **env)  # wide: table cells stay on one line

    return run, database_url, data


def ok_json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def refused(result, message: str) -> None:
    """Exit code 1, the reason in one line on standard error, nothing on standard output."""
    assert result.exit_code == 1, result.output
    assert result.stdout == "" and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_status_says_what_answers_and_that_vllm_is_down(operator, tmp_path):
    run, url, data = operator
    table = run("status")
    assert table.exit_code == 0, table.output
    for words in (data.active, "NOT reachable", "8 pending review", f"#{data.run_id} dpo succeeded",
                  "no scheduler is running"):
        assert words in table.stdout, (words, table.stdout)
    status = ok_json(run("status", "--json"))
    assert status["active"] == data.active and status["canary"] is None
    assert status["vllm"]["reachable"] is False and "unavailable" in status["vllm"]["error"]
    assert status["pairs"] == {"pending": 8, "approved_since_last_run": 0, "needed_for_a_run": 32}
    assert (status["last_run"]["id"], status["last_run"]["status"]) == (data.run_id, "succeeded")
    assert status["scheduler"] == {"running": False, "holder": None, "next_check": None}
    assert status["votes"] == {"pending": 18, "since_last_run": 0, "needed_for_a_kto_run": 64}

    engine = make_engine(url)
    with session_scope(engine) as session:  # a reviewer approves a vote: it may teach the next (KTO) run
        approve_vote(session, list_votes(session, limit=1)[0].id, Actor(REVIEWER[0], Role.reviewer))
    engine.dispose()
    assert ok_json(run("status", "--json"))["votes"] == {"pending": 17, "since_last_run": 1, "needed_for_a_kto_run": 64}
    words = run("status", FLYWHEEL_MIN_NEW_VOTES="0").stdout
    assert "17 pending review; 1 that may teach since the last run (KTO runs are off)" in words, words


def test_status_shows_the_next_scheduled_check_from_the_job_store(operator, tmp_path):
    run, url, _ = operator
    engine = make_engine(url)
    settings = load_settings(home=tmp_path / "sched", database_url=url, scheduler_interval_s=3600)
    scheduler = FlywheelScheduler(settings, engine=engine, holder="test-scheduler")
    scheduler.start()
    try:
        deadline = time.monotonic() + 60
        while not scheduler.is_leader and time.monotonic() < deadline:
            time.sleep(0.2)
        status = ok_json(run("status", "--json"))["scheduler"]
        assert (status["running"], status["holder"]) == (True, "test-scheduler")
        assert "by scheduler test-scheduler" in run("status").stdout
    finally:
        scheduler.stop()
        engine.dispose()
    planned = status["next_check"]
    seconds_ahead = (datetime.fromisoformat(planned) - datetime.now(timezone.utc)).total_seconds()
    assert 3500 < seconds_ahead <= 3600  # APScheduler's next run of "maybe-start-run", an interval from now
    stopped = ok_json(run("status", "--json"))["scheduler"]
    assert stopped == {"running": False, "holder": None, "next_check": planned}  # the store keeps its plan
    assert "no scheduler is running (it had planned" in run("status").stdout


def test_versions_list_and_show(operator):
    run, _, data = operator
    table = run("versions", "list")
    assert table.exit_code == 0 and data.active in table.stdout and "candidate" in table.stdout
    versions = ok_json(run("versions", "list", "--json"))
    assert [(v["name"], v["status"], v["parent"]) for v in versions] == [
        (data.candidate, "candidate", data.active), (data.active, "active", "base")]
    shown = ok_json(run("versions", "show", data.candidate, "--json"))
    assert shown["metrics"] == {"eval_accuracy": 0.8, "eval_margin": 0.9} and shown["training_run"] == data.run_id
    assert "eval_margin" in run("versions", "show", data.candidate).stdout
    refused(run("versions", "show", "v99"), "no model version named 'v99'")
    refused(run("versions", "show", "v99", "--json"), "no model version named 'v99'")


def test_promote_rollback_and_canary_change_the_registry_even_with_vllm_down(operator):
    run, url, data = operator
    canary = ok_json(run("versions", "canary", data.candidate, "--share", "0.1", "--as", ADMIN[0], "--json"))
    assert (canary["active"], canary["canary"], canary["vllm"]["updated"]) == (data.active, data.candidate, False)
    assert stored(url, lambda s: canary_version(s).canary_share) == 0.1
    stopped = run("versions", "canary", "off", "--as", ADMIN[0])
    assert stopped.exit_code == 0 and f"Canary {data.candidate} stopped" in stopped.stderr
    assert stored(url, canary_version) is None

    promoted = run("versions", "promote", data.candidate, "--as", ADMIN[0])
    assert promoted.exit_code == 0, promoted.output  # the registry changed: vLLM picks it up when back
    assert f"{data.candidate} is now active" in promoted.stderr and "vLLM was not updated" in promoted.stderr
    assert stored(url, lambda s: active_version(s).name) == data.candidate
    back = ok_json(run("versions", "rollback", "--as", ADMIN[0], "--json"))
    assert back["active"] == data.active and "Rolled back" in back["message"]
    events = stored(url, lambda s: [(e.actor, e.action) for e in list_events(s, limit=4, target_type="model_version")])
    assert events == [("ada", "rollback"), ("ada", "promote"), ("ada", "stop_canary"), ("ada", "start_canary")]


def test_version_refusals_change_nothing(operator):
    run, url, data = operator
    refused(run("versions", "promote", "v99", "--as", ADMIN[0]), "no model version named 'v99'")
    refused(run("versions", "promote", data.candidate, "--as", REVIEWER[0], "--json"),
            "rita is a reviewer; this action needs an admin")
    refused(run("versions", "promote", data.candidate, "--as", "nobody"), "--as nobody: there is no enabled account")
    refused(run("versions", "promote", data.active, "--as", ADMIN[0]), f"{data.active} is already active")
    refused(run("versions", "rollback", "--as", ADMIN[0]), "no earlier active version to roll back to")
    refused(run("versions", "canary", data.candidate, "--as", ADMIN[0]), "give the share of users")
    refused(run("versions", "canary", data.candidate, "--share", "1.5", "--as", ADMIN[0]), "between 0 and 1")
    refused(run("versions", "canary", "off", "--as", ADMIN[0]), "no canary is running")
    assert stored(url, lambda s: (active_version(s).name, canary_version(s))) == (data.active, None)
    run("versions", "promote", data.candidate, "--as", ADMIN[0])
    run("versions", "rollback", "--as", ADMIN[0])
    refused(run("versions", "promote", data.candidate, "--as", ADMIN[0]),  # retired now
            f"{data.candidate} is retired; only a rollback brings a retired version back")
    refused(run("versions", "canary", data.candidate, "--share", "0.1", "--as", ADMIN[0]),
            "is retired; it cannot become canary")
    assert stored(url, lambda s: active_version(s).name) == data.active
    assert "--as" in run("versions", "promote", data.candidate).output  # --as is required for an action


def test_runs_list_show_and_cancel(operator):
    run, url, data = operator
    queued = stored(url, lambda s: queue_run(s, RunKind.dpo, {}, triggered_by="scheduler").id)
    table = run("runs", "list")
    assert table.exit_code == 0 and "queued" in table.stdout and "6/6" in table.stdout
    runs = ok_json(run("runs", "list", "--json"))
    assert [(r["id"], r["status"]) for r in runs][:2] == [(queued, "queued"), (data.run_id, "succeeded")]
    shown = ok_json(run("runs", "show", str(data.run_id), "--json"))
    assert shown["eval_metrics"] == {"eval_accuracy": 0.8} and shown["last_step"]["reward_accuracy"] == 1.0
    assert "reward_margin" in run("runs", "show", str(data.run_id)).stdout
    refused(run("runs", "show", "999"), "no training run 999")
    refused(run("runs", "cancel", str(data.run_id), "--as", ADMIN[0]), "only a queued or running run can be cancelled")
    refused(run("runs", "cancel", str(queued), "--as", REVIEWER[0]), "this action needs an admin")
    assert stored(url, lambda s: get_run(s, queued).status) is RunStatus.queued
    cancelled = ok_json(run("runs", "cancel", str(queued), "--as", ADMIN[0], "--json"))
    assert cancelled["status"] == "cancelled"
    assert stored(url, lambda s: get_run(s, queued).status) is RunStatus.cancelled
    event = stored(url, lambda s: list_events(s, limit=1, target_type="training_run")[0])
    assert (event.actor, event.action, event.details["after"]["status"]) == ("ada", "cancel_run", "cancelled")


def test_pairs_stats_by_status_and_source_per_day(operator):
    run, url, data = operator
    stored(url, lambda s: approve_pair(s, data.pending_ids[0], Actor(REVIEWER[0], Role.reviewer)))  # the arena pair
    stats = ok_json(run("pairs", "stats", "--json"))
    totals = {(r["status"], r["source"]): r["count"] for r in stats["totals"]}
    assert totals == {("approved", "arena"): 1, ("pending", "alternative"): 5, ("pending", "imported"): 2}
    days = {r["day"] for r in stats["daily"]}
    assert len(days) == 1 and sum(r["count"] for r in stats["daily"]) == 8  # all created today
    table = run("pairs", "stats").stdout
    assert "alternative" in table and days.pop() in table and "approved" in table


def test_users_add_list_and_refusals(operator):
    run, url, _ = operator
    added = run("users", "add", "Rachel@Example.com", "--as", ADMIN[0], FLYWHEEL_USER_PASSWORD="rachel-secret-1")
    assert added.exit_code == 0 and "account 'rachel@example.com' created (reviewer)" in added.stderr
    asked = run("users", "add", "sam", "--role", "admin", "--as", ADMIN[0], "--json",
                input="sam-secret-pass\nsam-secret-pass\n")
    assert asked.exit_code == 0, asked.output
    assert "sam-secret-pass" not in asked.output  # asked for, never echoed
    assert json.loads(asked.stdout)["role"] == "admin"  # the prompts went to standard error
    users = ok_json(run("users", "list", "--json"))
    assert [(u["username"], u["role"], u["enabled"]) for u in users] == [
        ("ada", "admin", True), ("rachel@example.com", "reviewer", True), ("rita", "reviewer", True),
        ("sam", "admin", True)]
    assert "rachel@example.com" in run("users", "list").stdout
    assert stored(url, lambda s: sign_in(s, "rachel@example.com", "rachel-secret-1").actor) is not None

    refused(run("users", "add", "tom", "--as", ADMIN[0], FLYWHEEL_USER_PASSWORD="short"),
            "password too short: the password policy asks for at least 8 characters")
    refused(run("users", "add", "tom", "--as", REVIEWER[0], input="tom-secret-pass\ntom-secret-pass\n"),
            "rita is a reviewer; this action needs an admin")  # refused before a password is asked for
    refused(run("users", "add", "rita", "--as", ADMIN[0], FLYWHEEL_USER_PASSWORD="another-pass"),
            "an account named 'rita' exists already")
    assert [u.username for u in stored(url, list_users)] == ["ada", "rachel@example.com", "rita", "sam"]


def test_users_change_role_password_and_access(operator):
    run, url, _ = operator
    promoted = ok_json(run("users", "set-role", REVIEWER[0], "admin", "--as", ADMIN[0], "--json"))
    assert promoted["role"] == "admin"
    demoted = run("users", "set-role", REVIEWER[0], "reviewer", "--as", ADMIN[0])
    assert demoted.exit_code == 0 and "rita is now a reviewer" in demoted.stderr
    refused(run("users", "set-role", ADMIN[0], "reviewer", "--as", ADMIN[0]), "ada is the last enabled admin")
    refused(run("users", "disable", REVIEWER[0], "--as", REVIEWER[0]), "this action needs an admin")

    reset = run("users", "set-password", REVIEWER[0], "--as", ADMIN[0], input="new-rita-pass\nnew-rita-pass\n")
    assert reset.exit_code == 0 and "password of rita changed" in reset.stderr
    own = run("users", "set-password", REVIEWER[0], "--as", REVIEWER[0], FLYWHEEL_USER_PASSWORD="ritas-own-pass")
    assert own.exit_code == 0, own.output  # everyone may set their own password
    refused(run("users", "set-password", ADMIN[0], "--as", REVIEWER[0], FLYWHEEL_USER_PASSWORD="takeover-pass"),
            "this action needs an admin")
    assert stored(url, lambda s: sign_in(s, REVIEWER[0], "ritas-own-pass").actor) == Actor("rita", Role.reviewer)

    disabled = ok_json(run("users", "disable", REVIEWER[0], "--as", ADMIN[0], "--json"))
    assert disabled["enabled"] is False and stored(url, lambda s: get_actor(s, REVIEWER[0])) is None
    refused(run("users", "enable", REVIEWER[0], "--as", REVIEWER[0]),
            "--as rita: there is no enabled account")  # a disabled account cannot act
    refused(run("users", "disable", ADMIN[0], "--as", ADMIN[0]), "cannot disable your own account")
    enabled = run("users", "enable", REVIEWER[0], "--as", ADMIN[0])
    assert enabled.exit_code == 0 and "rita enabled" in enabled.stderr
    actions = stored(url, lambda s: [e.action for e in list_events(s, limit=6, target_type="user")])
    assert actions == ["enable_user", "disable_user", "sign_in", "set_password", "set_password", "set_role"]
