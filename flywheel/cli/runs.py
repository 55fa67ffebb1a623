"""`flywheel runs list | show ID | cancel ID`: training runs, over storage/runs.py."""

from __future__ import annotations

import typer
from rich.markup import escape

from flywheel.cli.common import acting_as, console, db_session
from flywheel.cli.output import AS, JSON, emit, fields, run_record, table
from storage.runs import get_run, list_runs, request_cancel, run_metrics

runs_app = typer.Typer(help="Training runs: list, inspect, cancel.", no_args_is_help=True)


def progress(record: dict) -> str:
    return f"{record['current_step']}/{record['total_steps'] or '?'}"


@runs_app.command("list")
def list_(limit: int = typer.Option(20, min=1, help="How many runs, newest first."), as_json: bool = JSON) -> None:
    """The latest runs with their status and progress."""
    with db_session() as session:
        records = [run_record(run) for run in list_runs(session, limit=limit)]
    columns = ("run", "kind", "status", "progress", "triggered by", "created", "finished")
    rows = [(r["id"], r["kind"], r["status"], progress(r), r["triggered_by"], r["created_at"], r["finished_at"])
            for r in records]
    emit(as_json, records, table("Training runs", columns, rows))


@runs_app.command("show")
def show(run_id: int = typer.Argument(..., help="A run's id."), as_json: bool = JSON) -> None:
    """One run: status, progress, snapshot, evaluation, error, the last logged step and its log file."""
    with db_session() as session:
        run = get_run(session, run_id)
        steps = run_metrics(session, run_id)
    record = {**run_record(run), "snapshot": run.snapshot_id, "cancel_requested": run.cancel_requested,
              "error": run.error, "not_registered_reason": run.not_registered_reason, "log_path": run.log_path,
              "eval_metrics": run.eval_metrics, "last_step": steps[-1].values if steps else None}
    shown = {k: v for k, v in record.items() if k not in ("eval_metrics", "last_step")}
    emit(as_json, record, fields(f"Run {run.id}", shown),
         table("Evaluation", ("metric", "value"), run.eval_metrics.items()),
         table(f"Step {steps[-1].step}" if steps else "No step logged yet", ("metric", "value"),
               steps[-1].values.items() if steps else ()))


@runs_app.command("cancel")
def cancel(run_id: int = typer.Argument(..., help="A queued or running run's id."), as_user: str = AS,
           as_json: bool = JSON) -> None:
    """Cancel a queued run now, or ask a running one to stop at its next step (admins only)."""
    with db_session() as session:
        run = request_cancel(session, run_id, acting_as(session, as_user))
        record = run_record(run) | {"cancel_requested": run.cancel_requested}
    verb = "cancelled" if run.status.value == "cancelled" else "asked to stop at its next step"
    console.print(escape(f"run {run_id} {verb}"), highlight=False)
    emit(as_json, record)


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")
