"""MLflow mirrors the registry (a real local MLflow store, no server): each version a run has registered is
an MLflow model version, and the aliases `production` and `canary` follow promotion, canaries and rollback.
An unreachable tracking server, or tracking turned off, never stops anything. (A real training run's params,
step metrics, evaluation and artifacts are checked in test_observability_stack.py.)"""

from __future__ import annotations

import json
import sys
import logging

import pytest
from mlflow import MlflowClient

from storage.db import make_engine, session_scope
from storage.models import RunKind, RunStatus
from storage.registry import promote_version, register_version, rollback, start_canary
from storage.runs import finish_run, get_run, queue_run, start_run
from storage.users import SYSTEM
from serving.testing import free_port
from training.runner import publish
from training.tracking import VERSION_TAG, mirror_registry, start_tracking

EVAL = {"reward_accuracy": 0.75, "reward_margin": 0.4, "compared_with": "base", "gate": "beats base: ...",
        "incumbent": {"reward_accuracy": 0.0, "reward_margin": 0.0}, "pairs": 4}


def finished_run(engine) -> int:
    with session_scope(engine) as session:
        run = queue_run(session, RunKind.dpo, {"train": {"lora_r": 8}, "overrides": {}}, triggered_by="test")
        start_run(session, run.id, pid=1, log_path="", output_dir="")
        finish_run(session, run.id, RunStatus.succeeded, eval_metrics=EVAL)
        return run.id


def tracked_version(settings, engine, tmp_path, name: str) -> int:
    """A run tracked in MLflow that registered a version; its adapter folder logged as the run's artifact."""
    run_id = finished_run(engine)
    tracker = start_tracking(settings, engine, run_id)
    adapter = tmp_path / name
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    with session_scope(engine) as session:
        version = register_version(session, adapter_path=str(adapter), base_model="base", training_run_id=run_id,
                                   parent_id=None, metrics=EVAL)
        version_id = version.id
    publish(settings, engine, run_id, adapter, tracker)
    return version_id


def aliases(client: MlflowClient, model: str) -> dict[str, str]:
    """alias -> the Flywheel version its MLflow model version stands for."""
    return {alias: client.get_model_version(model, number).tags[VERSION_TAG]
            for alias, number in client.get_registered_model(model).aliases.items()}


@pytest.fixture
def engine_of(settings):
    engine = make_engine(settings.database_url)
    yield engine
    engine.dispose()


def test_mlflow_aliases_follow_promotion_canary_and_rollback(settings, engine_of, tmp_path):
    v1 = tracked_version(settings, engine_of, tmp_path, "v1")
    v2 = tracked_version(settings, engine_of, tmp_path, "v2")
    client, model = MlflowClient(settings.mlflow_tracking_uri), settings.mlflow_experiment
    versions = client.search_model_versions(f"name='{model}'")
    assert sorted(mv.tags[VERSION_TAG] for mv in versions) == ["v1", "v2"]
    artifacts = {f.path for f in client.list_artifacts(versions[0].run_id, "adapter")}
    assert artifacts == {"adapter/adapter_config.json", "adapter/README.md"}  # the model card travels with it
    experiment = client.get_experiment_by_name(model)
    assert experiment.artifact_location.startswith((settings.mlflow_dir / "artifacts").resolve().as_uri())
    assert aliases(client, model) == {}  # candidates only

    def after(change) -> dict[str, str]:
        with session_scope(engine_of) as session:
            change(session)
        mirror_registry(settings, engine_of)
        return aliases(client, model)

    assert after(lambda s: promote_version(s, v1, SYSTEM)) == {"production": "v1"}
    assert after(lambda s: start_canary(s, v2, 0.25, SYSTEM)) == {"production": "v1", "canary": "v2"}
    assert after(lambda s: promote_version(s, v2, SYSTEM)) == {"production": "v2"}
    assert after(lambda s: rollback(s, SYSTEM)) == {"production": "v1"}
    mirror_registry(settings, engine_of)  # idempotent
    assert aliases(client, model) == {"production": "v1"}


def test_an_unreachable_tracking_server_is_a_warning_and_changes_nothing(settings, engine_of, caplog):
    server = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    unreachable = settings.model_copy(update={"mlflow_tracking_uri": server})
    run_id = finished_run(engine_of)
    with caplog.at_level(logging.WARNING, logger="flywheel.tracking"):
        tracker = start_tracking(unreachable, engine_of, run_id)
        tracker.log_step(1, {"loss": 0.5})
        tracker.end("FINISHED")
        mirror_registry(unreachable, engine_of)
    assert f"MLflow at {server} unavailable, run {run_id} is not tracked" in caplog.text
    assert tracker.client is None and "MLflow model aliases not updated" in caplog.text
    with session_scope(engine_of) as session:
        assert get_run(session, run_id).mlflow_run is None


def test_tracking_turned_off_creates_no_store(settings, engine_of):
    off = settings.model_copy(update={"mlflow_enabled": False})
    tracker = start_tracking(off, engine_of, finished_run(engine_of))
    tracker.log_step(1, {"loss": 0.5})
    mirror_registry(off, engine_of)
    assert tracker.client is None and not settings.mlflow_dir.exists()


def test_a_machine_without_mlflow_trains_untracked(settings, engine_of, tmp_path, monkeypatch, caplog):
    """Found on the GPU machine: a run whose tracker was off still imported mlflow at its first logged step,
    and the run failed there."""
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    run_id = finished_run(engine_of)
    with caplog.at_level(logging.WARNING, logger="flywheel.tracking"):
        tracker = start_tracking(settings, engine_of, run_id)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    tracker.log_step(1, {"loss": 0.5})
    publish(settings, engine_of, run_id, adapter, tracker)
    tracker.end("FINISHED")
    assert tracker.client is None and f"run {run_id} is not tracked" in caplog.text
