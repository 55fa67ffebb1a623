"""Allowed state transitions of pairs, runs and model versions, in one place."""

from __future__ import annotations

import enum

from storage.errors import InvalidTransition
from storage.models import PairStatus as P
from storage.models import RunStatus as R
from storage.models import VersionStatus as V

ALLOWED: dict[type[enum.Enum], dict[enum.Enum, set[enum.Enum]]] = {
    P: {P.pending: {P.approved, P.rejected}, P.approved: set(), P.rejected: set()},
    R: {
        R.queued: {R.running, R.cancelled, R.failed},
        R.running: {R.succeeded, R.failed, R.cancelled},
        R.succeeded: set(),
        R.failed: set(),
        R.cancelled: set(),
    },
    # A retired version comes back only by being promoted (rollback), never straight to canary.
    V: {
        V.candidate: {V.active, V.canary, V.retired},
        V.canary: {V.active, V.candidate, V.retired},
        V.active: {V.retired},
        V.retired: {V.active},
    },
}


def transition(entity, new_status: enum.Enum, what: str) -> None:
    """Move `entity.status` to `new_status`, or raise InvalidTransition naming both states."""
    current = entity.status
    if new_status not in ALLOWED[type(new_status)][current]:
        raise InvalidTransition(f"{what} is {current.value}; it cannot become {new_status.value}")
    entity.status = new_status
