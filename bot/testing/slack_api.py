"""A local stand-in for Slack's Web API, for the tests and the load benchmark: records every call (with the
time it arrived) and answers in Slack's JSON shapes.

It keeps the messages the bot posts or streams (and those a test says a user wrote), so
conversations.replies returns a real thread. Point the bot at it with `slack_api_url=stub.url`.
With `streaming=False` it refuses chat.startStream, as Slack does for an app without the AI-app feature.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bot.blocks import ANSWER_EVENT

TEAM_ID, BOT_USER_ID, BOT_ID, APP_ID = "T0FLYWHEEL", "U0FLYBOT", "B0FLYBOT", "A0FLYWHEEL"
MARKDOWN_CHARS = 12_000  # what one chat.*Stream call may carry


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    token: str | None
    at: float = 0.0  # time.time() when it arrived


class BurstServer(ThreadingHTTPServer):
    request_queue_size = 1024  # the standard library's 5 resets connections when a bot under load calls at once
    daemon_threads = True


class SlackStub:
    def __init__(self, bot_token: str, *, app_token: str | None = None, socket_url: str | None = None,
                 streaming: bool = True):
        self.bot_token, self.app_token, self.socket_url, self.streaming = bot_token, app_token, socket_url, streaming
        self.calls: list[Call] = []
        self.messages: list[dict[str, Any]] = []  # every channel's messages, with "channel" added
        self._streams: set[tuple[str, str]] = set()  # (channel, ts) of messages being streamed
        self._failures: dict[str, list[int]] = {}  # method -> HTTP statuses to answer its next calls with
        self._retry_after = "1"
        self.refused: list[Call] = []  # calls answered with a failure
        self._lock = threading.Lock()
        self._clock = 1_700_000_000.0
        self._server = BurstServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/api/"

    def __enter__(self) -> "SlackStub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- what tests use -----------------------------------------------------------------------

    def next_ts(self) -> str:
        with self._lock:
            self._clock += 1
            return f"{self._clock:.6f}"

    def user_message(self, channel: str, user: str, text: str, thread_ts: str | None = None) -> dict[str, Any]:
        """A message a person wrote: kept for conversations.replies, returned for the event payload."""
        message = {"type": "message", "user": user, "text": text, "ts": self.next_ts(), "team": TEAM_ID}
        if thread_ts:
            message["thread_ts"] = thread_ts
        with self._lock:
            self.messages.append({**message, "channel": channel})
        return message

    def answers_by_thread(self) -> dict[str, list[dict[str, Any]]]:
        """Thread ts -> the bot's finished answers in it: messages with the answer metadata and the thumbs
        (a streamed answer gets both when it stops; an apology has neither)."""
        by_thread: dict[str, list[dict[str, Any]]] = {}
        with self._lock:
            for message in self.messages:
                finished = any(block.get("type") == "context_actions" for block in message.get("blocks") or [])
                if finished and message.get("metadata", {}).get("event_type") == ANSWER_EVENT:
                    by_thread.setdefault(message.get("thread_ts"), []).append(message)
        return by_thread

    def fail(self, method: str, *statuses: int, retry_after_s: int = 1) -> None:
        """Answer the next calls to `method` with these HTTP statuses, as Slack does when it is busy (429,
        with Retry-After) or broken (5xx); the calls after them are served as usual."""
        with self._lock:
            self._failures.setdefault(method, []).extend(statuses)
            self._retry_after = str(retry_after_s)

    def _next_failure(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, str]]:
        with self._lock:
            statuses = self._failures.get(method)
            if not statuses:
                return 200, {}
            status = statuses.pop(0)
            self.refused.append(Call(method, params, None, time.time()))
        return status, {"Retry-After": self._retry_after} if status == 429 else {}

    def calls_to(self, method: str | tuple[str, ...]) -> list[Call]:
        """The calls to `method` (or to any of several)."""
        methods = (method,) if isinstance(method, str) else method
        with self._lock:
            return [call for call in self.calls if call.method in methods]

    def wait_for(self, method: str | tuple[str, ...], count: int = 1, timeout: float = 120.0) -> list[Call]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            calls = self.calls_to(method)
            if len(calls) >= count:
                return calls
            time.sleep(0.05)
        raise AssertionError(f"{method} called {len(self.calls_to(method))} time(s), expected {count}: {self.calls}")

    # --- the Web API ----------------------------------------------------------------------------

    def _handle(self, method: str, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        with self._lock:
            self.calls.append(Call(method, params, token, time.time()))
        if token != (self.app_token if method == "apps.connections.open" else self.bot_token):
            return {"ok": False, "error": "invalid_auth"}
        handler = getattr(self, "_api_" + method.replace(".", "_"), None)
        return handler(params) if handler else {"ok": False, "error": "unknown_method"}

    def _api_auth_test(self, params):
        return {
            "ok": True, "url": "https://flywheel-test.slack.com/", "team": "Flywheel Test", "user": "flywheel",
            "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID, "is_enterprise_install": False,
        }

    def _bot_message(self, params) -> dict[str, Any]:
        message = {
            "type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "app_id": APP_ID, "team": TEAM_ID,
            "text": params.get("text", ""), "blocks": _json(params.get("blocks")) or [],
        }
        if params.get("metadata"):
            message["metadata"] = _json(params["metadata"])
        return message

    def _api_chat_postMessage(self, params):
        message = {**self._bot_message(params), "ts": self.next_ts()}
        if params.get("thread_ts"):
            message["thread_ts"] = params["thread_ts"]
        with self._lock:
            self.messages.append({**message, "channel": params["channel"]})
        return {"ok": True, "channel": params["channel"], "ts": message["ts"], "message": message}

    def _api_chat_update(self, params):
        with self._lock:
            found = [m for m in self.messages if m["channel"] == params["channel"] and m["ts"] == params["ts"]]
            if not found:
                return {"ok": False, "error": "message_not_found"}
            found[0].update(self._bot_message(params))
        return {"ok": True, "channel": params["channel"], "ts": params["ts"], "text": params.get("text", "")}

    def _api_chat_startStream(self, params):
        if not self.streaming:
            return {"ok": False, "error": "missing_scope", "needed": "assistant:write"}
        for name in ("thread_ts", "recipient_user_id", "recipient_team_id"):
            if not params.get(name):
                return {"ok": False, "error": f"missing_{name}"}
        if len(params.get("markdown_text") or "") > MARKDOWN_CHARS:
            return {"ok": False, "error": "msg_too_long"}
        message = {**self._bot_message({"text": params.get("markdown_text") or ""}), "ts": self.next_ts(),
                   "thread_ts": params["thread_ts"]}
        with self._lock:
            self.messages.append({**message, "channel": params["channel"]})
            self._streams.add((params["channel"], message["ts"]))
        return {"ok": True, "channel": params["channel"], "ts": message["ts"]}

    def _api_chat_appendStream(self, params):
        return self._stream_into(params)

    def _api_chat_stopStream(self, params):
        """The rest of the text, and the blocks (shown under it) and metadata of the finished message."""
        finished = {"blocks": _json(params.get("blocks")) or []}
        if params.get("metadata"):
            finished["metadata"] = _json(params["metadata"])
        return self._stream_into(params, finished)

    def _stream_into(self, params, finished: dict[str, Any] | None = None):
        key, text = (params["channel"], params["ts"]), params.get("markdown_text") or ""
        if len(text) > MARKDOWN_CHARS:
            return {"ok": False, "error": "msg_too_long"}
        with self._lock:
            if key not in self._streams:
                return {"ok": False, "error": "message_not_in_streaming_state"}
            [message] = [m for m in self.messages if (m["channel"], m["ts"]) == key]
            message["text"] += text
            if finished is not None:
                message.update(finished)
                self._streams.discard(key)
        return {"ok": True, "channel": key[0], "ts": key[1]}

    def _api_apps_connections_open(self, params):
        return {"ok": True, "url": self.socket_url}

    def _api_chat_postEphemeral(self, params):
        return {"ok": True, "message_ts": self.next_ts()}

    def _api_views_open(self, params):
        view = _json(params["view"])
        return {"ok": True, "view": {**view, "id": "V0MODAL", "team_id": TEAM_ID, "app_id": APP_ID, "hash": "1.a"}}

    def _api_conversations_replies(self, params):
        channel, ts = params["channel"], params["ts"]
        with self._lock:
            thread = [
                {k: v for k, v in m.items() if k != "channel"}
                for m in self.messages
                if m["channel"] == channel and (m["ts"] == ts or m.get("thread_ts") == ts)
            ]
        if not thread:
            return {"ok": False, "error": "thread_not_found"}
        thread.sort(key=lambda m: float(m["ts"]))
        return {"ok": True, "messages": thread, "has_more": False, "response_metadata": {"next_cursor": ""}}

    def _api_assistant_threads_setStatus(self, params):
        return {"ok": True}

    def _api_assistant_threads_setSuggestedPrompts(self, params):
        return {"ok": True}

    def _handler_class(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # connections kept alive, as Slack's are
            # The headers and the body go out in two writes: with Nagle's algorithm the body waited for the
            # client's delayed ACK, 40 ms added to every call (Slack's own servers answer in one go).
            disable_nagle_algorithm = True

            def _serve(self, body: bytes) -> None:
                parts = urlsplit(self.path)
                params: dict[str, Any] = dict(parse_qsl(parts.query))
                if body:
                    if self.headers.get("Content-Type", "").startswith("application/json"):
                        params.update(json.loads(body))
                    else:
                        params.update(parse_qsl(body.decode()))
                auth = self.headers.get("Authorization", "")
                token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else params.pop("token", None)
                method = parts.path.removeprefix("/api/")
                status, headers = stub._next_failure(method, params)
                reply = stub._handle(method, params, token) if status == 200 else {"ok": False, "error": "failed"}
                body = json.dumps(reply).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Type": "application/json; charset=utf-8",
                                    "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802 - the stdlib's name
                self._serve(b"")

            def do_POST(self):  # noqa: N802
                self._serve(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def log_message(self, format, *args):  # noqa: A002
                pass

        return Handler


def _json(value: Any) -> Any:
    """Form-encoded calls carry blocks and views as JSON strings; JSON calls as objects."""
    return json.loads(value) if isinstance(value, str) else value


# --- Slack's side of the HTTP conversation: signed requests in Slack's payload shapes --------------


def signed_headers(secret: str, body: str, content_type: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers as Slack sends them: v0 HMAC-SHA256 of `v0:timestamp:body` with the signing secret."""
    from slack_sdk.signature import SignatureVerifier

    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = SignatureVerifier(secret).generate_signature(timestamp=str(timestamp), body=body)
    return {"Content-Type": content_type, "X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": signature}


def event_callback(event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "token": "legacy-verification-token", "team_id": TEAM_ID, "api_app_id": APP_ID, "event": event,
        "type": "event_callback", "event_id": event_id or f"Ev{time.time_ns()}", "event_time": int(time.time()),
        "authorizations": [
            {"enterprise_id": None, "team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True,
             "is_enterprise_install": False}
        ],
        "is_ext_shared_channel": False, "event_context": "4-eyJldCI6ImFwcF9tZW50aW9uIn0",
    }


def app_mention(message: dict[str, Any], channel: str) -> dict[str, Any]:
    return {**message, "type": "app_mention", "channel": channel, "event_ts": message["ts"]}


def direct_message(message: dict[str, Any], channel: str) -> dict[str, Any]:
    return {**message, "channel": channel, "channel_type": "im", "event_ts": message["ts"]}


def _user(user_id: str) -> dict[str, Any]:
    return {"id": user_id, "username": user_id.lower(), "name": user_id.lower(), "team_id": TEAM_ID}


def block_actions(user_id: str, channel: str, message: dict[str, Any], action: dict[str, Any]) -> dict[str, Any]:
    """A click on `action` (an element of `message`, as posted) by `user_id`."""
    return {
        "type": "block_actions", "user": _user(user_id), "api_app_id": APP_ID, "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": message["ts"], "channel_id": channel, "is_ephemeral": False,
                      "thread_ts": message.get("thread_ts")},
        "trigger_id": f"{time.time_ns()}.1.abcdef", "team": {"id": TEAM_ID, "domain": "flywheel-test"},
        "enterprise": None, "is_enterprise_install": False, "channel": {"id": channel, "name": "general"},
        "message": message, "state": {"values": {}},
        "response_url": "https://hooks.slack.com/actions/T0FLYWHEEL/1/abc",
        "actions": [{**action, "action_ts": f"{time.time():.6f}"}],
    }


def view_submission(user_id: str, view: dict[str, Any], values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Submitting `view` (as opened) with input `values` ({block_id: {action_id: {...}}})."""
    return {
        "type": "view_submission", "team": {"id": TEAM_ID, "domain": "flywheel-test"}, "user": _user(user_id),
        "api_app_id": APP_ID, "token": "legacy-verification-token", "trigger_id": f"{time.time_ns()}.2.abcdef",
        "view": {**view, "state": {"values": values}}, "response_urls": [], "is_enterprise_install": False,
        "enterprise": None,
    }


def slash_command(user_id: str, channel: str, command: str, text: str) -> dict[str, str]:
    return {
        "token": "legacy-verification-token", "team_id": TEAM_ID, "team_domain": "flywheel-test",
        "channel_id": channel, "channel_name": "general", "user_id": user_id, "user_name": user_id.lower(),
        "command": command, "text": text, "api_app_id": APP_ID, "is_enterprise_install": "false",
        "response_url": "https://hooks.slack.com/commands/T0FLYWHEEL/1/abc", "trigger_id": f"{time.time_ns()}.3.x",
    }
