"""`/flywheel status | help`: answered in the ack itself (shown only to the person who asked)."""

from __future__ import annotations

from slack_bolt import Ack, App

from bot.blocks import HELP_TEXT
from bot.services import Services
from storage.db import session_scope
from storage.status import loop_state

COMMAND = "/flywheel"


def status_text(services: Services) -> str:
    with session_scope(services.engine) as session:
        state = loop_state(session)
        active, canary, run = state.active, state.canary, state.last_run
        model = f"`{active.name}`" if active else "the base model (no adapter promoted yet)"
        if canary:
            model += f", canary `{canary.name}` for {canary.canary_share:.0%} of users"
        if run is None:
            training = "none yet"
        else:
            step = f", step {run.current_step}/{run.total_steps}" if run.total_steps else ""
            training = f"#{run.id} {run.kind.value} {run.status.value}{step}, queued {run.created_at:%Y-%m-%d %H:%M} UTC"
    return (f"*Answering with:* {model}\n*Pairs waiting for review:* {state.pending_pairs}\n"
            f"*Last training run:* {training}")


def register(app: App, services: Services) -> None:
    @app.command(COMMAND)
    def flywheel(ack: Ack, command: dict) -> None:
        word = (command.get("text") or "").strip().lower()
        if word == "status":
            ack(text=status_text(services))
        elif word in ("", "help"):
            ack(text=HELP_TEXT)
        else:
            ack(text=f"I don't know `{word}`.\n{HELP_TEXT}")
