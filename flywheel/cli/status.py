"""`flywheel status`: the version answering now, vLLM, pairs, votes, the last run and the next scheduled check."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import typer

from flywheel.cli.common import database_errors, settings
from flywheel.cli.output import JSON, emit, iso, run_record, short_time, table
from storage.db import get_engine, require_migrated
from storage.models import utcnow


def status_record(status) -> dict[str, Any]:
    loop, server, canary = status.loop, status.server, status.loop.canary
    return {
        "active": loop.active.name if loop.active else None,
        "canary": {"version": canary.name, "share": canary.canary_share} if canary else None,
        "vllm": {"url": server.url, "reachable": server.reachable, "adapters": server.adapters, "error": server.error},
        "pairs": {"pending": loop.pending_pairs, "approved_since_last_run": loop.approved_since_last_run,
                  "needed_for_a_run": status.min_new_pairs},
        "votes": {"pending": loop.pending_votes, "since_last_run": status.votes_since_last_run,
                  "needed_for_a_kto_run": status.min_new_votes},
        "last_run": run_record(loop.last_run) if loop.last_run else None,
        "scheduler": {"running": status.scheduler_holder is not None, "holder": status.scheduler_holder,
                      "next_check": iso(status.next_check)},
    }


def in_words(record: dict[str, Any]) -> list[tuple[str, str]]:
    canary, vllm, pairs, votes, run, scheduler = (
        record[k] for k in ("canary", "vllm", "pairs", "votes", "last_run", "scheduler"))
    answering = record["active"] or "the base model (no version promoted yet)"
    if canary:
        answering += f"; canary {canary['version']} for {canary['share'] * 100:g}% of users"
    if vllm["reachable"]:
        adapters = ", ".join(vllm["adapters"]) or "none (base model only)"
        served = f"reachable at {vllm['url']}; adapters loaded: {adapters}"
    else:
        served = f"NOT reachable: {vllm['error']}"
    last = "none yet" if run is None else (
        f"#{run['id']} {run['kind']} {run['status']}, step {run['current_step']}/{run['total_steps'] or '?'}, "
        f"queued {short_time(run['created_at'])}"
        + (f", finished {short_time(run['finished_at'])}" if run["finished_at"] else ""))
    return [
        ("answering now", answering),
        ("vLLM", served),
        ("pairs", f"{pairs['pending']} pending review; {pairs['approved_since_last_run']} approved since the last run "
                  f"({pairs['needed_for_a_run']} start a run)"),
        ("votes", f"{votes['pending']} pending review; {votes['since_last_run']} that may teach since the last run ("
                  + (f"{votes['needed_for_a_kto_run']} start a KTO run when too few pairs)"
                     if votes["needed_for_a_kto_run"] else "KTO runs are off)")),
        ("last run", last),
        ("next check", next_check_words(scheduler)),
    ]


def next_check_words(scheduler: dict[str, Any]) -> str:
    planned = scheduler["next_check"]
    if not scheduler["running"]:
        return "no scheduler is running" + (f" (it had planned {short_time(planned)})" if planned else "")
    if planned is None:
        return f"scheduler {scheduler['holder']} is starting"
    seconds = max(0, round((datetime.fromisoformat(planned) - utcnow()).total_seconds()))
    return f"{short_time(planned)} (in {seconds} s), by scheduler {scheduler['holder']}"


def status(as_json: bool = JSON) -> None:
    """The version answering now, vLLM and its adapters, pairs, the last run and the next scheduled check.

    Works, and says so, while vLLM is down.
    """
    from training.status import system_status  # the scheduler's job store: imported for this command only

    config = settings()
    with database_errors(config.database_url):
        require_migrated(get_engine(config.database_url))
        record = status_record(system_status(config))
    emit(as_json, record, table("Flywheel", ("", ""), in_words(record), header=False))


def register(app: typer.Typer) -> None:
    app.command("status")(status)
