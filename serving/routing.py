"""Which served model answers a request: the active adapter, the canary for its share of users, or the base model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from flywheel.settings import Settings
from serving.engine import BASE_MODEL_NAME
from storage import registry
from storage.db import get_engine, session_scope
from storage.errors import NotFound


@dataclass(frozen=True)
class Route:
    model: str  # the name vLLM serves it under
    version_id: int | None  # None for the base model or an adapter not in the registry
    adapter_path: str | None = None


BASE = Route(BASE_MODEL_NAME, None)


def user_bucket(user_id: str) -> float:
    """A stable number in [0, 1) per user, so one person never flips between versions."""
    digest = hashlib.sha256(user_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _route(version) -> Route:
    return Route(version.name, version.id, version.adapter_path)


def route_request(settings: Settings, user_id: str) -> Route:
    with session_scope(get_engine(settings.database_url)) as session:
        canary = registry.canary_version(session)
        if canary is not None and user_bucket(user_id) < canary.canary_share:
            return _route(canary)
        active = registry.active_version(session)
        return _route(active) if active is not None else BASE


def resolve(settings: Settings, model: str | None, user_id: str = "") -> Route:
    """`model=None` routes; "base" or a version name forces that model."""
    if model is None:
        return route_request(settings, user_id)
    if model == BASE_MODEL_NAME:
        return BASE
    try:
        with session_scope(get_engine(settings.database_url)) as session:
            return _route(registry.get_version_by_name(session, model))
    except NotFound:
        return Route(model, None)  # an adapter loaded outside the registry
