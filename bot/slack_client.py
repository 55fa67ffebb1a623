"""The bot's Slack Web API client: slack_sdk's WebClient over a pool of kept-alive connections.

slack_sdk sends each call through a new urllib opener on a new connection: measured in a burst on 2 cores,
some 3 ms of CPU per call (building the opener, reading the proxy environment, a TCP and TLS handshake),
all of it holding the one interpreter that also acks Slack's requests, and an answer is several calls.
Here calls reuse the connections of a urllib3 pool; slack_sdk still does everything else (arguments,
retry handlers, rate limits, errors), since only its transport method is replaced.
"""

from __future__ import annotations

import ssl
from email.message import Message
from io import BytesIO
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request

import urllib3
from slack_sdk import WebClient
from slack_sdk.http_retry import default_retry_handlers
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler, ServerErrorRetryHandler

from bot import metrics
from flywheel.settings import Settings

# Slack's 429s say how long to wait (Retry-After, honoured); its 5xx are retried with backoff. Generous
# counts: an answer that gives up on Slack is an answer the user never sees.
SLACK_RETRIES = 8
POOL_CONNECTIONS = 64  # kept open to Slack: the answer workers and the reply threads call at once


class MissingSlackCredentials(ValueError):
    """A token or secret the chosen mode needs is not set."""


def secret(settings: Settings, name: str, why: str) -> str:
    value = getattr(settings, name)
    if value is None or not value.get_secret_value():
        raise MissingSlackCredentials(f"{name.upper()} is not set ({why})")
    return value.get_secret_value()


class PooledWebClient(WebClient):
    """WebClient whose HTTP calls go over kept-alive pooled connections (thread-safe: one pool per client)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        options = dict(maxsize=POOL_CONNECTIONS, ssl_context=self.ssl, retries=False)
        self._pool = urllib3.ProxyManager(self.proxy, **options) if self.proxy else urllib3.PoolManager(**options)

    def _perform_urllib_http_request_internal(self, url: str, req: Request) -> dict[str, Any]:
        """slack_sdk's contract: the response as a dict, an HTTP error status raised as urllib's HTTPError
        (its retry handlers read 429s and 5xx from it)."""
        response = self._pool.request("POST", url, body=req.data, headers=dict(req.header_items()),
                                      timeout=self.timeout, redirect=False)
        if response.status >= 400:
            headers = Message()
            for name, value in response.headers.items():
                headers[name] = value
            raise HTTPError(url, response.status, response.reason or "", headers, BytesIO(response.data))
        headers = dict(response.headers)
        content_type = headers.get("Content-Type", headers.get("content-type", ""))
        if content_type.startswith("application/gzip"):
            return {"status": response.status, "headers": headers, "body": response.data}
        return {"status": response.status, "headers": headers, "body": response.data.decode("utf-8")}


def slack_client(settings: Settings) -> WebClient:
    token = secret(settings, "slack_bot_token", "the bot token, xoxb-...")
    retries = [*default_retry_handlers(), RateLimitErrorRetryHandler(max_retry_count=SLACK_RETRIES),
               ServerErrorRetryHandler(max_retry_count=SLACK_RETRIES),
               metrics.SlackApiObserver()]  # last: it sees how each call finally ended
    # One TLS context for every call (left to urllib, each call loads the system's certificates again).
    return PooledWebClient(token=token, base_url=settings.slack_api_url, retry_handlers=retries,
                           ssl=ssl.create_default_context())
