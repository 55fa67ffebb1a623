"""`flywheel bot`: the Slack bot, in Socket Mode or HTTP mode (setting FLYWHEEL_BOT_MODE)."""

from __future__ import annotations

import logging
import signal
import threading

import typer

from flywheel.cli.common import fail, settings
from flywheel.metrics_server import serve_metrics
from storage.db import DatabaseNotMigrated, get_engine, require_migrated


def bot() -> None:
    """Answer in Slack: Socket Mode with SLACK_APP_TOKEN, or HTTP on FLYWHEEL_BOT_PORT with SLACK_SIGNING_SECRET.
    Ctrl-C or SIGTERM (as `flywheel up` stops it) disconnects from Slack and ends it."""
    from slack_bolt.error import BoltError  # Bolt loads only for this command
    from slack_sdk.errors import SlackApiError

    from bot.app import MissingSlackCredentials, run

    config = settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        require_migrated(get_engine(config.database_url))
        serve_metrics(config, config.bot_metrics_port)
        run(config, stop)
    except (MissingSlackCredentials, DatabaseNotMigrated, BoltError) as exc:
        raise fail(str(exc)) from None
    except SlackApiError as exc:  # a refused app-level token, say
        raise fail(f"Slack refused {exc.response.api_url.rsplit('/', 1)[-1]}: {exc.response.get('error')}") from None


def register(app: typer.Typer) -> None:
    app.command("bot")(bot)
