"""The scheduler: start a run when enough new approved pairs (DPO) or votes (KTO) wait, reap dead runs, keep vLLM in sync.

APScheduler 3 runs the jobs, with its SQLAlchemy job store on Flywheel's own database, so the job
schedule survives restarts and late jobs after downtime coalesce into one run. Exactly one
scheduler is active however many are started: each instance competes for a database lease, only
the holder runs APScheduler, and every job renews the lease first (a holder that lost it stops).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import datetime, timedelta

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine, inspect

from storage.db import get_engine, session_scope
from storage.errors import InvalidInput
from storage.interactions import count_teaching_votes_since
from storage.leases import acquire_lease, release_lease
from storage.models import RunKind, RunStatus, utcnow
from storage.pairs import count_approved_since
from storage.runs import active_run, finish_run, last_started_at, reap_stale_runs
from storage.users import Actor, Role
from training.launcher import start_run_now
from training.metrics import SCHEDULER_CHECKS, SCHEDULER_LEADER
from training.tracking import mirror_registry

log = logging.getLogger("flywheel.scheduler")
LEASE = "scheduler"
SCHEDULER_ACTOR = Actor("scheduler", Role.admin)
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}  # late runs: once, whenever

_leader: FlywheelScheduler | None = None  # the instance of this process that holds the lease


def next_run(session, settings) -> tuple[RunKind | None, str]:
    """(the kind of run due, why), or (None, why none is). The rule: DPO when at least `min_new_pairs` pairs were
    approved since the last run started; otherwise KTO when at least `min_new_votes` votes that may teach (see
    `kto_pending_votes`) were cast, changed or reviewed since then (never with `min_new_votes` 0)."""
    running = active_run(session)
    if running is not None:
        return None, f"run {running.id} is {running.status.value}"
    last = last_started_at(session)
    if last is not None and utcnow() - last < timedelta(minutes=settings.min_interval_minutes):
        return None, f"the last run started less than {settings.min_interval_minutes:g} min ago"
    pairs = count_approved_since(session, last)
    why_not = f"{pairs} new approved pair(s), {settings.min_new_pairs} needed"
    if pairs >= settings.min_new_pairs:
        return RunKind.dpo, f"{pairs} new approved pair(s)"
    if not settings.min_new_votes:
        return None, why_not
    votes = new_teaching_votes(session, settings, last)
    if votes >= settings.min_new_votes:
        return RunKind.kto, f"{votes} new vote(s) to learn from and too few pairs ({why_not})"
    return None, f"{why_not}; {votes} new vote(s), {settings.min_new_votes} needed for KTO"


def new_teaching_votes(session, settings, since) -> int:
    """The votes a KTO run would count as new: approved (and per `kto_pending_votes`, pending) since `since`."""
    return count_teaching_votes_since(session, since, include_pending=settings.kto_pending_votes)


def why_not_start(session, settings) -> str | None:
    """None when a run is due; otherwise the reason it is not."""
    kind, reason = next_run(session, settings)
    return None if kind else reason


def fail_unstarted_runs(session, timeout_s: float) -> None:
    """A queued run whose process never started (spawn died, machine rebooted) must not block forever."""
    run = active_run(session)
    if run is not None and run.status is RunStatus.queued and utcnow() - run.created_at > timedelta(seconds=timeout_s):
        finish_run(session, run.id, RunStatus.failed, error=f"its process did not start within {timeout_s:.0f} s")


# APScheduler keeps jobs by reference ("module:function") in the database: plain module functions.
def maybe_start_run_job() -> None:
    if _leader is not None and _leader.renew():
        _leader.maybe_start_run()


def reap_job() -> None:
    if _leader is not None and _leader.renew():
        _leader.reap()


def sync_adapters_job() -> None:
    if _leader is not None and _leader.renew():
        _leader.sync_adapters()


START_JOB = "maybe-start-run"
JOBS = {START_JOB: maybe_start_run_job, "reap-stale-runs": reap_job, "sync-adapters": sync_adapters_job}


def next_check(engine: Engine) -> datetime | None:
    """When the scheduler next looks for enough approved pairs, as its job store on this database says
    (None before any scheduler ran). The time stays in the store while no scheduler runs."""
    store = SQLAlchemyJobStore(engine=engine)
    if not inspect(engine).has_table(store.jobs_t.name):
        return None
    job = store.lookup_job(START_JOB)
    return job.next_run_time if job is not None else None


class FlywheelScheduler:
    def __init__(self, settings, *, engine: Engine | None = None, holder: str | None = None):
        self.settings = settings
        self.engine = engine or get_engine(settings.database_url)
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_ttl_s = 3 * settings.scheduler_interval_s
        self.scheduler: BackgroundScheduler | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- leadership ----------------------------------------------------------------------------
    def renew(self) -> bool:
        """Take or renew the lease; a holder that lost it stops its jobs."""
        with session_scope(self.engine) as session:
            held = acquire_lease(session, LEASE, self.holder, self.lease_ttl_s)
        if not held and self.scheduler is not None:
            log.warning("%s lost the scheduler lease; stopping its jobs", self.holder)
            self._stop_jobs()
        return held

    def _start_jobs(self) -> None:
        global _leader
        _leader = self
        self.scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=self.engine)}, job_defaults=JOB_DEFAULTS, timezone="UTC"
        )
        for job_id, func in JOBS.items():
            self.scheduler.add_job(func, "interval", seconds=self.settings.scheduler_interval_s, id=job_id,
                                   replace_existing=True)
        self.scheduler.start()
        SCHEDULER_LEADER.set(1)
        log.info("%s holds the scheduler lease and runs the jobs", self.holder)

    def _stop_jobs(self) -> None:
        global _leader
        scheduler, self.scheduler = self.scheduler, None
        if _leader is self:
            _leader = None
        SCHEDULER_LEADER.set(0)
        if scheduler is not None:
            scheduler.shutdown(wait=False)

    def _campaign(self) -> None:
        """Followers wait for the lease; the holder's jobs renew it themselves."""
        while not self._stop.is_set():
            try:
                if self.scheduler is None and self.renew():
                    self._start_jobs()
            except Exception:  # database unreachable for a moment: keep campaigning
                log.exception("%s could not check the scheduler lease", self.holder)
            self._stop.wait(self.settings.scheduler_interval_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._campaign, name=f"scheduler-{self.holder}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        was_leader = self.scheduler is not None
        self._stop_jobs()
        if was_leader:
            with session_scope(self.engine) as session:
                release_lease(session, LEASE, self.holder)

    @property
    def is_leader(self) -> bool:
        return self.scheduler is not None

    # --- the jobs ------------------------------------------------------------------------------
    def maybe_start_run(self) -> int | None:
        with session_scope(self.engine) as session:
            kind, reason = next_run(session, self.settings)
        if kind is None:
            log.debug("no run: %s", reason)
            SCHEDULER_CHECKS.labels("not_due").inc()
            return None
        try:
            run_id = start_run_now(self.settings, SCHEDULER_ACTOR, kind)
        except InvalidInput as exc:  # another run was queued a moment ago
            log.info("no run: %s", exc)
            SCHEDULER_CHECKS.labels("not_due").inc()
            return None
        SCHEDULER_CHECKS.labels("started").inc()
        log.info("started %s run %s: %s", kind.value, run_id, reason)
        return run_id

    def reap(self) -> None:
        with session_scope(self.engine) as session:
            for run in reap_stale_runs(session, self.settings.heartbeat_timeout_s):
                log.warning("run %s had no heartbeat; marked failed", run.id)
            fail_unstarted_runs(session, self.settings.heartbeat_timeout_s)

    def sync_adapters(self) -> None:
        from serving.adapters import sync_adapters
        from serving.errors import ServingError

        mirror_registry(self.settings, self.engine)  # MLflow's aliases follow whichever face promoted
        try:
            result = sync_adapters(self.settings)
        except ServingError as exc:  # vLLM down or restarting: the next tick tries again
            log.warning("adapter sync failed: %s", exc)
            return
        if result.loaded or result.unloaded:
            log.info("adapters loaded %s, unloaded %s", result.loaded, result.unloaded)
