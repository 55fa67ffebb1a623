"""The scheduler's Prometheus metrics, and the gauges of the state the database holds.

A training run is a short-lived process of its own that Prometheus cannot scrape, and pairs, votes and
the registry change in every process: so that state is read from the database at each scrape, by the
scheduler, which always runs. Only through storage/, and only indexed or time-bounded queries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from enum import Enum

from prometheus_client import Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from storage import stats
from storage.db import session_scope
from storage.interactions import VoteFilter, count_teaching_votes_since, count_votes
from storage.leases import lease_holder
from storage.models import PairSource, PairStatus, RunKind, RunStatus, Vote, utcnow
from storage.pairs import count_approved_since
from storage.registry import active_version, canary_version, previous_version
from storage.runs import last_started_at, latest_finished_run

log = logging.getLogger("flywheel.metrics")
BASE_MODEL = "base"  # the name vLLM answers as without an adapter (serving.engine.BASE_MODEL_NAME)

SCHEDULER_CHECKS = Counter("flywheel_scheduler_checks_total", "Scheduler checks for a due run.", ["outcome"])
SCHEDULER_LEADER = Gauge("flywheel_scheduler_leader", "Whether this scheduler holds the lease and runs the jobs.")
for _outcome in ("started", "not_due"):
    SCHEDULER_CHECKS.labels(_outcome)


Samples = list[tuple[tuple[str, ...], float]]  # (label values, value)


def gauge(name: str, documentation: str, labels: tuple[str, ...] = (), samples: Samples = ()) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    for values, value in samples:
        family.add_metric(list(values), value)
    return family


def single(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def grid(name: str, documentation: str, labels: tuple[str, str], counts: dict[tuple, int],
         rows: type[Enum], columns: type[Enum]) -> GaugeMetricFamily:
    """A count for every pair of values of two enums, 0 where there is none: each series exists from the start."""
    samples = [((row.value, column.value), counts.get((row, column), 0)) for row in rows for column in columns]
    return gauge(name, documentation, labels, samples)


class DatabaseCollector:
    """Pairs and the review queue, feedback per model version, training runs, the scheduler lease."""

    def __init__(self, engine: Engine, lease: str, feedback_window: timedelta, pending_votes_teach: bool = False):
        self.engine, self.lease, self.window = engine, lease, feedback_window
        self.pending_votes_teach = pending_votes_teach  # FLYWHEEL_KTO_PENDING_VOTES: count votes as the scheduler does

    def describe(self) -> list:
        return []  # registering it must not query the database

    def collect(self) -> Iterator[GaugeMetricFamily]:
        started, families = time.perf_counter(), []
        try:
            with session_scope(self.engine) as session:
                families = [*self.pairs(session), *self.feedback(session), *self.training(session),
                            self.lease_holder(session)]
        except SQLAlchemyError as exc:  # the database down is a value (0), not a failed scrape
            log.warning("database gauges unavailable: %s", exc)
        yield from families
        yield single("flywheel_database_up", "Whether the database answered this scrape.", float(bool(families)))
        yield single("flywheel_database_scrape_seconds", "Seconds the database gauges took to read.",
                     time.perf_counter() - started)

    def pairs(self, session: Session) -> list[GaugeMetricFamily]:
        oldest = stats.oldest_pending_pair_at(session)
        return [
            grid("flywheel_pairs", "Preference pairs by review status and source.", ("status", "source"),
                 {(PairStatus(c["status"]), PairSource(c["source"])): c["count"] for c in stats.pair_counts(session)},
                 PairStatus, PairSource),
            single("flywheel_review_queue_oldest_age_seconds", "Age of the oldest pair waiting for review (0: none).",
                   (utcnow() - oldest).total_seconds() if oldest else 0.0),
            single("flywheel_training_pairs_waiting", "Approved pairs since the last run started.",
                   count_approved_since(session, last_started_at(session))),
            gauge("flywheel_votes", "Votes on answers by review status (approved ones teach KTO runs).", ("status",),
                  [((status.value,), count_votes(session, VoteFilter(status=status))) for status in PairStatus]),
            single("flywheel_training_votes_waiting", "Votes that may teach (approved; with FLYWHEEL_KTO_PENDING_VOTES "
                   "pending too) cast, changed or reviewed since the last run started.",
                   count_teaching_votes_since(session, last_started_at(session),
                                              include_pending=self.pending_votes_teach)),
        ]

    def feedback(self, session: Session) -> list[GaugeMetricFamily]:
        serving, votes, shares = [], [], []
        for role, name, since, until in self.feedback_windows(session):
            serving.append(((name, role), 1))
            counts = stats.votes_on_answers(session, name, since, until)
            total = sum(counts.values())
            for vote in Vote:
                votes.append(((name, role, vote.value), counts.get(vote, 0)))
                if total:
                    shares.append(((name, role, vote.value), counts.get(vote, 0) / total))
        active = active_version(session)
        promoted = [((active.name,), active.promoted_at.timestamp())] if active and active.promoted_at else []
        return [
            gauge("flywheel_model_serving", "Models by role: answering now (active, canary), or active before the "
                  "current one (previous). Value 1.", ("version", "role"), serving),
            gauge("flywheel_feedback_votes", "Votes on a model's answers in its feedback window.",
                  ("version", "role", "vote"), votes),
            gauge("flywheel_feedback_share", "Share of 👍 (up) or 👎 (down) among those votes (none without votes).",
                  ("version", "role", "vote"), shares),
            gauge("flywheel_model_promoted_timestamp_seconds", "When the active version was promoted (Unix time).",
                  ("version",), promoted),
        ]

    def feedback_windows(self, session: Session) -> list[tuple[str, str, datetime, datetime]]:
        """(role, model, since, until): the active model's answers since its promotion (within the window),
        the canary's within the window, and the previous model's in the window before the promotion."""
        now = utcnow()
        recent = now - self.window
        active, canary = active_version(session), canary_version(session)
        promoted_at = active.promoted_at if active is not None else None
        windows = [("active", active.name if active else BASE_MODEL, max(recent, promoted_at or recent), now)]
        if canary is not None:
            windows.append(("canary", canary.name, recent, now))
        if promoted_at is not None:
            previous = previous_version(session)
            windows.append(("previous", previous.name if previous else BASE_MODEL, promoted_at - self.window,
                            promoted_at))
        return windows

    def training(self, session: Session) -> list[GaugeMetricFamily]:
        decisions = stats.gate_decisions(session)
        last, success = latest_finished_run(session), latest_finished_run(session, RunStatus.succeeded)
        duration = [((str(last.id), last.kind.value, last.status.value),
                     (last.finished_at - last.started_at).total_seconds())] if last and last.started_at else []
        tokens_per_s = success.eval_metrics.get("tokens_per_s") if success else None
        throughput = [((str(success.id), success.kind.value), tokens_per_s)] if tokens_per_s else []
        return [
            grid("flywheel_training_runs", "Training runs by kind and status.", ("kind", "status"),
                 stats.run_counts(session), RunKind, RunStatus),
            gauge("flywheel_training_gate_decisions", "Succeeded runs whose candidate the gate registered (passed) "
                  "or not (failed).", ("decision",), [(("passed",), decisions.get(True, 0)),
                                                      (("failed",), decisions.get(False, 0))]),
            single("flywheel_training_last_success_timestamp_seconds",
                   "When the last successful run ended (Unix time; 0: never).",
                   success.finished_at.timestamp() if success else 0.0),
            gauge("flywheel_training_last_run_duration_seconds", "Wall time of the last finished run (load, train, "
                  "evaluate).", ("run", "kind", "status"), duration),
            gauge("flywheel_training_last_run_tokens_per_second", "Median training throughput of the last successful "
                  "run.", ("run", "kind"), throughput),
        ]

    def lease_holder(self, session: Session) -> GaugeMetricFamily:
        holder = lease_holder(session, self.lease)
        return gauge("flywheel_scheduler_lease_holder", "The scheduler instance holding the lease (value 1).",
                     ("holder",), [((holder,), 1)] if holder else [])
