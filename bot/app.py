"""The Slack app: `build_app` makes the Bolt app with every listener registered; `run` serves it."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Literal

from slack_bolt import App, BoltContext
from slack_sdk import WebClient

from bot import metrics
from bot.answering import answer_job
from bot.channel_shares import ChannelShare
from bot.listeners import register_listeners
from bot.question_feed import QuestionFeed
from bot.services import Services
from bot.slack_client import secret, slack_client
from flywheel.settings import Settings
from serving.client import model_client

log = logging.getLogger(__name__)
# What one bot process does: both (receive, store and ack Slack's requests, and answer its share of the
# channels), or one of the two when the bot runs receive and answer processes apart (bot/processes.py).
Role = Literal["both", "receive", "answer"]


def build_app(settings: Settings, services: Services | None = None,
              share: ChannelShare | None = ChannelShare()) -> App:
    """The Bolt app, its Web API client pointed at `settings.slack_api_url`, answering the questions of its
    `share` of the channels from its own queue (None: it only stores and acks; answer processes answer).
    It checks the bot token with auth.test; in HTTP mode every request must carry a valid signature no
    older than 5 minutes."""
    client = slack_client(settings)
    signing_secret = ""
    if settings.bot_mode == "http":
        signing_secret = secret(settings, "slack_signing_secret", "HTTP mode verifies requests with it")
    app = App(
        client=client,
        signing_secret=signing_secret,
        # Socket Mode requests arrive already authenticated; HTTP ones are verified.
        request_verification_enabled=settings.bot_mode == "http",
        # The listener runs before the response and acks when it returns: every listener only stores and
        # enqueues (milliseconds), so Slack's 3 s are never at risk and no thread pool stands in between.
        process_before_response=True,
    )
    services = services or Services.from_settings(settings, share.count if share else 1)
    app.middleware(_pooled_client(client))
    register_listeners(app, services)
    metrics.time_acks(app)
    services.acks.watch(app)
    if share is not None:
        start_answering(settings, services, client, share)
    return app


def start_answering(settings: Settings, services: Services, client: WebClient, share: ChannelShare) -> None:
    """Answer the waiting questions of `share`: this process's answer queue, fed from the database."""
    model_client(settings)  # built now, not by the first answers of a burst
    services.start_answering(lambda job: answer_job(services, client, job))
    services.feed = QuestionFeed(services, client, share)
    services.feed.start()


def _pooled_client(client: WebClient):
    """Listeners get the app's pooled client, not the plain one Bolt makes for each request (its token is the
    app's: nothing a listener does changes the client)."""

    def use_pooled_client(context: BoltContext, next) -> None:  # noqa: A002 - Bolt's name for it
        context["client"] = client
        next()

    return use_pooled_client


def run(settings: Settings, stop: threading.Event, share: ChannelShare = ChannelShare(),
        listen_fd: int | None = None, role: Role = "both") -> None:
    """Until `stop` is set: receive Slack's requests (unless `role` is "answer") in Socket Mode (app-level
    token; a connection of its own) or HTTP on settings.bot_port (or on the socket `listen_fd` the bot's
    parent process shares), and answer the questions of `share` (unless `role` is "receive": then only
    `share.count`, the number of answering processes, matters). Then disconnect (Slack stops sending this
    process events) and let the answers being written finish; questions still waiting stay stored and are
    answered at the next start."""
    services = Services.from_settings(settings, share.count)
    if role == "answer":
        start_answering(settings, services, slack_client(settings), share)
        log.info("answering the questions of channel share %d/%d", share.index, share.count)
        stop.wait()
    else:
        _receive(settings, stop, build_app(settings, services, share if role == "both" else None), listen_fd)
    services.close()
    log.info("stopped")


def _receive(settings: Settings, stop: threading.Event, app: App, listen_fd: int | None) -> None:
    if settings.bot_mode == "socket":
        # websocket-client's parser, not slack_sdk's built-in client: under a burst of envelopes the built-in
        # one misreads frames that arrive together ("unsupported data frame"), drops the connection and never
        # acks what it held (python-slack-sdk#1124; measured here with 300 envelopes back to back).
        from slack_bolt.adapter.socket_mode.websocket_client import SocketModeHandler

        app_token = secret(settings, "slack_app_token", "Socket Mode connects with it, xapp-...")
        handler = SocketModeHandler(app, app_token, web_client=app.client, concurrency=settings.bot_listener_threads)
        handler.connect()
        log.info("connected to Slack in Socket Mode")
        stop.wait()
        handler.close()
    else:
        from bot.http_server import HttpServer, listening_socket

        sock = socket.socket(fileno=listen_fd) if listen_fd is not None else listening_socket("0.0.0.0", settings.bot_port)
        server = HttpServer(app, settings.slack_signing_secret.get_secret_value(), sock,
                            threads=settings.bot_listener_threads)
        server.start()
        log.info("listening on port %d, path /slack/events", server.port)
        stop.wait()
        server.stop()
