"""/metrics of a Flywheel process: the real HTTP server, spoken to over raw sockets. Malformed requests
get a 4xx (never a 5xx or a traceback) and the server goes on serving; a taken port or metrics turned off
never stop the process; a database that does not answer is a gauge at 0, not a failed scrape."""

from __future__ import annotations

import logging
import re
import socket
from datetime import timedelta

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from flywheel.metrics_server import serve_metrics
from flywheel.settings import load_settings
from serving.testing import free_port
from storage.db import make_engine
from training.metrics import DatabaseCollector

MALFORMED = {
    "not HTTP at all": b"\x00\x01\x02 garbage\r\n\r\n",
    "a request line claiming HTTP/2.0": b"GET /metrics HTTP/2.0\r\n\r\n",
    "an unreadable version": b"GET /metrics HTTP/x.y\r\n\r\n",
    "a POST": b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    "an unknown method": b"BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    "a URL of 70,000 characters": b"GET /metrics?" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "a header of 70,000 characters": b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    "200 headers": b"GET /metrics HTTP/1.1\r\n" + b"X-Many: a\r\n" * 200 + b"\r\n",
    "a negative Content-Length": b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    "another path": b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n",
}


def status_of(port: int, request: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", reply)
    assert match, f"no status line in {reply[:200]!r}"
    return int(match.group(1))


@pytest.fixture
def metrics_settings(tmp_path):
    return load_settings(home=tmp_path / "home")


def test_malformed_requests_get_4xx_and_the_server_keeps_serving(metrics_settings):
    registry = CollectorRegistry()
    Counter("flywheel_test_events_total", "Events of this test.", registry=registry).inc(3)
    server = serve_metrics(metrics_settings, free_port(), registry=registry)
    try:
        port = server.server_port
        statuses = {what: status_of(port, request) for what, request in MALFORMED.items()}
        assert all(400 <= code < 500 for code in statuses.values()), statuses
        assert statuses["another path"] == 404 and statuses["a POST"] == 405
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        assert "flywheel_test_events_total 3.0" in response.text
        openmetrics = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Accept": "application/openmetrics-text"})
        assert openmetrics.status_code == 200 and openmetrics.text.rstrip().endswith("# EOF")
    finally:
        server.shutdown()
        server.server_close()


def test_a_taken_port_or_metrics_turned_off_do_not_stop_the_process(metrics_settings, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with caplog.at_level(logging.WARNING, logger="flywheel.metrics"):
            assert serve_metrics(metrics_settings, taken.getsockname()[1], registry=CollectorRegistry()) is None
    assert "metrics not served: cannot listen on 127.0.0.1" in caplog.text
    off = metrics_settings.model_copy(update={"metrics_enabled": False})
    assert serve_metrics(off, free_port(), registry=CollectorRegistry()) is None


def test_an_unreachable_database_is_a_gauge_at_0_not_a_failed_scrape(metrics_settings):
    engine = make_engine(f"postgresql+psycopg://flywheel@127.0.0.1:{free_port()}/gone")  # nobody listens there
    registry = CollectorRegistry()
    server = serve_metrics(metrics_settings, free_port(), DatabaseCollector(engine, "scheduler", timedelta(hours=1)),
                           registry=registry)
    try:
        response = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=30)
    finally:
        server.shutdown()
        server.server_close()
        engine.dispose()
    assert response.status_code == 200
    assert "flywheel_database_up 0.0" in response.text and "flywheel_pairs" not in response.text
