"""`flywheel versions list | show V | promote V | rollback | canary V --share S | canary off`.

The registry changes are storage/'s (roles, transitions, audit); then the running vLLM is made to
match, as the dashboard's Models page does. With vLLM down the change stands and the command says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import typer
from rich.markup import escape
from sqlalchemy.orm import Session

from flywheel.cli.common import acting_as, console, db_session, fail, settings
from flywheel.cli.output import AS, JSON, emit, fields, iso, table
from training.tracking import follow_registry
from storage.models import ModelVersion, VersionStatus
from storage.registry import (
    active_version, canary_version, get_version_by_name, list_versions, promote_version, rollback, start_canary,
    stop_canary,
)
from storage.users import Actor

versions_app = typer.Typer(help="Model versions: list, inspect, promote, roll back, canary.", no_args_is_help=True)


def version_record(version: ModelVersion, names: dict[int, str]) -> dict[str, Any]:
    return {
        "name": version.name, "status": version.status.value,
        "canary_share": version.canary_share if version.status is VersionStatus.canary else None,
        "parent": names.get(version.parent_id, "base"), "training_run": version.training_run_id,
        "created_at": iso(version.created_at), "promoted_at": iso(version.promoted_at),
    }


@versions_app.command("list")
def list_(as_json: bool = JSON) -> None:
    """Every registered version, newest first."""
    with db_session() as session:
        versions = list_versions(session)
    names = {v.id: v.name for v in versions}
    records = [version_record(v, names) for v in versions]
    columns = ("version", "status", "canary share", "parent", "run", "created", "promoted")
    emit(as_json, records, table("Model versions", columns, [r.values() for r in records]))


@versions_app.command("show")
def show(name: str = typer.Argument(..., help="A version name, e.g. v3."), as_json: bool = JSON) -> None:
    """One version: status, lineage, adapter and evaluation metrics."""
    with db_session() as session:
        version = get_version_by_name(session, name)
        names = {v.id: v.name for v in list_versions(session)}
    record = {**version_record(version, names), "adapter_path": version.adapter_path,
              "base_model": version.base_model, "metrics": version.metrics}
    metrics = table("Metrics", ("metric", "value"), version.metrics.items())
    emit(as_json, record, fields(f"Version {version.name}", {k: v for k, v in record.items() if k != "metrics"}),
         metrics)


def change_registry(as_user: str, as_json: bool, action: Callable[[Session, Actor], str]) -> None:
    """Run one registry change as `as_user` in one transaction, then make vLLM match the registry."""
    with db_session() as session:
        message = action(session, acting_as(session, as_user))
        active, canary_now = active_version(session), canary_version(session)
        summary = {"active": active.name if active else None, "canary": canary_now.name if canary_now else None}
    report = follow_registry(settings())
    console.print(escape(message), highlight=False)
    console.print(escape(report.message), style=None if report.updated else "yellow", highlight=False)
    emit(as_json, {"message": message, **summary,
                   "vllm": {"updated": report.updated, "message": report.message, "loaded": report.loaded,
                            "unloaded": report.unloaded}})


@versions_app.command("promote")
def promote(name: str = typer.Argument(..., help="The version to make active."), as_user: str = AS,
            as_json: bool = JSON) -> None:
    """Make a candidate (or the canary) the active version; the active one is retired."""
    change_registry(as_user, as_json, lambda s, actor: (
        f"{promote_version(s, get_version_by_name(s, name).id, actor).name} is now active."))


@versions_app.command("rollback")
def roll_back(as_user: str = AS, as_json: bool = JSON) -> None:
    """Re-activate the version that was active before the current one."""
    change_registry(as_user, as_json, lambda s, actor: f"Rolled back: {rollback(s, actor).name} is active again.")


@versions_app.command("canary")
def canary(
    target: str = typer.Argument(..., metavar="VERSION|off", help="The version to route users to, or `off`."),
    share: Optional[float] = typer.Option(None, "--share", help="Share of users, between 0 and 1 (e.g. 0.1)."),
    as_user: str = AS, as_json: bool = JSON,
) -> None:
    """Route a share of users to a candidate (`canary v4 --share 0.1`), or stop the canary (`canary off`)."""
    if target == "off":
        if share is not None:
            raise fail("`canary off` takes no --share")
        change_registry(as_user, as_json, lambda s, actor: f"Canary {stop_canary(s, actor).name} stopped.")
        return
    if share is None:
        raise fail(f"give the share of users for {target}, e.g. --share 0.1")
    change_registry(as_user, as_json, lambda s, actor: (
        f"{start_canary(s, get_version_by_name(s, target).id, share, actor).name} is the canary for "
        f"{share * 100:g}% of users."))


def register(app: typer.Typer) -> None:
    app.add_typer(versions_app, name="versions")
