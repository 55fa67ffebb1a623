"""The model registry (promote, rollback, canary rules), leases, the audit trail (accounts: test_storage_users.py)."""

from __future__ import annotations

import pytest

from storage.audit import list_events, record_event
from storage.db import session_scope
from storage.errors import InvalidInput, InvalidTransition, PermissionDenied
from storage.leases import acquire_lease, lease_holder, release_lease
from storage.models import Role, RunKind, RunStatus, VersionStatus
from storage.registry import (
    active_version,
    canary_version,
    get_version_by_name,
    list_versions,
    promote_version,
    register_version,
    retire_version,
    rollback,
    served_versions,
    start_canary,
    stop_canary,
)
from storage.runs import finish_run, queue_run, start_run
from storage.users import SYSTEM, Actor

ADMIN, REVIEWER = Actor("ada", Role.admin), Actor("rita", Role.reviewer)


def train(engine, outcome: RunStatus) -> int:
    """A run that reached `outcome`, with a version registered while it was running; returns the version id."""
    with session_scope(engine) as session:
        run = queue_run(session, RunKind.dpo, {})
        session.flush()
        start_run(session, run.id, pid=1, log_path="", output_dir="")
        version = register_version(session, adapter_path=f"/adapters/run{run.id}", base_model="smol",
                                   training_run_id=run.id, parent_id=None, metrics={"accuracy": 0.7})
        finish_run(session, run.id, outcome)
        return version.id


def status(engine, version_id: int) -> VersionStatus:
    with session_scope(engine) as session:
        return next(v.status for v in list_versions(session) if v.id == version_id)


def test_promote_and_rollback(engine):
    v1, v2 = train(engine, RunStatus.succeeded), train(engine, RunStatus.succeeded)
    assert status(engine, v1) is VersionStatus.candidate
    with session_scope(engine) as session:
        assert get_version_by_name(session, f"v{v1}").id == v1  # the name vLLM serves it under
        with pytest.raises(InvalidTransition, match="no earlier active version"):
            rollback(session, ADMIN)
        promote_version(session, v1, ADMIN)
    with session_scope(engine) as session:
        promote_version(session, v2, ADMIN)
        with pytest.raises(InvalidTransition, match="already active"):
            promote_version(session, v2, ADMIN)
    assert (status(engine, v1), status(engine, v2)) == (VersionStatus.retired, VersionStatus.active)
    with session_scope(engine) as session:
        assert rollback(session, ADMIN).id == v1
    assert status(engine, v2) is VersionStatus.retired
    with session_scope(engine) as session, pytest.raises(InvalidTransition, match="only a rollback brings"):
        promote_version(session, v2, ADMIN)  # a retired version comes back by a rollback only
    with session_scope(engine) as session:
        assert active_version(session).id == v1
        events = [(e.action, e.target_id, e.actor) for e in list_events(session, limit=3, target_type="model_version")]
    assert events[:3] == [("rollback", v1, "ada"), ("promote", v2, "ada"), ("promote", v1, "ada")]
    with session_scope(engine) as session:
        latest = list_events(session, limit=3, target_type="model_version")
        changes = [(e.details["before"], e.details["after"]) for e in latest]
    assert changes[:3] == [({"active": f"v{v2}"}, {"active": f"v{v1}"}), ({"active": f"v{v1}"}, {"active": f"v{v2}"}),
                           ({"active": "base"}, {"active": f"v{v1}"})]


def test_only_admins_change_the_registry(engine):
    version = train(engine, RunStatus.succeeded)
    with session_scope(engine) as session:
        for action in (lambda: promote_version(session, version, REVIEWER), lambda: rollback(session, REVIEWER),
                       lambda: start_canary(session, version, 0.1, REVIEWER),
                       lambda: retire_version(session, version, REVIEWER)):
            with pytest.raises(PermissionDenied, match="rita is a reviewer; this action needs an admin"):
                action()
    assert status(engine, version) is VersionStatus.candidate


def test_a_failed_runs_version_cannot_be_promoted(engine):
    failed = train(engine, RunStatus.failed)
    with session_scope(engine) as session:
        with pytest.raises(InvalidTransition, match=f"v{failed} comes from run .*, which is failed"):
            promote_version(session, failed, ADMIN)
        with pytest.raises(InvalidTransition, match="which is failed"):
            start_canary(session, failed, 0.2, ADMIN)
        run = queue_run(session, RunKind.dpo, {})
        session.flush()
        finish_run(session, run.id, RunStatus.cancelled)
        with pytest.raises(InvalidTransition, match="did not succeed"):
            register_version(session, adapter_path="/x", base_model="smol", training_run_id=run.id,
                             parent_id=None, metrics={})


def test_canary_rules(engine):
    active, canary, retired, other = (train(engine, RunStatus.succeeded) for _ in range(4))
    with session_scope(engine) as session:
        promote_version(session, retired, ADMIN)
        promote_version(session, active, ADMIN)  # `retired` is retired now
        with pytest.raises(InvalidTransition, match="is retired; it cannot become canary"):
            start_canary(session, retired, 0.1, ADMIN)
        with pytest.raises(InvalidTransition, match="is active; it cannot become canary"):
            start_canary(session, active, 0.1, ADMIN)
        with pytest.raises(InvalidInput, match="between 0 and 1"):
            start_canary(session, canary, 1.0, ADMIN)
        start_canary(session, canary, 0.1, ADMIN)
        start_canary(session, canary, 0.25, ADMIN)  # a new share for the same canary
    with session_scope(engine) as session:
        assert canary_version(session).canary_share == 0.25
        assert {v.id for v in served_versions(session)} == {active, canary}
        with pytest.raises(InvalidTransition, match=f"v{canary} is the canary already"):
            start_canary(session, other, 0.1, ADMIN)
        assert stop_canary(session, ADMIN).status is VersionStatus.candidate
        with pytest.raises(InvalidTransition, match="no canary is running"):
            stop_canary(session, ADMIN)
        with pytest.raises(InvalidTransition, match="is active; promote another"):
            retire_version(session, active, ADMIN)
        retire_version(session, canary, ADMIN)
        assert [v.id for v in served_versions(session)] == [active]


def test_leases(engine):
    with session_scope(engine) as session:
        assert acquire_lease(session, "scheduler", "host-a", ttl_s=60)
    with session_scope(engine) as session:
        assert not acquire_lease(session, "scheduler", "host-b", ttl_s=60)
        assert acquire_lease(session, "scheduler", "host-a", ttl_s=60)  # renewal
        assert lease_holder(session, "scheduler") == "host-a"
        release_lease(session, "scheduler", "host-b")  # not the holder: no effect
    with session_scope(engine) as session:
        assert lease_holder(session, "scheduler") == "host-a"
        assert acquire_lease(session, "other", "host-b", ttl_s=-1)  # taken, but expired at once
    with session_scope(engine) as session:
        assert lease_holder(session, "other") is None
        assert acquire_lease(session, "other", "host-c", ttl_s=60)  # an expired lease can be taken over
        release_lease(session, "scheduler", "host-a")
    with session_scope(engine) as session:
        assert lease_holder(session, "scheduler") is None and lease_holder(session, "other") == "host-c"


def test_audit_events_keep_details_and_order(engine):
    with session_scope(engine) as session:
        record_event(session, "ada", "delete", "preference_pair", 7, reason="spam", ids=[7])
        record_event(session, SYSTEM.name, "promote", "model_version", 1)
    with session_scope(engine) as session:
        newest, oldest = list_events(session)
        assert (newest.action, oldest.details, oldest.actor) == ("promote", {"reason": "spam", "ids": [7]}, "ada")
        assert newest.created_at.tzinfo is not None
        assert [e.action for e in list_events(session, target_type="preference_pair")] == ["delete"]
