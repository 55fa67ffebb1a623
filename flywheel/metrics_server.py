"""/metrics of each long-running process (Prometheus's text format) on settings.metrics_host and its own port."""

from __future__ import annotations

import logging
import threading
from http import HTTPStatus
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from flywheel.settings import Settings

log = logging.getLogger("flywheel.metrics")
PATH = "/metrics"


class MetricsRequestHandler(WSGIRequestHandler):
    # Errors get a status line even when the request line could not be read (the stdlib's HTTP/0.9 default omits it).
    default_request_version = "HTTP/1.0"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's name
        """A scrape every few seconds is not worth a log line."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The stdlib answers a request line claiming HTTP/2.0 with 505: to a scrape endpoint that is a bad request.
        super().send_error(code if code < 500 else HTTPStatus.BAD_REQUEST, message, explain)


def metrics_app(registry: CollectorRegistry = REGISTRY):
    """prometheus_client's exposition at /metrics only (GET; its own answers for other methods are 405)."""
    exposition = make_wsgi_app(registry)

    def app(environ, start_response):
        if environ.get("PATH_INFO") != PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"metrics are at {PATH}\n".encode()]
        return exposition(environ, start_response)

    return app


def serve_metrics(settings: Settings, port: int, *collectors: Collector,
                  registry: CollectorRegistry = REGISTRY) -> WSGIServer | None:
    """Register `collectors` and serve /metrics in a daemon thread. None when metrics are off, or when the
    port is taken: that is logged, and the process carries on with its real work."""
    if not settings.metrics_enabled:
        return None
    for collector in collectors:
        registry.register(collector)
    try:
        server = make_server(settings.metrics_host, port, metrics_app(registry), ThreadingWSGIServer,
                             handler_class=MetricsRequestHandler)
    except OSError as exc:
        log.warning("metrics not served: cannot listen on %s:%d (%s)", settings.metrics_host, port, exc)
        return None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics at http://%s:%d%s", settings.metrics_host, server.server_port, PATH)
    return server
