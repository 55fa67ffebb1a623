"""`flywheel pairs`: move preference pairs in and out as JSONL (TRL's conversational format)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from flywheel.cli.common import console, db_session
from storage.models import PairStatus
from storage.pairs import export_jsonl, import_jsonl
from storage.users import SYSTEM

pairs_app = typer.Typer(help="Preference pairs as JSONL.", no_args_is_help=True)


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


def register(app: typer.Typer) -> None:
    app.add_typer(pairs_app, name="pairs")
