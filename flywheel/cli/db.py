"""`flywheel db`: apply and inspect schema migrations."""

from __future__ import annotations

import typer

from flywheel.cli.common import console, database_errors, settings
from storage import db

db_app = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)


def _migrate(step, revision: str) -> None:
    url = settings().database_url
    with database_errors(url):
        step(url, revision)
        console.print(f"database at revision {db.current_revision(db.get_engine(url)) or 'none (empty)'}")


@db_app.command("upgrade")
def upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    _migrate(db.upgrade, revision)


@db_app.command("downgrade")
def downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. base.")) -> None:
    """Revert migrations down to REVISION."""
    _migrate(db.downgrade, revision)


@db_app.command("current")
def current() -> None:
    """Print the database's revision and the code's."""
    url = settings().database_url
    with database_errors(url):
        typer.echo(f"database: {db.current_revision(db.get_engine(url)) or 'none'}  code: {db.head_revision()}")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
