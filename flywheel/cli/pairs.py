"""`flywheel pairs`: move preference pairs in and out as JSONL (TRL's conversational format); count them."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import typer
from rich.table import Table

from flywheel.cli.common import console, db_session
from flywheel.cli.output import JSON, emit, table
from storage.models import PairStatus, utcnow
from storage.pairs import export_jsonl, import_jsonl
from storage.stats import pair_counts
from storage.users import SYSTEM

pairs_app = typer.Typer(help="Preference pairs: JSONL export and import, counts.", no_args_is_help=True)


@pairs_app.command("export")
def export(
    output: Path = typer.Option(None, "--output", "-o", help="File to write; standard output if omitted."),
    status: PairStatus = typer.Option(PairStatus.approved, help="Which pairs to export."),
) -> None:
    """Write pairs as JSONL, one object per line: prompt (chat messages), chosen, rejected."""
    with db_session() as session:
        handle = output.open("w", encoding="utf-8") if output else sys.stdout
        count = 0
        for line in export_jsonl(session, status):
            handle.write(line + "\n")
            count += 1
        if output:
            handle.close()
    console.print(f"exported {count} {status.value} pair(s)")


@pairs_app.command("import")
def import_(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL file in TRL's preference format."),
    approve: bool = typer.Option(False, help="Mark imported pairs approved (they are pending otherwise)."),
) -> None:
    """Read pairs from JSONL. Any bad line is reported with its number and nothing is imported."""
    with db_session() as session, path.open(encoding="utf-8") as handle:
        result = import_jsonl(session, handle, SYSTEM, approve=approve)
    console.print(f"imported {result.created} pair(s), {result.duplicates} duplicate(s) skipped")


@pairs_app.command("stats")
def stats(days: int = typer.Option(14, min=1, help="Days shown per day (the totals count every pair)."),
          as_json: bool = JSON) -> None:
    """Pairs by status and source: in total, and per day of creation over the last DAYS days."""
    with db_session() as session:
        totals = pair_counts(session)
        daily = pair_counts(session, since=utcnow() - timedelta(days=days), per_day=True)
    emit(as_json, {"totals": totals, "daily": daily},
         count_table("Pairs by source and status (all)", totals, ("source",)),
         count_table(f"Pairs created per day (last {days} days; their status now)", daily, ("day", "source")))


def count_table(title: str, rows: list[dict], by: tuple[str, ...]) -> Table:
    """One row per value of the `by` fields, one column per status, and a total."""
    counts: dict[tuple, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(tuple(row[field] for field in by), {})[row["status"]] = row["count"]
    statuses = [status.value for status in PairStatus]
    return table(title, (*by, *statuses, "total"),
                 [(*key, *(c.get(s, 0) for s in statuses), sum(c.values())) for key, c in counts.items()])


def register(app: typer.Typer) -> None:
    app.add_typer(pairs_app, name="pairs")
