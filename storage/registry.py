"""The model registry: candidate adapters, promotion, rollback and canaries, as audited transitions."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.audit import record_event
from storage.errors import InvalidInput, InvalidTransition, NotFound
from storage.leases import lock_until_commit
from storage.models import ModelVersion, RunStatus, TrainingRun, VersionStatus, utcnow
from storage.states import transition
from storage.users import Actor, Role, require_role

V = VersionStatus
REGISTRY_LOCK = "model-registry"


def register_version(
    session: Session, *, adapter_path: str, base_model: str, training_run_id: int | None,
    parent_id: int | None, metrics: dict[str, Any], regression_answers: list[Any] | None = None,
) -> ModelVersion:
    """Register a candidate. Its name (`v<id>`) is what vLLM serves the adapter as."""
    if training_run_id is not None:
        run = session.get(TrainingRun, training_run_id)
        if run is None or run.status in (RunStatus.failed, RunStatus.cancelled):
            raise InvalidTransition(f"run {training_run_id} did not succeed; its adapter cannot be registered")
    version = ModelVersion(
        name=f"pending-{uuid.uuid4().hex}", adapter_path=adapter_path, base_model=base_model,
        training_run_id=training_run_id, parent_id=parent_id, metrics=metrics,
        regression_answers=regression_answers or [],
    )
    session.add(version)
    session.flush()
    version.name = f"v{version.id}"
    record_event(session, "system", "register", "model_version", version.id, run=training_run_id)
    return version


def get_version(session: Session, version_id: int) -> ModelVersion:
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise NotFound(f"no model version {version_id}")
    return version


def get_version_by_name(session: Session, name: str) -> ModelVersion:
    version = session.scalar(select(ModelVersion).where(ModelVersion.name == name))
    if version is None:
        raise NotFound(f"no model version named {name!r}")
    return version


def list_versions(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())))


def active_version(session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.status == V.active))


def canary_version(session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.status == V.canary))


def served_versions(session: Session) -> list[ModelVersion]:
    """What vLLM must have loaded: the active version and the canary, if any."""
    return list(session.scalars(select(ModelVersion).where(ModelVersion.status.in_((V.active, V.canary)))))


def _check_run_succeeded(session: Session, version: ModelVersion) -> None:
    if version.training_run_id is None:
        return
    run = session.get(TrainingRun, version.training_run_id)
    if run is not None and run.status is not RunStatus.succeeded:
        raise InvalidTransition(f"{version.name} comes from run {run.id}, which is {run.status.value}")


def promote_version(session: Session, version_id: int, actor: Actor, *, action: str = "promote") -> ModelVersion:
    """Make `version_id` the active version; the previous active one is retired."""
    require_role(actor, Role.admin)
    lock_until_commit(session, REGISTRY_LOCK)  # two promotions at once must not leave two active versions
    version = get_version(session, version_id)
    _check_run_succeeded(session, version)
    previous = active_version(session)
    if previous is not None and previous.id == version.id:
        raise InvalidTransition(f"{version.name} is already active")
    if version.status is V.retired and action != "rollback":
        raise InvalidTransition(f"{version.name} is retired; only a rollback brings a retired version back")
    transition(version, V.active, version.name)  # checked before the old one is touched
    if previous is not None:
        previous.status = V.retired
    version.promoted_at, version.canary_share = utcnow(), 0.0
    session.flush()
    record_event(session, actor.name, action, "model_version", version.id,
                 before={"active": previous.name if previous else "base"}, after={"active": version.name})
    return version


def previous_version(session: Session) -> ModelVersion | None:
    """The version active before the current one: the most recently promoted retired version."""
    current = active_version(session)
    query = select(ModelVersion).where(ModelVersion.status == V.retired, ModelVersion.promoted_at.is_not(None))
    if current is not None and current.promoted_at is not None:
        query = query.where(ModelVersion.promoted_at < current.promoted_at)
    return session.scalar(query.order_by(ModelVersion.promoted_at.desc()).limit(1))


def rollback(session: Session, actor: Actor) -> ModelVersion:
    """Re-activate the most recently promoted retired version (the one before the current)."""
    require_role(actor, Role.admin)
    previous = previous_version(session)
    if previous is None:
        raise InvalidTransition("there is no earlier active version to roll back to")
    return promote_version(session, previous.id, actor, action="rollback")


def start_canary(session: Session, version_id: int, share: float, actor: Actor) -> ModelVersion:
    require_role(actor, Role.admin)
    if not 0 < share < 1:
        raise InvalidInput("a canary share must be between 0 and 1 (exclusive)")
    lock_until_commit(session, REGISTRY_LOCK)
    version = get_version(session, version_id)
    _check_run_succeeded(session, version)
    current = canary_version(session)
    if current is not None and current.id != version.id:
        raise InvalidTransition(f"{current.name} is the canary already; stop it first")
    before = _canary_fields(version)
    if version.status is not V.canary:
        transition(version, V.canary, version.name)
    version.canary_share = share
    record_event(session, actor.name, "start_canary", "model_version", version.id, before=before,
                 after=_canary_fields(version))
    return version


def _canary_fields(version: ModelVersion) -> dict[str, Any]:
    return {"status": version.status.value, "canary_share": version.canary_share}


def stop_canary(session: Session, actor: Actor) -> ModelVersion:
    require_role(actor, Role.admin)
    version = canary_version(session)
    if version is None:
        raise InvalidTransition("no canary is running")
    before = _canary_fields(version)
    transition(version, V.candidate, version.name)
    version.canary_share = 0.0
    record_event(session, actor.name, "stop_canary", "model_version", version.id, before=before,
                 after=_canary_fields(version))
    return version


def retire_version(session: Session, version_id: int, actor: Actor) -> ModelVersion:
    require_role(actor, Role.admin)
    version = get_version(session, version_id)
    if version.status is V.active:
        raise InvalidTransition(f"{version.name} is active; promote another version or roll back instead")
    before = version.status.value
    transition(version, V.retired, version.name)
    record_event(session, actor.name, "retire", "model_version", version.id, before={"status": before},
                 after={"status": version.status.value})
    return version
