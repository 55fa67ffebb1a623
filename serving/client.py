"""The one way to ask the model: `answer` (chat) and `chat_json` (structured output), over vLLM's OpenAI API.

Requests are routed (see `serving.routing`), time out, and retry connection failures a bounded
number of times with backoff; a server that stays down or is too slow raises ModelUnavailable.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import jsonschema
import openai

from flywheel.settings import Settings
from serving.adapters import load_adapter
from serving.errors import InvalidStructuredOutput, ModelUnavailable, ServingError
from serving.routing import Route, resolve

__all__ = ["Answer", "ModelUnavailable", "ServingError", "InvalidStructuredOutput", "answer", "chat_json"]

BACKOFF_S = 0.5
log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    text: str
    served_model: str  # the name vLLM answered as: "base" or a version name
    model_version_id: int | None  # None for the base model
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float


_building = threading.Lock()


def model_client(settings: Settings) -> openai.OpenAI:
    """This process's client for vLLM, built once: its HTTP transport loads the system's certificates (tens
    of milliseconds of CPU). Profiled in a burst, every answer worker of a fresh bot process built one at the
    same moment; the lock makes the first build the only one, and the bot builds it before it serves."""
    with _building:
        return _openai(settings.vllm_url, settings.request_timeout_s)


@lru_cache(maxsize=8)
def _openai(url: str, timeout: float) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="flywheel", timeout=timeout, max_retries=0)


def _call(settings: Settings, request: Callable[[openai.OpenAI], T]) -> T:
    """Run `request`, retrying connection failures and 5xx with backoff; translate errors."""
    client, last = model_client(settings), None
    for attempt in range(settings.request_retries + 1):
        if attempt:
            time.sleep(BACKOFF_S * 2 ** (attempt - 1))
        try:
            return request(client)
        except openai.APITimeoutError as exc:  # retrying would multiply the wait
            raise ModelUnavailable(f"vLLM did not answer within {settings.request_timeout_s} s") from exc
        except (openai.APIConnectionError, openai.InternalServerError) as exc:
            last = exc
        except openai.BadRequestError as exc:
            raise ServingError(f"vLLM refused the request: {exc.message}") from exc
    raise ModelUnavailable(f"vLLM at {settings.vllm_url} is unavailable ({last}); try again later") from last


def _with_messages(settings: Settings, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"role": "system", "content": settings.system_prompt}, *messages]


# (vLLM address, adapter name) -> the adapter folder this process has seen vLLM serve under that name.
_served_from: dict[tuple[str, str], str] = {}


def _check_served(settings: Settings, route: Route) -> None:
    """Make sure vLLM serves this version's own adapter under its name, once per process and folder: a vLLM
    that another registry also used (a demo home, a restored database) may hold a different "v1"."""
    key = (settings.vllm_url, route.model)
    if route.adapter_path is None or _served_from.get(key) == route.adapter_path:
        return
    try:
        load_adapter(settings, route.model, route.adapter_path)  # asks vLLM first: loads only if needed
    except ServingError as exc:  # down or refusing: the request itself retries and reports what is wrong
        log.warning("could not check that vLLM serves %s from %s: %s", route.model, route.adapter_path, exc)
        return
    _served_from[key] = route.adapter_path


def _routed(settings: Settings, model: str | None, user_id: str, run: Callable[[Route], T]) -> T:
    """Run against the routed model (a version's adapter checked once: _check_served); if vLLM does not have it
    (swapped out, or not loaded yet after a promotion or a restart), route again and load that adapter on demand."""
    try:
        route = resolve(settings, model, user_id)
        _check_served(settings, route)
        return run(route)
    except openai.NotFoundError:
        route = resolve(settings, model, user_id)
        if route.adapter_path is None:
            raise ServingError(f"vLLM does not serve a model named {route.model!r}") from None
        load_adapter(settings, route.model, route.adapter_path)
        return run(route)


def _complete(settings: Settings, route: Route, params: dict[str, Any], on_token) -> Answer:
    started = time.perf_counter()
    if on_token is None:
        response = _call(settings, lambda c: c.chat.completions.create(model=route.model, **params))
        text, usage, served = response.choices[0].message.content or "", response.usage, response.model
    else:
        text, usage, served = _stream(settings, route, params, on_token)
    return Answer(
        text=text, served_model=served, model_version_id=route.version_id,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        latency_ms=(time.perf_counter() - started) * 1000,
    )


def _stream(settings: Settings, route: Route, params: dict[str, Any], on_token: Callable[[str], None]):
    stream = _call(settings, lambda c: c.chat.completions.create(
        model=route.model, stream=True, stream_options={"include_usage": True}, **params))
    parts, usage, served = [], None, route.model
    try:
        for chunk in stream:
            served, usage = chunk.model or served, chunk.usage or usage
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if delta:
                parts.append(delta)
                on_token(delta)
    except (openai.APIConnectionError, openai.APIError) as exc:  # the server went away mid-answer
        raise ModelUnavailable(f"vLLM stopped answering mid-stream: {exc}") from exc
    return "".join(parts), usage, served


def answer(
    settings: Settings, messages: list[dict[str, str]], *, user_id: str = "", model: str | None = None,
    max_tokens: int | None = None, temperature: float | None = None,
    on_token: Callable[[str], None] | None = None, system_prompt: bool = True,
) -> Answer:
    """Answer a conversation (without the system prompt: it is added here; `system_prompt=False` sends the
    messages as they are, as an evaluation scores them).

    `model=None` routes (active version, canary for its users, else the base model); "base" or a
    version name forces one. With `on_token`, the answer is streamed and each piece passed to it.
    """
    params = {
        "messages": _with_messages(settings, messages) if system_prompt else messages,
        "max_tokens": max_tokens or settings.max_answer_tokens,
        "temperature": settings.temperature if temperature is None else temperature,
    }
    if on_token is not None:
        # vLLM sends the first token at once, then `stream_chunk_tokens` tokens a chunk: a caller that shows
        # text a few times a second parses far fewer chunks (a vLLM without the option ignores it).
        params["extra_body"] = {"stream_interval": settings.stream_chunk_tokens}
    return _routed(settings, model, user_id, lambda route: _complete(settings, route, params, on_token))


def chat_json(
    settings: Settings, messages: list[dict[str, str]], schema: dict[str, Any], *, model: str | None = None,
    user_id: str = "", max_tokens: int | None = None,
) -> Any:
    """Ask for JSON matching `schema` (vLLM structured outputs); return it parsed and validated."""
    params = {
        "messages": _with_messages(settings, messages),
        "max_tokens": max_tokens or settings.max_answer_tokens,
        "temperature": 0.0,
        "extra_body": {"structured_outputs": {"json": schema}},
    }
    text = _routed(settings, model, user_id, lambda route: _complete(settings, route, params, None)).text
    try:
        value = json.loads(text)
        jsonschema.validate(value, schema)
    except (json.JSONDecodeError, jsonschema.ValidationError) as exc:
        raise InvalidStructuredOutput(f"the model's output does not match the schema: {exc}; output: {text[:300]!r}") from exc
    return value
