"""`flywheel init`: migrate the database, prepare the base model, create the first admin."""

from __future__ import annotations

import typer

from flywheel.cli.common import console, database_errors, fail, settings
from serving.base_model import ModelPrepareError, ensure_base_model
from storage import db
from storage.models import Role
from storage.users import create_user, list_users


def init(skip_model: bool = typer.Option(False, help="Do not prepare the base model.")) -> None:
    """Migrate the database, prepare the base model and create the first admin account."""
    config = settings()
    with database_errors(config.database_url):
        db.upgrade(config.database_url)
    console.print("database migrated")
    if not skip_model:
        try:
            ensure_base_model(config, progress=console.print)
        except ModelPrepareError as exc:
            raise fail(str(exc)) from None
    engine = db.get_engine(config.database_url)
    with db.session_scope(engine) as session:
        if list_users(session):
            console.print("accounts exist already; no admin created")
            return
    # Asked outside any transaction: a write transaction held while someone types would block the others.
    password = config.admin_password.get_secret_value() if config.admin_password else None
    if password is None:
        password = typer.prompt(f"password for the admin account {config.admin_username!r}", hide_input=True,
                                confirmation_prompt=True)
    with database_errors(config.database_url), db.session_scope(engine) as session:
        create_user(session, config.admin_username, password, Role.admin)
    console.print(f"admin account {config.admin_username!r} created")


def register(app: typer.Typer) -> None:
    app.command("init")(init)
