"""A stand-in for the model server with a fixed speed, so a benchmark measures the bot, not the model.

It speaks the part of vLLM's OpenAI API the bot uses (GET /v1/models, POST /v1/chat/completions, streamed
in chunks of `stream_interval` tokens or not, with usage) and behaves like a server of known capacity: at
most `concurrency` answers are written at once (the rest wait their turn, as in vLLM's queue), each `tokens`
words long, one word per `delay_s`.
Its own maximum is therefore concurrency / (tokens * delay_s) answers per second.

    python -m bench.standin_model --port 8100 --concurrency 8 --tokens 30 --delay-s 0.04
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import uvicorn

MODEL = "base"


class StandinModel:
    def __init__(self, concurrency: int, tokens: int, delay_s: float):
        self.tokens, self.delay_s = tokens, delay_s
        self._slots = asyncio.Semaphore(concurrency)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/v1/models":
            await _json(send, 200, {"object": "list", "data": [{"id": MODEL, "object": "model", "root": MODEL}]})
        elif scope["path"] == "/v1/chat/completions" and scope["method"] == "POST":
            request = json.loads(await _body(receive) or b"{}")
            await self._complete(request, send)
        else:
            await _json(send, 404, {"error": {"message": "not found"}})

    async def _complete(self, request: dict, send) -> None:
        count = min(self.tokens, int(request.get("max_tokens") or self.tokens))
        words = [f" word{n}" for n in range(count)]
        usage = {"prompt_tokens": 20, "completion_tokens": count, "total_tokens": 20 + count}
        async with self._slots:
            if not request.get("stream"):
                await asyncio.sleep(self.delay_s * count)
                message = {"role": "assistant", "content": "".join(words)}
                await _json(send, 200, _chunk(request, message=message, finish="stop", usage=usage, kind="chat.completion"))
                return
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            for piece in _pieces(words, int(request.get("stream_interval") or 1)):
                await asyncio.sleep(self.delay_s * len(piece))
                await _event(send, _chunk(request, delta={"content": "".join(piece)}))
            await _event(send, _chunk(request, delta={}, finish="stop"))
            await _event(send, {**_chunk(request), "choices": [], "usage": usage})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


def _pieces(words: list[str], interval: int) -> list[list[str]]:
    """vLLM's `stream_interval`: the first token alone (at once), then `interval` tokens a chunk."""
    return [words[:1]] + [words[start:start + interval] for start in range(1, len(words), interval)]


def _chunk(request: dict, *, delta: dict | None = None, message: dict | None = None, finish: str | None = None,
           usage: dict | None = None, kind: str = "chat.completion.chunk") -> dict:
    choice = {"index": 0, "finish_reason": finish, **({"delta": delta} if delta is not None else {}),
              **({"message": message} if message is not None else {})}
    return {"id": "chatcmpl-standin", "object": kind, "created": int(time.time()),
            "model": request.get("model", MODEL), "choices": [choice], "usage": usage}


async def _body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _json(send, status: int, value: dict) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(value).encode()})


async def _event(send, value: dict) -> None:
    await send({"type": "http.response.body", "body": f"data: {json.dumps(value)}\n\n".encode(), "more_body": True})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=30)
    parser.add_argument("--delay-s", type=float, default=0.04)
    args = parser.parse_args()
    app = StandinModel(args.concurrency, args.tokens, args.delay_s)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, backlog=2048)


if __name__ == "__main__":
    main()
