"""Queue a run and start `flywheel train run ID` as its own detached process, logging to a file."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import Engine

from storage.db import get_engine, session_scope
from storage.models import RunKind, RunStatus
from storage.registry import active_version
from storage.runs import finish_run, queue_run
from storage.users import Actor, Role, require_role
from training.config import TrainConfig

# Training is batch work: when it shares the cores with the bot, the dashboard and vLLM (nice 5 on the CPU,
# serving/engine.py), they come first, and it still gets every cycle they leave.
TRAINING_NICE = 10
# PyTorch's allocator grows segments instead of caching whole blocks: a run beside vLLM holds what it uses
# (measured in the README's training figures).
ALLOCATOR_CONF = "expandable_segments:True"


def settings_env(settings) -> dict[str, str]:
    """The settings as FLYWHEEL_* variables, so the child process sees exactly these settings."""
    env = {}
    for name, value in settings:
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[f"FLYWHEEL_{name.upper()}"] = str(value)
    return env


def run_command(settings, run_id: int, log_path: Path) -> list[str]:
    """`flywheel train run ID`, under `accelerate launch` when several processes are configured."""
    entry = ["-m", "flywheel", "train", "run", str(run_id), "--log-file", str(log_path)]
    if settings.train_processes > 1:
        launch = ["-m", "accelerate.commands.launch", "--num_processes", str(settings.train_processes)]
        return [sys.executable, *launch, *shlex.split(settings.train_launch_args), *entry]
    return [sys.executable, *entry]


def gpu_env(settings) -> dict[str, str]:
    """One process sees one GPU: with several visible, Trainer wraps the model in nn.DataParallel, which
    TRL's trainers refuse. Several GPUs are used through `accelerate launch` (train_processes > 1)."""
    allocator = {"PYTORCH_CUDA_ALLOC_CONF": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ALLOCATOR_CONF)}
    if settings.train_processes > 1:
        return allocator
    return {**allocator, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]}


def spawn_run(settings, run_id: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    log_path = settings.logs_dir / f"run-{run_id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            run_command(settings, run_id, log_path), stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, start_new_session=True,  # survives the parent; Ctrl-C there does not stop it
            env={**os.environ, **settings_env(settings), **gpu_env(settings), **(env or {})},
        )
    os.setpriority(os.PRIO_PROCESS, process.pid, TRAINING_NICE)  # the processes it starts inherit it
    return process


def queue(engine: Engine, settings, actor: Actor, kind: RunKind, overrides: dict[str, Any]) -> int:
    config = {"train": TrainConfig.from_settings(settings, **overrides).as_dict(), "overrides": overrides}
    with session_scope(engine) as session:
        parent = active_version(session)
        run = queue_run(session, kind, config, triggered_by=actor.name, parent_version_id=parent.id if parent else None)
        return run.id


def start_run_now(settings, actor: Actor, kind: RunKind = RunKind.dpo, *, overrides: dict[str, Any] | None = None) -> int:
    """Snapshot, train, evaluate and register in a new process; returns the run id at once.

    Raises InvalidInput while another run is queued or running (one run at a time).
    """
    require_role(actor, Role.admin)
    engine = get_engine(settings.database_url)
    run_id = queue(engine, settings, actor, kind, overrides or {})
    try:
        spawn_run(settings, run_id)
    except OSError as exc:
        with session_scope(engine) as session:
            finish_run(session, run_id, RunStatus.failed, error=f"could not start the run process: {exc}")
        raise
    return run_id
