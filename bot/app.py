"""The Slack app: `build_app` makes the Bolt app with every listener registered; `run` serves it."""

from __future__ import annotations

import logging
import threading

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.http_retry import default_retry_handlers
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot import metrics
from bot.listeners import register_listeners
from bot.services import Services
from flywheel.settings import Settings

log = logging.getLogger(__name__)


class MissingSlackCredentials(ValueError):
    """A token or secret the chosen mode needs is not set."""


def _secret(settings: Settings, name: str, why: str) -> str:
    value = getattr(settings, name)
    if value is None or not value.get_secret_value():
        raise MissingSlackCredentials(f"{name.upper()} is not set ({why})")
    return value.get_secret_value()


def build_app(settings: Settings, services: Services | None = None) -> App:
    """The Bolt app, its Web API client pointed at `settings.slack_api_url`. It checks the bot token
    with auth.test; in HTTP mode every request must carry a valid signature no older than 5 minutes."""
    token = _secret(settings, "slack_bot_token", "the bot token, xoxb-...")
    signing_secret = ""
    if settings.bot_mode == "http":
        signing_secret = _secret(settings, "slack_signing_secret", "HTTP mode verifies requests with it")
    # A streamed answer makes many calls: one refused with 429 waits Retry-After and goes again.
    retries = [*default_retry_handlers(), RateLimitErrorRetryHandler(max_retry_count=2), metrics.SlackApiObserver()]
    app = App(
        client=WebClient(token=token, base_url=settings.slack_api_url, retry_handlers=retries),
        signing_secret=signing_secret,
        # Socket Mode requests arrive already authenticated; HTTP ones are verified.
        request_verification_enabled=settings.bot_mode == "http",
        process_before_response=False,  # ack first, work after: Slack's 3 s limit
    )
    register_listeners(app, services or Services.from_settings(settings))
    metrics.time_acks(app)
    return app


def run(settings: Settings, stop: threading.Event) -> None:
    """Serve until `stop` is set: Socket Mode (app-level token) or HTTP on settings.bot_port. Then
    disconnect (Slack stops sending this process events); answers already being written still finish."""
    app = build_app(settings)
    if settings.bot_mode == "socket":
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        app_token = _secret(settings, "slack_app_token", "Socket Mode connects with it, xapp-...")
        handler = SocketModeHandler(app, app_token, web_client=app.client)
        handler.connect()
        log.info("connected to Slack in Socket Mode")
        stop.wait()
        handler.close()
    else:
        from bot.http_server import make_http_server

        server = make_http_server(app, "0.0.0.0", settings.bot_port)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        log.info("listening on port %d, path /slack/events", settings.bot_port)
        stop.wait()
        server.shutdown()
        server.server_close()
    log.info("stopped")
