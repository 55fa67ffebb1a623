"""HTTP mode: Bolt's WSGI adapter on a threaded server, at Slack's usual path /slack/events."""

from __future__ import annotations

from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler

EVENTS_PATH = "/slack/events"


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow client never holds up shutdown


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's name
        """Request lines go nowhere: Bolt logs what matters."""


def make_http_server(app: App, host: str, port: int) -> WSGIServer:
    """A server for `app`; call serve_forever() (port 0 picks a free port: see server.server_port)."""
    return make_server(
        host, port, SlackRequestHandler(app, path=EVENTS_PATH),
        server_class=ThreadingWSGIServer, handler_class=QuietHandler,
    )
