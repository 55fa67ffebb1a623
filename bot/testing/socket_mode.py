"""Slack's side of Socket Mode, locally (for the tests and the load benchmark): a websocket server that greets the app with `hello`, sends it
envelopes (events, interactions) and records what it sends back (acks).

The app finds it the way it finds Slack's: apps.connections.open on the Web API stand-in
(`SlackStub(..., socket_url=server.url)`) answers with its ws:// URL. Built like the mock Socket Mode
server in slack_sdk's own tests, on the `websockets` package's threaded server.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

from bot.testing.slack_api import APP_ID
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

HELLO = {
    "type": "hello", "num_connections": 1, "connection_info": {"app_id": APP_ID},
    "debug_info": {"host": "applink-flywheel-test", "build_number": 1, "approximate_connection_time": 18060},
}


class SocketModeStub:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []  # what the app sent, in order
        self.acked_at: dict[str, float] = {}  # envelope id -> time.time() its ack arrived
        self.connected, self.disconnected = threading.Event(), threading.Event()
        self._lock = threading.Lock()
        self._connections: list[ServerConnection] = []  # the app's open connections (one per bot process)
        self._sent = 0
        self._server = serve(self._session, "127.0.0.1", 0)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        port = self._server.socket.getsockname()[1]
        return f"ws://127.0.0.1:{port}/link/?ticket=flywheel-test-ticket&app_id={APP_ID}"

    def __enter__(self) -> "SocketModeStub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()

    def _session(self, connection: ServerConnection) -> None:
        """One app connection: hello first, as Slack does; then every frame the app sends is recorded."""
        connection.send(json.dumps(HELLO))
        with self._lock:
            self._connections.append(connection)
        self.connected.set()
        try:
            for frame in connection:
                message = json.loads(frame)
                with self._lock:
                    self.received.append(message)
                    if "envelope_id" in message:
                        self.acked_at.setdefault(message["envelope_id"], time.time())
        except ConnectionClosed:
            pass  # slack_sdk's built-in client closes its socket without a closing handshake
        with self._lock:
            self._connections.remove(connection)
        self.disconnected.set()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def send(self, kind: str, payload: dict[str, Any]) -> str:
        """Deliver `payload` in an envelope of `kind` (events_api, interactive, slash_commands); returns its id.
        With several connections open, envelopes take turns over them, as Slack spreads them."""
        envelope_id = str(uuid.uuid4())
        envelope = {"envelope_id": envelope_id, "payload": payload, "type": kind, "accepts_response_payload": False}
        if kind == "events_api":
            envelope.update(retry_attempt=0, retry_reason="")
        with self._lock:
            connection = self._connections[self._sent % len(self._connections)]
            self._sent += 1
        connection.send(json.dumps(envelope))
        return envelope_id

    def wait_for_ack(self, envelope_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                acks = [m for m in self.received if m.get("envelope_id") == envelope_id]
            if acks:
                return acks[0]
            time.sleep(0.05)
        raise AssertionError(f"no ack for envelope {envelope_id}; received {self.received}")
