"""All listeners, registered on one app; one module per kind of Slack request."""

from __future__ import annotations

from slack_bolt import App

from bot.listeners import actions, commands, events, views
from bot.services import Services


def register_listeners(app: App, services: Services) -> None:
    for module in (events, actions, views, commands):
        module.register(app, services)
