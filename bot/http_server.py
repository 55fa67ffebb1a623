"""HTTP mode: Slack's requests on uvicorn (an asyncio server built for production traffic), at /slack/events.

Before Bolt sees a request, this layer refuses what is not a Slack request: another path or method
(404/405), a content type Slack never sends (415), a body over MAX_BODY_BYTES (413), a missing, stale or
wrong signature (401) — so nothing unsigned is parsed, let alone stored — and a body that does not parse
as a Slack payload (400). Bolt's listeners are synchronous and short (store, enqueue, ack) and run on a
thread pool; the listen backlog holds a burst of connections instead of resetting them. GET /healthz
answers 200 for load balancers.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import uvicorn
from slack_bolt import App, BoltRequest, BoltResponse
from slack_sdk.signature import SignatureVerifier

log = logging.getLogger(__name__)
EVENTS_PATH, HEALTH_PATH = "/slack/events", "/healthz"
MAX_BODY_BYTES = 1 << 20  # Slack's payloads are a few kB; a long modal submission some 100 kB
LISTEN_BACKLOG = 2048  # connections the kernel holds while they wait to be accepted (a burst)
CONTENT_TYPES = ("application/json", "application/x-www-form-urlencoded")
Reply = tuple[int, dict[str, list[str]], str]


def _text(status: int, text: str) -> Reply:
    return status, {"content-type": ["text/plain; charset=utf-8"]}, text


class SlackEndpoint:
    """The ASGI application: the checks above, then Bolt on a thread pool."""

    def __init__(self, app: App, signing_secret: str, threads: int):
        self._app = app
        self._verifier = SignatureVerifier(signing_secret)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="bolt")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        status, headers, body = await self._reply(scope, receive)
        raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, values in headers.items() for v in values]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body.encode()})

    async def _reply(self, scope, receive) -> Reply:
        path, method = scope["path"], scope["method"]
        if path == HEALTH_PATH:
            return _text(200, "ok") if method in ("GET", "HEAD") else _text(405, "method not allowed")
        if path != EVENTS_PATH:
            return _text(404, "not found")
        if method != "POST":
            return _text(405, "method not allowed")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if headers.get("content-type", "").split(";")[0].strip().lower() not in CONTENT_TYPES:
            return _text(415, "unsupported content type")
        body = await _read_body(receive, MAX_BODY_BYTES)
        if body is None:
            return _text(413, "request body too large")
        if not self._signed(body, headers):
            return _text(401, "invalid signature")
        request = _bolt_request(body, headers, scope.get("query_string", b""))
        if request is None:
            return _text(400, "malformed request")
        response = await asyncio.get_running_loop().run_in_executor(self._pool, self._dispatch, request)
        return response.status, response.headers, response.body

    def _signed(self, body: bytes, headers: dict[str, str]) -> bool:
        try:
            return self._verifier.is_valid(
                body=body, timestamp=headers.get("x-slack-request-timestamp", ""),
                signature=headers.get("x-slack-signature", ""),
            )
        except ValueError:  # a timestamp that is not a number
            return False

    def _dispatch(self, request: BoltRequest) -> BoltResponse:
        try:
            return self._app.dispatch(request)
        except Exception as exc:  # Bolt itself choked on a payload shape it did not expect
            log.warning("refused a malformed Slack request: %s: %s", type(exc).__name__, exc)
            return BoltResponse(status=400, body="malformed request")

    def close(self) -> None:
        self._pool.shutdown(wait=True)


async def _read_body(receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes `limit` (the rest is never buffered)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _bolt_request(body: bytes, headers: dict[str, str], query: bytes) -> BoltRequest | None:
    """Bolt's request, or None when the body is not a Slack payload (not JSON, not a non-empty object)."""
    try:
        request = BoltRequest(body=body.decode("utf-8"), query=query.decode("latin-1"), headers=headers)
    except Exception:  # noqa: BLE001 - Bolt reads the payload as it builds the request; any shape may break it
        return None
    payload = request.body
    return request if isinstance(payload, dict) and payload else None


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound socket (port 0 picks a free one); each server process listens on it with LISTEN_BACKLOG."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class HttpServer:
    """uvicorn in a thread of this process, on `sock`: bound here (`listening_socket`), or inherited from the
    bot's parent process, which gives every bot process the same socket (one accept queue: a process that
    crashes leaves its waiting connections to the others)."""

    def __init__(self, app: App, signing_secret: str, sock: socket.socket, *, threads: int):
        self._endpoint = SlackEndpoint(app, signing_secret, threads)
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._endpoint, backlog=LISTEN_BACKLOG, lifespan="off", access_log=False,
                                log_level="warning", timeout_graceful_shutdown=10)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="http-server", daemon=True)

    def start(self, timeout_s: float = 30.0) -> None:
        self._thread.start()
        for _ in range(int(timeout_s / 0.02)):
            if self._server.started or not self._thread.is_alive():
                break
            time.sleep(0.02)
        if not self._server.started:
            raise RuntimeError(f"the HTTP server did not start on port {self.port}")

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish, then close."""
        self._server.should_exit = True
        self._thread.join()
        self._endpoint.close()
        self._socket.close()
