"""The real Bolt app served over HTTP in this process (`RunningBot`), and Slack's side of the conversation
(the Web API stand-in and the payload builders, from bot/testing/slack_api.py)."""

from __future__ import annotations

import json
from typing import Any

from bot.testing.slack_api import (  # noqa: F401 - what the tests import from here
    APP_ID,
    BOT_ID,
    BOT_USER_ID,
    TEAM_ID,
    SlackStub,
    app_mention,
    block_actions,
    direct_message,
    event_callback,
    signed_headers,
    slash_command,
    view_submission,
)


class RunningBot:
    """The real Bolt app (`bot.app.build_app`) served over HTTP on a free local port, as in HTTP mode."""

    def __init__(self, settings):
        from bot.app import build_app
        from bot.http_server import HttpServer, listening_socket
        from bot.services import Services

        self.settings = settings
        self.secret = settings.slack_signing_secret.get_secret_value()
        self.services = Services.from_settings(settings)
        self.app = build_app(settings, self.services)
        self._server = HttpServer(self.app, self.secret, listening_socket("127.0.0.1", 0),
                                  threads=settings.bot_listener_threads)
        self.url = f"http://127.0.0.1:{self._server.port}/slack/events"

    def __enter__(self) -> "RunningBot":
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop()
        self.services.close()

    def post(self, body: str, content_type: str, *, headers: dict[str, str] | None = None, **signing):
        import httpx

        all_headers = {**signed_headers(self.secret, body, content_type, **signing), **(headers or {})}
        return httpx.post(self.url, content=body.encode(), headers=all_headers, timeout=30)

    def send_event(self, payload: dict[str, Any], **kwargs):
        return self.post(json.dumps(payload), "application/json", **kwargs)

    def send_interaction(self, payload: dict[str, Any], **kwargs):
        from urllib.parse import urlencode

        return self.post(urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded", **kwargs)

    def send_command(self, fields: dict[str, str], **kwargs):
        from urllib.parse import urlencode

        return self.post(urlencode(fields), "application/x-www-form-urlencoded", **kwargs)
