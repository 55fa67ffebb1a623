"""The state of the whole loop in one plain value: what `flywheel status` prints and the dashboard
could show. The database part is storage's, the vLLM part serving's, the next check the scheduler's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from serving.adapters import ServerState, server_state
from storage.db import get_engine, session_scope
from storage.leases import lease_holder
from storage.runs import last_started_at
from storage.status import LoopState, loop_state
from training.scheduler import LEASE, new_teaching_votes, next_check


@dataclass(frozen=True)
class SystemStatus:
    loop: LoopState
    server: ServerState
    scheduler_holder: str | None  # None: no scheduler is running
    next_check: datetime | None
    min_new_pairs: int
    votes_since_last_run: int  # as the scheduler counts them (new_teaching_votes)
    min_new_votes: int  # 0: the scheduler never starts a KTO run


def system_status(settings) -> SystemStatus:
    engine = get_engine(settings.database_url)
    with session_scope(engine) as session:
        loop, holder = loop_state(session), lease_holder(session, LEASE)
        votes = new_teaching_votes(session, settings, last_started_at(session))
    return SystemStatus(loop, server_state(settings), holder, next_check(engine), settings.min_new_pairs, votes,
                        settings.min_new_votes)
