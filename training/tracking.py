"""Experiment tracking in MLflow: each training run is an MLflow run (its whole config, data snapshot, per-step
metrics, evaluation, the gate's decision, the adapter with its model card), each registered version an MLflow
model version, and the registry's active and canary versions carry the aliases `production` and `canary`.

MLflow mirrors the loop and never holds it up: every call is best effort. The first failure (a server
unreachable, say) is logged as a warning and turns tracking off for the rest of the run, which carries on.
mlflow is imported only when used (the scheduler and dashboard import this module too).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from serving.adapters import SyncReport, sync_and_report
from storage.db import get_engine, session_scope
from storage.registry import active_version, canary_version
from storage.runs import get_run
from training.run_summary import RunSummary, summarize_run

if TYPE_CHECKING:  # importing the callbacks loads transformers: seconds the scheduler and dashboard need not spend
    from training.callbacks import Reporter

log = logging.getLogger("flywheel.tracking")
VERSION_TAG = "flywheel.version"
ADAPTER_ARTIFACTS = "adapter"
PARAM_CHARS = 6000  # MLflow's limit on a parameter's value
T = TypeVar("T")


def is_local_store(settings) -> bool:
    return settings.mlflow_tracking_uri.startswith("sqlite:")


def mlflow_client(settings):
    from mlflow import MlflowClient
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    # An unreachable server should cost seconds, not MLflow's defaults (7 retries, 120 s timeouts); set
    # these variables to choose otherwise.
    for variable, value in ((MLFLOW_HTTP_REQUEST_MAX_RETRIES, 2), (MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, 1),
                            (MLFLOW_HTTP_REQUEST_TIMEOUT, 10)):
        if not variable.is_set():
            variable.set(value)
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def experiment_id(client, settings) -> str:
    found = client.get_experiment_by_name(settings.mlflow_experiment)
    if found is not None:
        return found.experiment_id
    # A local store keeps its artifacts beside it (MLflow's default would be ./mlruns of whatever cwd).
    location = (settings.mlflow_dir / "artifacts").resolve().as_uri() if is_local_store(settings) else None
    return client.create_experiment(settings.mlflow_experiment, artifact_location=location)


def run_params(summary: RunSummary) -> dict[str, str]:
    params: dict[str, Any] = {
        "kind": summary.kind, "base_model": summary.base_model, "parent_version": summary.parent,
        "snapshot_hash": summary.snapshot_hash, "snapshot_id": summary.snapshot_id,
        "pairs_train": summary.train_pairs, "pairs_eval": summary.eval_pairs,
    }
    params |= {f"pairs_source.{source}": n for source, n in summary.pairs_by_source.items()}
    params |= {f"train.{name}": value for name, value in summary.hyperparameters.items()}
    params |= {f"overrides.{name}": value for name, value in summary.overrides.items()}
    return {name: str(value)[:PARAM_CHARS] for name, value in params.items()}


def numeric(values: dict[str, Any], prefix: str) -> dict[str, float]:
    return {f"{prefix}/{name}": float(value) for name, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def evaluation_metrics(summary: RunSummary) -> dict[str, float]:
    metrics = summary.eval_metrics
    values = numeric(metrics, "eval") | numeric(metrics.get("incumbent", {}), "incumbent")
    return values | {"gate/passed": float(summary.passed_gate)}


class RunTracker:
    """One Flywheel run as one MLflow run (a tracker without a client does nothing)."""

    def __init__(self, client=None, run_id: str = ""):
        self.client, self.run_id = client, run_id

    def _call(self, what: str, action: Callable[[], T]) -> T | None:
        if self.client is None:
            return None
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - whatever MLflow raises, the run goes on
            log.warning("MLflow: %s failed, tracking is off for the rest of this run: %s", what, exc)
            self.client = None
            return None

    def reporting(self, report: Reporter) -> Reporter:
        """`report`, with each step's metrics also logged to MLflow."""

        def tracked(step: int, values: dict[str, Any]) -> bool:
            self.log_step(step, values)
            return report(step, values)

        return tracked

    def _log_batch(self, what: str, *, params=(), metrics=(), tags=()) -> None:
        """One log_batch of (name, value) params and tags and (name, value, step) metrics. mlflow is imported
        only when there is a client to send them to: with MLflow off, or not installed, nothing happens."""
        def send() -> None:
            from mlflow.entities import Metric, Param, RunTag

            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, params=[Param(name, value) for name, value in params],
                                  metrics=[Metric(name, float(value), now, step) for name, value, step in metrics],
                                  tags=[RunTag(name, value) for name, value in tags])

        self._call(what, send)

    def log_params(self, summary: RunSummary) -> None:
        self._log_batch("logging the parameters", params=run_params(summary).items())

    def log_step(self, step: int, values: dict[str, Any]) -> None:
        self._log_batch("logging step metrics", metrics=[(name, value, step) for name, value in values.items()])

    def publish(self, summary: RunSummary, adapter_dir: Path, model_name: str) -> None:
        """The evaluation and the gate's decision, the adapter with its card, and the version it registered."""
        self._log_batch("logging the evaluation",
                        metrics=[(name, value, 0) for name, value in evaluation_metrics(summary).items()],
                        tags=[("flywheel.gate", str(summary.eval_metrics.get("gate", ""))),
                              (VERSION_TAG, summary.version or "not registered")])
        self._call("logging the adapter", lambda: self.client.log_artifacts(self.run_id, str(adapter_dir),
                                                                            ADAPTER_ARTIFACTS))
        if summary.version is not None:
            self._call("registering the model version",
                       lambda: register_model_version(self.client, model_name, self.run_id, summary.version))

    def end(self, status: str) -> None:
        """FINISHED, FAILED or KILLED (cancelled)."""
        self._call("ending the run", lambda: self.client.set_terminated(self.run_id, status))


def start_tracking(settings, engine: Engine, run_id: int) -> RunTracker:
    """An MLflow run for `run_id` (after its snapshot is attached), with its parameters; its ids are kept on
    the run, for the dashboard's link. A disabled tracker when MLflow is off or unavailable."""
    if not settings.mlflow_enabled:
        return RunTracker()
    with session_scope(engine) as session:
        summary = summarize_run(session, settings, run_id)
    try:
        client = mlflow_client(settings)
        experiment = experiment_id(client, settings)
        run = client.create_run(experiment, run_name=f"flywheel-run-{run_id}",
                                tags={"flywheel.run_id": str(run_id), "flywheel.kind": summary.kind})
        tracker = RunTracker(client, run.info.run_id)
    except Exception as exc:  # noqa: BLE001 - whatever MLflow raises, the run goes on
        log.warning("MLflow at %s unavailable, run %s is not tracked: %s", mlflow_location(settings), run_id, exc)
        return RunTracker()
    tracker.log_params(summary)
    with session_scope(engine) as session:
        get_run(session, run_id).mlflow_run = {"experiment_id": experiment, "run_id": tracker.run_id}
    return tracker


def register_model_version(client, model_name: str, run_id: str, version: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(model_name, description="Flywheel's LoRA adapters; aliases follow its registry.")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    client.create_model_version(model_name, source=f"runs:/{run_id}/{ADAPTER_ARTIFACTS}", run_id=run_id,
                                tags={VERSION_TAG: version})


def mirror_registry(settings, engine: Engine | None = None) -> None:
    """Point the MLflow aliases `production` and `canary` at the model versions of our active and canary
    versions (removed when there is none). Idempotent, so every registry change and every scheduler tick
    can call it; a failure is logged and the next call tries again."""
    if not settings.mlflow_enabled or (is_local_store(settings) and not local_store_path(settings).exists()):
        return  # no run tracked yet: nothing to mirror (and no empty store created)
    with session_scope(engine or get_engine(settings.database_url)) as session:
        active, canary = active_version(session), canary_version(session)
        wanted = {"production": active.name if active else None, "canary": canary.name if canary else None}
    try:
        client, name = mlflow_client(settings), settings.mlflow_experiment
        versions = {mv.tags.get(VERSION_TAG): str(mv.version) for mv in client.search_model_versions(f"name='{name}'")}
        if not versions:
            return
        current = {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}
        for alias, version_name in wanted.items():
            target = versions.get(version_name)
            if target is None and alias in current:
                client.delete_registered_model_alias(name, alias)
            elif target is not None and current.get(alias) != target:
                client.set_registered_model_alias(name, alias, target)
    except Exception as exc:  # noqa: BLE001 - the registry change stands; the next call retries
        log.warning("MLflow model aliases not updated: %s", exc)


def follow_registry(settings) -> SyncReport:
    """After an admin changes the registry (the dashboard, the CLI): vLLM serves it and MLflow's aliases mirror
    it. Returns how vLLM's sync went (a vLLM that is down is reported; the registry change stands)."""
    mirror_registry(settings)
    return sync_and_report(settings)


def local_store_path(settings) -> Path:
    return Path(make_url(settings.mlflow_tracking_uri).database or "")


def mlflow_location(settings) -> str:
    """The tracking URI without the credentials it may carry (user:password@)."""
    parts = urlsplit(settings.mlflow_tracking_uri)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def run_link(settings, mlflow_run: dict | None) -> str | None:
    """The MLflow UI's page of a tracked run, when runs go to a tracking server."""
    if not mlflow_run or not settings.mlflow_tracking_uri.startswith(("http://", "https://")):
        return None
    base = mlflow_location(settings).rstrip("/")
    return f"{base}/#/experiments/{mlflow_run['experiment_id']}/runs/{mlflow_run['run_id']}"
