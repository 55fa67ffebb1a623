"""`flywheel db`: apply and inspect schema migrations."""

from __future__ import annotations

import typer

from flywheel.cli.common import console, settings
from storage import db

db_app = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)


@db_app.command("upgrade")
def upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    db.upgrade(settings().database_url, revision)
    console.print(f"database at revision {db.current_revision(db.get_engine(settings().database_url))}")


@db_app.command("downgrade")
def downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. base.")) -> None:
    """Revert migrations down to REVISION."""
    db.downgrade(settings().database_url, revision)
    console.print(f"database at revision {db.current_revision(db.get_engine(settings().database_url))}")


@db_app.command("current")
def current() -> None:
    """Print the database's revision and the code's."""
    engine = db.get_engine(settings().database_url)
    typer.echo(f"database: {db.current_revision(engine) or 'none'}  code: {db.head_revision()}")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
