"""`flywheel train run|now`, `flywheel scheduler`, `flywheel eval`: thin commands over training/."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from datetime import timedelta
from pathlib import Path

import typer

from flywheel.cli.common import console, db_session, fail, settings
from flywheel.metrics_server import serve_metrics
from storage.errors import StorageError
from storage.models import RunKind
from storage.users import SYSTEM

train_app = typer.Typer(help="Training runs (DPO / SFT / KTO).", no_args_is_help=True)


def _require_migrated_db() -> None:
    with db_session():  # an unmigrated database ends the command here, before any model loads
        pass


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@train_app.command("run")
def run(
    run_id: int = typer.Argument(..., help="A queued run's id."),
    log_file: str = typer.Option("", help="Where this process's output goes (recorded on the run)."),
) -> None:
    """Execute one queued run in this process: snapshot, train, evaluate, gate, register."""
    from training.runner import execute_run

    _require_migrated_db()
    _log_to_stderr()
    # SIGTERM becomes SystemExit, so the run is marked failed ("stopped") instead of left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"run {run_id} stopped by SIGTERM"))
    try:
        execute_run(settings(), run_id, log_path=log_file)
    except StorageError as exc:
        raise fail(str(exc)) from None
    except Exception as exc:
        raise fail(f"run {run_id} failed: {type(exc).__name__}: {exc}") from None


@train_app.command("now")
def now(kind: RunKind = typer.Option(RunKind.dpo, help="dpo, sft, or kto (approved votes, and pairs).")) -> None:
    """Start a run now on the approved pairs (kto: votes too), in its own process."""
    from training.launcher import start_run_now

    _require_migrated_db()
    try:
        run_id = start_run_now(settings(), SYSTEM, kind)
    except StorageError as exc:
        raise fail(str(exc)) from None
    console.print(f"started run {run_id}; log: {settings().logs_dir / f'run-{run_id}.log'}")


def scheduler() -> None:
    """Run the scheduler until Ctrl-C: starts runs, reaps dead ones, keeps vLLM's adapters in sync."""
    from training.metrics import DatabaseCollector
    from training.scheduler import LEASE, FlywheelScheduler

    _require_migrated_db()
    _log_to_stderr()
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # not a line per job per tick
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    service = FlywheelScheduler(settings())
    window = timedelta(hours=settings().feedback_window_hours)
    collector = DatabaseCollector(service.engine, LEASE, window, settings().kto_pending_votes)
    serve_metrics(settings(), settings().scheduler_metrics_port, collector)
    service.start()
    console.print(f"scheduler {service.holder} started (checks every {settings().scheduler_interval_s:g} s)")
    stop.wait()
    service.stop()


def evaluate(
    version: str = typer.Option(..., "--version", help="A version name (v3) or `base`."),
    pairs: Path = typer.Option(..., "--pairs", exists=True, dir_okay=False, help="JSONL pairs (export format)."),
) -> None:
    """Print how a version does on a pairs file: preference accuracy and reward margin from log-probs, and what
    its greedy answers say (share with the chosen answer's key content, ROUGE-L, length), answered through vLLM
    when it runs the base model."""
    from training.gate import REPORTED
    from training.offline_eval import evaluate_on_file

    try:
        scores = evaluate_on_file(settings(), version, pairs)
    except (StorageError, ValueError) as exc:
        raise fail(str(exc)) from None
    names = {"reward_accuracy": "preference_accuracy"}  # the name a team reads in the dashboard
    lines = [f"version: {version}", f"pairs: {scores['pairs']}", f"key_content_pairs: {scores['key_content_pairs']}"]
    lines += [f"{names.get(key, key)}: {scores[key]:.4f}" for key in REPORTED if key in scores]
    lines.append(f"answered_by: {scores['answered_by']}")  # vLLM when it runs the base model, else transformers
    typer.echo("\n".join(lines))


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
    app.command("scheduler")(scheduler)
    app.command("eval")(evaluate)
