"""The Slack app: `build_app` makes the Bolt app with every listener registered; `run` serves it."""

from __future__ import annotations

import logging
import ssl
import threading

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.http_retry import default_retry_handlers
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler, ServerErrorRetryHandler

from bot import metrics
from bot.answering import answer_job, resume_waiting
from bot.listeners import register_listeners
from bot.services import Services
from flywheel.settings import Settings

log = logging.getLogger(__name__)
# Slack's 429s say how long to wait (Retry-After, honoured); its 5xx are retried with backoff. Generous
# counts: an answer that gives up on Slack is an answer the user never sees.
SLACK_RETRIES = 8


class MissingSlackCredentials(ValueError):
    """A token or secret the chosen mode needs is not set."""


def _secret(settings: Settings, name: str, why: str) -> str:
    value = getattr(settings, name)
    if value is None or not value.get_secret_value():
        raise MissingSlackCredentials(f"{name.upper()} is not set ({why})")
    return value.get_secret_value()


def slack_client(settings: Settings) -> WebClient:
    token = _secret(settings, "slack_bot_token", "the bot token, xoxb-...")
    retries = [*default_retry_handlers(), RateLimitErrorRetryHandler(max_retry_count=SLACK_RETRIES),
               ServerErrorRetryHandler(max_retry_count=SLACK_RETRIES),
               metrics.SlackApiObserver()]  # last: it sees how each call finally ended
    # One TLS context for every call: left to urllib, each HTTPS call to Slack builds one and loads the
    # system's certificates again (milliseconds of CPU per call, hundreds of calls in a burst).
    return WebClient(token=token, base_url=settings.slack_api_url, retry_handlers=retries,
                     ssl=ssl.create_default_context())


def build_app(settings: Settings, services: Services | None = None) -> App:
    """The Bolt app, its Web API client pointed at `settings.slack_api_url`, answering from its own queue.
    It checks the bot token with auth.test; in HTTP mode every request must carry a valid signature no
    older than 5 minutes."""
    client = slack_client(settings)
    signing_secret = ""
    if settings.bot_mode == "http":
        signing_secret = _secret(settings, "slack_signing_secret", "HTTP mode verifies requests with it")
    app = App(
        client=client,
        signing_secret=signing_secret,
        # Socket Mode requests arrive already authenticated; HTTP ones are verified.
        request_verification_enabled=settings.bot_mode == "http",
        # The listener runs before the response and acks when it returns: every listener only stores and
        # enqueues (milliseconds), so Slack's 3 s are never at risk and no thread pool stands in between.
        process_before_response=True,
    )
    services = services or Services.from_settings(settings)
    register_listeners(app, services)
    metrics.time_acks(app)
    services.acks.watch(app)
    services.start_answering(lambda job: answer_job(services, client, job))
    return app


def run(settings: Settings, stop: threading.Event) -> None:
    """Serve until `stop` is set: Socket Mode (app-level token) or HTTP on settings.bot_port. Then
    disconnect (Slack stops sending this process events) and let the answers being written finish;
    questions still waiting stay stored and are answered at the next start."""
    services = Services.from_settings(settings)
    app = build_app(settings, services)
    resume_waiting(services, app.client)
    if settings.bot_mode == "socket":
        # websocket-client's parser, not slack_sdk's built-in client: under a burst of envelopes the built-in
        # one misreads frames that arrive together ("unsupported data frame"), drops the connection and never
        # acks what it held (python-slack-sdk#1124; measured here with 300 envelopes back to back).
        from slack_bolt.adapter.socket_mode.websocket_client import SocketModeHandler

        app_token = _secret(settings, "slack_app_token", "Socket Mode connects with it, xapp-...")
        handler = SocketModeHandler(app, app_token, web_client=app.client, concurrency=settings.bot_listener_threads)
        handler.connect()
        log.info("connected to Slack in Socket Mode")
        stop.wait()
        handler.close()
    else:
        from bot.http_server import HttpServer

        server = HttpServer(app, settings.slack_signing_secret.get_secret_value(), "0.0.0.0", settings.bot_port,
                            threads=settings.bot_listener_threads)
        server.start()
        log.info("listening on port %d, path /slack/events", server.port)
        stop.wait()
        server.stop()
    services.close()
    log.info("stopped")
