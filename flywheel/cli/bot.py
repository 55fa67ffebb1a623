"""`flywheel bot`: the Slack bot, in Socket Mode or HTTP mode (setting FLYWHEEL_BOT_MODE)."""

from __future__ import annotations

import logging
import signal
import threading

import typer

from flywheel.cli.common import fail, settings
from flywheel.metrics_server import serve_metrics
from storage.db import DatabaseNotMigrated, get_engine, require_migrated


def bot(
    share: int = typer.Option(None, hidden=True, help="K: answer share K of the channels (set by `flywheel bot`)."),
    shares: int = typer.Option(1, hidden=True, help="N: the processes answering the channels, a share each."),
    listen_fd: int = typer.Option(None, hidden=True, help="The listening socket the parent process shares."),
    role: str = typer.Option("both", hidden=True, help="both, receive or answer (set by `flywheel bot`)."),
) -> None:
    """Answer in Slack: Socket Mode with SLACK_APP_TOKEN, or HTTP on FLYWHEEL_BOT_PORT with SLACK_SIGNING_SECRET,
    in FLYWHEEL_BOT_PROCESSES processes. Ctrl-C or SIGTERM (as `flywheel up` stops it) disconnects from Slack
    and ends it."""
    from slack_bolt.error import BoltError  # Bolt loads only for this command
    from slack_sdk.errors import SlackApiError

    from bot.app import run
    from bot.processes import run_processes
    from bot.channel_shares import ChannelShare, ChannelsTaken, claim_channels
    from bot.slack_client import MissingSlackCredentials

    config = settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        require_migrated(get_engine(config.database_url))
        if share is not None or role != "both":  # one of several processes, started by the lines below
            run(config, stop, ChannelShare(share or 0, shares), listen_fd, role)
            return
        with claim_channels(config.home):  # a second bot of this home would answer every question twice
            if config.bot_process_count > 1 or config.bot_answer_processes:
                run_processes(config, config.bot_process_count, config.bot_answer_processes)
            else:  # one process: its own metrics (several: the parent serves them all)
                serve_metrics(config, config.bot_metrics_port)
                run(config, stop)
    except (MissingSlackCredentials, DatabaseNotMigrated, BoltError, ChannelsTaken) as exc:
        raise fail(str(exc)) from None
    except SlackApiError as exc:  # a refused app-level token, say
        raise fail(f"Slack refused {exc.response.api_url.rsplit('/', 1)[-1]}: {exc.response.get('error')}") from None


def register(app: typer.Typer) -> None:
    app.command("bot")(bot)
