"""How the operator commands print: a readable table on standard output, or `--json` for scripts
(valid JSON and nothing else on standard output). Messages and errors go to standard error."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table

from storage.models import TrainingRun

stdout = Console(highlight=False)
_ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")
JSON = typer.Option(False, "--json", help="Print JSON for scripts (nothing else on standard output).")
AS = typer.Option(..., "--as", metavar="USERNAME", help="The enabled account acting (recorded in the audit log).")


def emit(as_json: bool, data: Any, *renderables: RenderableType) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    for renderable in renderables:
        stdout.print(renderable)


def table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[Any]], *, header: bool = True) -> Table:
    """Cells are shown as text: user input such as "[x]" is printed as it is, not taken for markup."""
    result = Table(*columns, title=title, title_justify="left", show_header=header)
    for row in rows:
        result.add_row(*(escape(shown(cell)) for cell in row))
    return result


def fields(title: str, record: dict[str, Any]) -> Table:
    """One record as a two-column table of field and value."""
    return table(title, ("field", "value"), record.items())


def shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={shown(v)}" for k, v in value.items()) or "—"
    if isinstance(value, str) and _ISO_UTC.fullmatch(value):  # the records' timestamps, shortened
        return short_time(value)
    return str(value)


def short_time(iso_text: str) -> str:
    """"2026-12-01T23:24:35+00:00" -> "2026-12-01 23:24 UTC"."""
    return f"{iso_text[:10]} {iso_text[11:16]} UTC"


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def run_record(run: TrainingRun) -> dict[str, Any]:
    """A run as `runs list/show` and `status` give it."""
    return {
        "id": run.id, "kind": run.kind.value, "status": run.status.value, "current_step": run.current_step,
        "total_steps": run.total_steps, "triggered_by": run.triggered_by, "created_at": iso(run.created_at),
        "finished_at": iso(run.finished_at),
    }
