"""`flywheel bot`: the Slack bot, in Socket Mode or HTTP mode (setting FLYWHEEL_BOT_MODE)."""

from __future__ import annotations

import logging

import typer

from flywheel.cli.common import fail, settings
from storage.db import DatabaseNotMigrated, get_engine, require_migrated


def bot() -> None:
    """Answer in Slack: Socket Mode with SLACK_APP_TOKEN, or HTTP on FLYWHEEL_BOT_PORT with SLACK_SIGNING_SECRET."""
    from slack_bolt.error import BoltError  # Bolt loads only for this command

    from bot.app import MissingSlackCredentials, run

    config = settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        require_migrated(get_engine(config.database_url))
        run(config)
    except (MissingSlackCredentials, DatabaseNotMigrated, BoltError) as exc:
        raise fail(str(exc)) from None


def register(app: typer.Typer) -> None:
    app.command("bot")(bot)
