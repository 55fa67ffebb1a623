"""Execute one queued run in this process: snapshot, train, evaluate, gate, register.

`flywheel train run ID` calls `execute_run`; the launcher starts that command as its own process,
so a crash or OOM here cannot take down the bot or the scheduler. Whatever goes wrong, the run is
marked failed with the error and the registry (what is served) is not touched.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import PartialState
from sqlalchemy import Engine

from serving.base_model import ensure_base_model
from serving.errors import ServingError
from storage.db import get_engine, session_scope
from storage.models import RunKind, RunStatus
from storage.registry import active_version, get_version, promote_version, register_version
from storage.runs import attach_snapshot, finish_run, get_run, heartbeat, record_step, start_run
from storage.users import SYSTEM
from training.config import TrainConfig
from training.dpo import train_dpo
from training.evaluation import BASE, score_versions, side_by_side
from training.gate import decide
from training.judge import judge_versions
from training.kto import train_kto
from training.kto_examples import build_kto_snapshot
from training.modeling import require_gpu_room
from training.model_card import write_model_card
from training.regression import answer_regression_prompts
from training.run_summary import summarize_run
from training.served_answers import vllm_answerers
from training.sft import train_sft
from training.snapshots import build_snapshot, load_snapshot
from training.tracking import RunTracker, mirror_registry, start_tracking
from training.trainer import TrainResult

log = logging.getLogger("flywheel.training")
TRAINERS = {RunKind.dpo: train_dpo, RunKind.sft: train_sft, RunKind.kto: train_kto}
SNAPSHOTS = {RunKind.dpo: build_snapshot, RunKind.sft: build_snapshot, RunKind.kto: build_kto_snapshot}
CANDIDATE = "candidate"


@dataclass
class RunPlan:
    kind: RunKind
    config: TrainConfig
    model_dir: Path
    output_dir: Path
    train: Any  # datasets.Dataset
    eval_records: list[dict]
    start_adapter: Path | None
    parent_id: int | None


def steps_per_epoch(examples: int, cfg: TrainConfig, processes: int = 1) -> int:
    return max(1, -(-examples // (cfg.batch_size * cfg.gradient_accumulation_steps * processes)))


def total_steps(examples: int, cfg: TrainConfig, processes: int = 1) -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    return int(-(-steps_per_epoch(examples, cfg, processes) * cfg.epochs // 1))


def prepare(settings, engine: Engine, run_id: int) -> RunPlan:
    """Snapshot the approved pairs (KTO: the votes and pairs; fails here, before any training, if they cannot train).

    Under `accelerate launch` rank 0 builds and attaches the snapshot first; the other ranks then read
    the run's snapshot, so every rank trains on the same pairs even if more were approved meanwhile.
    """
    state = PartialState()
    main = state.is_main_process
    with session_scope(engine) as session:
        run = get_run(session, run_id)
        config = TrainConfig.from_settings(settings, **run.config.get("overrides", {}))
        snapshot = SNAPSHOTS[run.kind](session, settings) if main else run.snapshot
        dataset = load_snapshot(snapshot)
        if main:
            steps = total_steps(len(dataset["train"]), config, state.num_processes)
            attach_snapshot(session, run_id, snapshot.id, steps)
        parent = get_version(session, run.parent_version_id) if run.parent_version_id else None
        log.info("run %s: %s on snapshot %s (%d train, %d held out), starting from %s", run_id, run.kind.value,
                 snapshot.content_hash[:12], snapshot.train_count, snapshot.eval_count,
                 parent.name if parent else "the base model")
        return RunPlan(
            kind=run.kind, config=config, model_dir=ensure_base_model(settings, progress=log.info),
            output_dir=settings.runs_dir / f"run-{run_id}", train=dataset["train"],
            eval_records=list(dataset["eval"]), start_adapter=Path(parent.adapter_path) if parent else None,
            parent_id=parent.id if parent else None,
        )


def step_reporter(engine: Engine, run_id: int):
    def report(step: int, values: dict[str, Any]) -> bool:
        log.info("run %s step %s: %s", run_id, step, {k: round(v, 5) for k, v in values.items()})
        with session_scope(engine) as session:
            return record_step(session, run_id, step, values)

    return report


def eval_heartbeat(engine: Engine, run_id: int, every_s: float = 10.0):
    last = [0.0]

    def beat() -> None:
        if time.monotonic() - last[0] >= every_s:
            last[0] = time.monotonic()
            with session_scope(engine) as session:
                heartbeat(session, run_id)

    return beat


def incumbent(engine: Engine) -> tuple[str, str | None]:
    """What the candidate must beat: the active version, or the base model when none is active."""
    with session_scope(engine) as session:
        active = active_version(session)
        return (active.name, active.adapter_path) if active else (BASE, None)


def evaluate_and_register(settings, engine: Engine, run_id: int, plan: RunPlan, result: TrainResult) -> None:
    name, path = incumbent(engine)
    adapters = {name: Path(path) if path else None, CANDIDATE: result.adapter_path}
    with vllm_answerers(settings, plan.model_dir, adapters, f"run-{run_id}") as served:
        scores = score_versions(plan.model_dir, adapters, plan.eval_records, plan.config,
                                eval_heartbeat(engine, run_id), served)
        candidate, incumbent_scores = dict(scores[CANDIDATE]), dict(scores[name])
        answers = side_by_side(candidate.pop("held_out_answers"), incumbent_scores.pop("held_out_answers"))
        judged_candidate, judged_incumbent = judge_versions(settings, answers)
        candidate, incumbent_scores = candidate | judged_candidate, incumbent_scores | judged_incumbent
        decision = decide(candidate, incumbent_scores, name, settings.gate_margin, settings.gate_metric,
                          settings.gate_max_knowledge_drop)
        log.info("run %s gate: %s", run_id, decision.reason)
        # what the compare view shows beside the active version's: only a registered candidate has a row for it
        regression = answer_regression_prompts(settings, served.get(CANDIDATE)) if decision.passed else None
    metrics = {**candidate, "compared_with": name, "incumbent": incumbent_scores, "gate": decision.reason,
               "steps": result.steps, "tokens_per_s": result.tokens_per_s, "held_out_answers": answers}
    with session_scope(engine) as session:
        finish_run(session, run_id, RunStatus.succeeded, eval_metrics=metrics,
                   not_registered_reason=None if decision.passed else decision.reason)
        if not decision.passed:
            return
        version = register_version(
            session, adapter_path=str(result.adapter_path.resolve()), base_model=str(plan.model_dir),
            training_run_id=run_id, parent_id=plan.parent_id, metrics=metrics, regression_answers=regression,
        )
        version_id, version_name = version.id, version.name
    log.info("run %s registered %s", run_id, version_name)
    if settings.auto_promote:
        promote(settings, engine, version_id)


def promote(settings, engine: Engine, version_id: int) -> None:
    from serving.adapters import sync_adapters

    with session_scope(engine) as session:
        promote_version(session, version_id, SYSTEM, action="auto_promote")
    try:
        sync_adapters(settings)
    except ServingError as exc:  # the scheduler's next sync retries
        log.warning("auto-promoted, but vLLM could not be synced yet: %s", exc)


def publish(settings, engine: Engine, run_id: int, adapter_dir: Path, tracker: RunTracker) -> None:
    """The adapter's model card, then the run's evaluation, adapter and version in MLflow."""
    with session_scope(engine) as session:
        summary = summarize_run(session, settings, run_id)
    write_model_card(adapter_dir, summary, settings.model_card_license)
    tracker.publish(summary, adapter_dir, settings.mlflow_experiment)
    tracker.end("FINISHED")
    mirror_registry(settings, engine)  # an auto-promoted version has its MLflow model version only now


def fail_run(engine: Engine, run_id: int, exc: BaseException) -> None:
    with session_scope(engine) as session:
        if get_run(session, run_id).status is RunStatus.running:
            finish_run(session, run_id, RunStatus.failed, error=f"{type(exc).__name__}: {exc}")


def execute_run(settings, run_id: int, *, log_path: str = "", engine: Engine | None = None) -> None:
    """Run `run_id` to its end; every outcome (succeeded, failed, cancelled) is written to the run."""
    engine = engine or get_engine(settings.database_url)
    state = PartialState()
    main = state.is_main_process  # under `accelerate launch`, only rank 0 writes the database
    output_dir = settings.runs_dir / f"run-{run_id}"
    tracker = RunTracker()
    if main:
        with session_scope(engine) as session:
            start_run(session, run_id, pid=os.getpid(), log_path=log_path, output_dir=str(output_dir))
    try:
        with state.main_process_first():
            plan = prepare(settings, engine, run_id)
        require_gpu_room(plan.model_dir, plan.config, f"run {run_id}")
        if main:
            tracker = start_tracking(settings, engine, run_id)
        report = tracker.reporting(step_reporter(engine, run_id)) if main else (lambda _step, _values: False)
        trainer = TRAINERS[plan.kind]
        result = trainer(plan.config, plan.model_dir, plan.train, plan.output_dir,
                         start_adapter=plan.start_adapter, report=report)
        if not main:
            return
        if result.cancelled:
            with session_scope(engine) as session:
                finish_run(session, run_id, RunStatus.cancelled, error=f"cancelled at step {result.steps}")
            log.info("run %s cancelled at step %s", run_id, result.steps)
            tracker.end("KILLED")
            return
        evaluate_and_register(settings, engine, run_id, plan, result)
        publish(settings, engine, run_id, result.adapter_path, tracker)
    except BaseException as exc:  # KeyboardInterrupt / SIGTERM included: never leave it "running"
        log.exception("run %s failed", run_id)
        if main:
            fail_run(engine, run_id, exc)
            tracker.end("FAILED")
        raise
    finally:
        state.destroy_process_group()  # under `accelerate launch`: NCCL leaks resources otherwise
