"""`flywheel up`: the whole system on one machine, supervised."""

from __future__ import annotations

import typer

from flywheel.cli.common import console, settings
from flywheel.supervisor import Child, Supervisor, flywheel_argv
from storage import db


def planned_children(config) -> list[Child]:
    logs = config.logs_dir
    children = [
        Child("model server", flywheel_argv("serve"), f"OpenAI API at {config.vllm_url}/v1", logs / "serve.log"),
        Child("scheduler", flywheel_argv("scheduler"), "", logs / "scheduler.log"),
        Child(
            "dashboard", flywheel_argv("dashboard"),
            f"http://{config.dashboard_host}:{config.dashboard_port}", logs / "dashboard.log",
        ),
    ]
    has_slack = config.slack_bot_token and (
        config.slack_app_token if config.bot_mode == "socket" else config.slack_signing_secret
    )
    if has_slack:
        where = "Socket Mode" if config.bot_mode == "socket" else f"HTTP on port {config.bot_port}, path /slack/events"
        children.append(Child("slack bot", flywheel_argv("bot"), where, logs / "bot.log"))
    return children


def up() -> None:
    """Start the model server, scheduler, dashboard and (with Slack tokens) the bot; Ctrl-C stops all."""
    config = settings()
    db.upgrade(config.database_url)
    children = planned_children(config)
    if not any(child.name == "slack bot" for child in children):
        console.print(
            "no Slack tokens set (SLACK_BOT_TOKEN + SLACK_APP_TOKEN or SLACK_SIGNING_SECRET): the bot is not "
            "started; chat in the dashboard's Playground instead."
        )
    console.print(f"logs in {config.logs_dir}/ ; Ctrl-C stops everything")
    Supervisor(children, report=console.print).run()


def register(app: typer.Typer) -> None:
    app.command("up")(up)
