"""`flywheel demo`: one turn of the loop on a fresh demo database, shown with progress and tables."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flywheel.cli.common import console, fail, settings
from serving.errors import ServingError
from storage.errors import StorageError
from training.gate import REPORTED

HELP = """Run one turn of the loop on a fresh demo database (HOME/demo unless --home): your data is untouched.

A chat-ops team asks the real model 30 questions and gives feedback (votes, the exact command as a better answer); a reviewer approves the pairs; one DPO run (18 steps) trains in its own process; the candidate is promoted and vLLM serves it without a restart; 6 held-out questions, never trained on, are answered before and after.

It borrows the vLLM at FLYWHEEL_VLLM_URL if that one serves no adapters, else starts its own and stops it at the end. Measured on 2 CPU cores (AMD EPYC): 2 min 47 s on an otherwise quiet machine (2026-12-04; an earlier version of the demo took 4 min 22 s there, and 7 min 10 s while a training test ran beside it). On an H200 with an 8B-class model (--base-model, QLoRA): 2 min (vLLM start 74 s, asking 2 s, training run 43 s).
"""


def progress_reporter(progress: Progress):
    tasks: dict[str, int] = {}

    def report(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total or None)
        progress.update(tasks[stage], completed=done, total=total or None)

    return report


def before_after_table(result) -> Table:
    table = Table(title="Held-out questions (never asked before training)", show_lines=True)
    for column in ("question", "before (base)", f"after ({result.version or 'base'})"):
        table.add_column(column, overflow="fold")
    for item, before, after in zip(result.held_out, result.before, result.after):
        mark = lambda a: ("[green]✓ command[/green]\n" if item.answered_by(a.text) else "") + escape(a.text)  # noqa: E731
        table.add_row(escape(item.question), mark(before), mark(after))
    return table


def metrics_table(result) -> Table:
    metrics = result.metrics
    incumbent = metrics.get("incumbent", {})
    table = Table(title=f"Run {result.run_id}: held-out pairs ({metrics.get('pairs', '?')})")
    table.add_column("metric")
    table.add_column("candidate", justify="right")
    table.add_column(str(metrics.get("compared_with", "incumbent")), justify="right")
    for name in REPORTED:
        if name in metrics:
            table.add_row(name, f"{metrics[name]:.3f}", f"{incumbent.get(name, float('nan')):.3f}")
    commands = lambda answers: sum(i.answered_by(a.text) for i, a in zip(result.held_out, answers))  # noqa: E731
    table.add_row("held-out answers giving the exact command", str(commands(result.after)), str(commands(result.before)))
    length = lambda answers: f"{sum(len(a.text) for a in answers) / max(len(answers), 1):.0f}"  # noqa: E731
    table.add_row("held-out answers: mean length (characters)", length(result.after), length(result.before))
    return table


def summary(result) -> str:
    f = result.feedback
    timings = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.timings.items())
    served = f"[green]{result.version} promoted and served[/green]" if result.version else (
        f"[yellow]not registered: {escape(result.not_registered_reason or '')}[/yellow]")
    return (f"{f.asked} questions, {f.up} thumbs up, {f.down} thumbs down, {f.better} better answers -> "
            f"{f.pairs} pairs, {result.approved} approved; run {result.run_id} {result.run_status} "
            f"({result.metrics.get('steps', '?')} steps); {served}\n{escape(result.metrics.get('gate', ''))}\n"
            f"time: {timings}")


def demo(
    home: Optional[Path] = typer.Option(None, help="The demo's own folder (wiped each time); default HOME/demo."),
    base_model: Optional[Path] = typer.Option(
        None, "--base-model", help="A local Hugging Face model folder to turn the loop with (default: "
        "FLYWHEEL_BASE_MODEL_PATH, else the bundled model)."),
) -> None:
    from training.demo import run_demo

    config = settings()
    if base_model is not None:
        config = config.model_copy(update={"base_model_path": base_model})
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console) as progress:
            note = lambda message: progress.console.print(escape(message), highlight=False)  # noqa: E731
            result = run_demo(config, home or config.home / "demo", progress_reporter(progress), note)
    except (StorageError, ServingError, RuntimeError, TimeoutError) as exc:
        raise fail(str(exc)) from None
    console.print(before_after_table(result))
    console.print(metrics_table(result))
    console.print(summary(result))


def register(app: typer.Typer) -> None:
    app.command("demo", help=HELP)(demo)
