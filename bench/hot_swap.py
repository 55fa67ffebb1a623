"""Promote a new adapter while users are being answered: failed requests, and how soon the new version answers.

`streams` users ask without pause through `serving.client.answer` (routed like the bot: the active
version answers, streamed). Mid-way an admin promotes a new version the way the dashboard does
(`promote_version`, then `sync_adapters`). Called by bench/gpu.py against a server that serves the
registry of `settings.database_url`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.prompts import chat_prompts
from serving.adapters import sync_adapters
from serving.client import answer
from storage.db import get_engine, session_scope
from storage.registry import get_version_by_name, promote_version, register_version
from storage.users import Actor, Role

ADMIN = Actor("bench-admin", Role.admin)


@dataclass
class Request:
    started: float
    first_token: float | None = None
    finished: float | None = None
    model: str | None = None
    error: str | None = None


def register(settings, adapter: Path, base_model: Path, *, promote: bool) -> str:
    with session_scope(get_engine(settings.database_url)) as session:
        version = register_version(session, adapter_path=str(adapter.resolve()), base_model=str(base_model),
                                   training_run_id=None, parent_id=None, metrics={})
        if promote:
            promote_version(session, version.id, ADMIN)
        return version.name


def promote(settings, name: str) -> None:
    with session_scope(get_engine(settings.database_url)) as session:
        promote_version(session, get_version_by_name(session, name).id, ADMIN)
    sync_adapters(settings)


def ask_until(settings, stop: threading.Event, user: int, max_tokens: int, log: list[Request]) -> None:
    messages = chat_prompts(user + 1)[user]
    while not stop.is_set():
        request = Request(time.monotonic())
        log.append(request)

        def first(_piece: str, request=request) -> None:
            request.first_token = request.first_token or time.monotonic()

        try:
            request.model = answer(settings, messages, user_id=f"U{user:04d}", max_tokens=max_tokens, on_token=first).served_model
        except Exception as exc:  # any failure is a failed answer for that user
            request.error = f"{type(exc).__name__}: {exc}"[:300]
        request.finished = time.monotonic()


def hot_swap(settings, old: str, new: str, *, streams: int = 64, max_tokens: int = 128,
             before_s: float = 4.0, after_s: float = 6.0) -> dict:
    """`old` is the active version; `new` (registered) is promoted `before_s` into the load."""
    stop, log = threading.Event(), []
    users = [threading.Thread(target=ask_until, args=(settings, stop, u, max_tokens, log)) for u in range(streams)]
    for thread in users:
        thread.start()
    time.sleep(before_s)
    promoted_at = time.monotonic()
    promote(settings, new)
    synced_s = time.monotonic() - promoted_at
    time.sleep(after_s)
    stop.set()
    for thread in users:
        thread.join()
    after = lambda t: t is not None and t >= promoted_at  # noqa: E731
    new_answers = [r for r in log if r.model == new]
    return {
        "streams": streams, "max_tokens": max_tokens, "requests": len(log),
        "failed": sum(r.error is not None for r in log), "errors": sorted({r.error for r in log if r.error})[:5],
        "promote_and_sync_s": synced_s,
        "first_token_of_new_version_s": min((r.first_token - promoted_at for r in new_answers), default=None),
        "first_answer_of_new_version_s": min((r.finished - promoted_at for r in new_answers), default=None),
        "old_version_answers_finished_after_promotion": sum(r.model == old and after(r.finished) for r in log),
        "new_version_answers": len(new_answers),
        "answers_started_after_promotion_by_old_version": sum(r.model == old and after(r.started) for r in log),
    }
