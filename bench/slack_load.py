"""The Slack bot under a burst: N people ask at the same instant, then vote (some write a better answer) while
N new questions are being answered. Nothing may be lost, and Slack's 3 s ack limit must never be at risk.

    python -m bench.slack_load                                   # 100 users, HTTP mode, stand-in model
    python -m bench.slack_load --users 20,100,300 --mode http,socket --model standin
    python -m bench.slack_load --model vllm                      # the real vLLM (starts its own; or --vllm-url)
    python -m bench.slack_load --processes 8,4+4                 # 8 processes; 4 that receive beside 4 that answer

`flywheel bot` runs as its own process, exactly as deployed, against a fresh database, with its Web API
pointed at the recording Slack stand-in (bot/testing/slack_api.py) and, in Socket Mode, connected to the
local Socket Mode server (bot/testing/socket_mode.py). HTTP requests are correctly signed, in Slack's
payload shapes, each on its own connection, all sent at once from another process. Users are spread over
`--channels` channels, one thread each.

`--model standin` is a model server of fixed speed (bench/standin_model.py: `--standin-concurrency` answers
at once, `--standin-tokens` words at `--standin-delay-s` each), so the bot is what is measured; the model's
own maximum in answers per minute is measured the same way for both models (its answers fired straight at
it, at its capacity) and printed beside the bot's.

Reported per run: ack latency p50 / p99 / max (questions, the first burst's alone, and votes; over HTTP
beside the same burst sent to a server that does nothing, this harness's floor on this machine), time to
the first visible reply (the queued notice or the first words) and to the first words, answers completed
per minute against the model's maximum, questions / votes / better answers lost (acked but not stored, or
stored and never answered nor refused with a notice), duplicate answers, message updates per second per
channel (the most in any one-second window), the bot's peak memory, and its CPU while idle (5 s before the
first burst).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import openai
import uvicorn
from sqlalchemy import Engine, select

from bench.serving import percentile
from bot import blocks
from bot.testing.slack_api import (
    BOT_USER_ID,
    SlackStub,
    app_mention,
    block_actions,
    event_callback,
    signed_headers,
    view_submission,
)
from bot.http_server import LISTEN_BACKLOG
from bot.testing.socket_mode import SocketModeStub
from flywheel.settings import Settings
from serving.testing import free_port
from storage.db import make_engine, session_scope, upgrade
from storage.models import Alternative, Feedback, Interaction, InteractionStatus

TOKEN, SECRET, APP_TOKEN = "xoxb-1-load-bench-token", "load-bench-signing-secret", "xapp-1-A0-load-bench-app-token"
MESSAGE_WRITES = ("chat.postMessage", "chat.update", "chat.startStream", "chat.appendStream", "chat.stopStream")
FIRST_WORDS = ("chat.startStream", "chat.postMessage")
IDLE_S = 5.0  # how long the bot's idle CPU is measured, before the first burst
QUESTIONS = ["How do I restart the {n} service?", "Where are the logs of job {n}?", "What does error E{n} mean?"]


@dataclass
class Sent:
    """One request as Slack sent it, and what the bot answered."""

    key: str  # thread ts (questions) or user (votes)
    at: float  # time.time() when it was sent
    latency_s: float | None  # None: no answer (connection reset, timeout)
    status: int


@dataclass
class Run:
    users: int
    mode: str
    channels: int
    stub: SlackStub
    socket: SocketModeStub | None
    bot: subprocess.Popen
    bot_url: str
    engine: Engine
    threads: dict[str, tuple[str, str]] = field(default_factory=dict)  # thread ts -> (channel, user)


# --- sending, as Slack does ------------------------------------------------------------------------


def raw_request(host: str, port: int, body: str, content_type: str) -> bytes:
    headers = signed_headers(SECRET, body, content_type)
    lines = ["POST /slack/events HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body.encode())}",
             "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body.encode()


async def _send_one(host: str, port: int, key: str, raw: bytes, timeout_s: float) -> Sent:
    at, started = time.time(), time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
        writer.write(raw)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout_s)
        latency = time.perf_counter() - started
        await reader.read()
        writer.close()
        return Sent(key, at, latency, int(status_line.split()[1]))
    except (OSError, asyncio.TimeoutError, IndexError, ValueError):
        return Sent(key, at, None, 0)


def fire(host: str, port: int, requests: list[tuple[str, bytes]], timeout_s: float = 30.0) -> list[Sent]:
    """Every request on its own connection, all started at once (run in a process of its own)."""
    async def all_at_once():
        return await asyncio.gather(*(_send_one(host, port, key, raw, timeout_s) for key, raw in requests))

    return asyncio.run(all_at_once())


def fire_from_another_process(host: str, port: int, requests: list[tuple[str, bytes]]) -> list[Sent]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fire, (host, port, requests))


async def _do_nothing(scope, receive, send) -> None:
    """An ASGI app that reads a request and answers 200: what this harness measures for a bot with no work."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _serve_do_nothing(port: int) -> None:
    uvicorn.run(_do_nothing, host="127.0.0.1", port=port, backlog=LISTEN_BACKLOG, lifespan="off",
                access_log=False, log_level="warning")


def harness_floor(users: int) -> dict[str, float]:
    """Ack latency of `users` mentions sent the same way to a server that does nothing (uvicorn, configured as
    the bot's): the part of the bot's figures that is the sending, connecting and scheduling on this machine."""
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=_serve_do_nothing, args=(port,), daemon=True)
    server.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the do-nothing server did not start"
                time.sleep(0.1)
        body = json.dumps(event_callback(app_mention({"ts": "1.0", "user": "U0", "text": QUESTIONS[0]}, "C0")))
        requests = [(str(n), raw_request("127.0.0.1", port, body, "application/json")) for n in range(users)]
        sent = fire_from_another_process("127.0.0.1", port, requests)
        return summary([s.latency_s for s in sent if s.latency_s is not None])
    finally:
        server.terminate()


def send_http(run: Run, payloads: list[tuple[str, str, str]]) -> list[Sent]:
    """(key, body, content type) triples, signed and sent from a separate process."""
    host, port = run.bot_url.split("//")[1].split("/")[0].split(":")
    requests = [(key, raw_request(host, int(port), body, ctype)) for key, body, ctype in payloads]
    return fire_from_another_process(host, int(port), requests)


def send_socket(run: Run, payloads: list[tuple[str, str, dict]]) -> list[Sent]:
    """(key, envelope kind, payload): sent over the app's websocket back to back; latency to the ack."""
    sent = [(key, time.time(), run.socket.send(kind, payload)) for key, kind, payload in payloads]
    results = []
    for key, at, envelope_id in sent:
        try:
            run.socket.wait_for_ack(envelope_id, timeout=60)
            results.append(Sent(key, at, run.socket.acked_at[envelope_id] - at, 200))
        except AssertionError:
            results.append(Sent(key, at, None, 0))
    return results


def send(run: Run, items: list[tuple[str, str, dict]]) -> list[Sent]:
    """Questions (events_api) and clicks (interactive) in the run's mode."""
    if run.mode == "socket":
        return send_socket(run, items)
    payloads = []
    for key, kind, payload in items:
        if kind == "events_api":
            payloads.append((key, json.dumps(payload), "application/json"))
        else:
            payloads.append((key, urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded"))
    return send_http(run, payloads)


# --- the scenario ---------------------------------------------------------------------------------


def questions(run: Run, wave: int) -> list[tuple[str, str, dict]]:
    items = []
    for n in range(run.users):
        channel, user = f"C{n % run.channels:04d}", f"U{n:05d}"
        text = QUESTIONS[n % len(QUESTIONS)].format(n=wave * 1000 + n)
        message = run.stub.user_message(channel, user, f"<@{BOT_USER_ID}> {text}")
        run.threads[message["ts"]] = (channel, user)
        items.append((message["ts"], "events_api", event_callback(app_mention(message, channel))))
    return items


def wait_until_settled(run: Run, threads: list[str], timeout_s: float) -> float:
    """Wait until every question of `threads` is answered or refused; returns when the last one was."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with session_scope(run.engine) as session:
            rows = session.scalars(select(Interaction).where(Interaction.question_ts.in_(threads))).all()
            open_ = [i for i in rows if i.status is InteractionStatus.pending or
                     (i.status is InteractionStatus.ok and not i.message_ts)]
        if len(rows) == len(threads) and not open_:
            break
        time.sleep(0.5)
    finals = [c.at for c in run.stub.calls_to(("chat.stopStream", "chat.update", "chat.postMessage"))]
    return max(finals) if finals else time.time()


def votes_and_better_answers(run: Run, threads: list[str], better_share: float) -> tuple[list, list[str]]:
    answers = run.stub.answers_by_thread()
    items, better_users = [], []
    for n, thread in enumerate(threads):
        channel, user = run.threads[thread]
        if not answers.get(thread):
            continue
        answer = answers[thread][-1]
        thumbs = next(b for b in answer["blocks"] if b["type"] == "context_actions")["elements"][0]
        chosen = thumbs["negative_button" if n % 2 else "positive_button"]
        action = {"type": "feedback_buttons", "action_id": blocks.VOTE_ACTION, "block_id": "b",
                  "value": chosen["value"], "text": chosen["text"]}
        items.append((user, "interactive", block_actions(user, channel, answer, action)))
        if n < better_share * len(threads):
            better = next(e for b in answer["blocks"] if b["type"] == "actions" for e in b["elements"]
                          if e["action_id"] == blocks.BETTER_ACTION)
            click = {"type": "button", "action_id": blocks.BETTER_ACTION, "block_id": "b", "value": better["value"],
                     "text": better["text"]}
            items.append((f"{user}:better", "interactive", block_actions(user, channel, answer, click)))
            better_users.append(user)
    return items, better_users


def submit_better_answers(run: Run, users: list[str]) -> list[Sent]:
    run.stub.wait_for("views.open", len(users), timeout=120)
    items = []
    for call in run.stub.calls_to("views.open")[-len(users):]:
        view = json.loads(call.params["view"]) if isinstance(call.params["view"], str) else call.params["view"]
        user = run.threads[json.loads(view["private_metadata"])["thread_ts"]][1]
        values = {blocks.BETTER_BLOCK: {blocks.BETTER_INPUT: {"type": "plain_text_input",
                                                              "value": f"Run `systemctl restart svc` ({user})."}}}
        items.append((user, "interactive", view_submission(user, view, values)))
    return send(run, items)


# --- measuring ------------------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "max": max(values, default=float("nan")),
            "n": len(values)}


def reply_times(run: Run, sent: list[Sent]) -> tuple[list[float], list[float]]:
    """Per question: seconds to the first visible reply (queued notice or words), and to the first words."""
    first_visible, first_words = {}, {}
    for call in run.stub.calls:
        thread = call.params.get("thread_ts")
        if thread not in run.threads:
            continue
        if call.method in FIRST_WORDS:
            first_words.setdefault(thread, call.at)
        if call.method in FIRST_WORDS or call.method == "chat.postEphemeral":
            first_visible.setdefault(thread, call.at)
    at = {s.key: s.at for s in sent}
    return ([first_visible[t] - at[t] for t in at if t in first_visible],
            [first_words[t] - at[t] for t in at if t in first_words])


def updates_per_channel(stub: SlackStub) -> dict[str, float]:
    """Message writes per channel, as Slack counts them: the shortest gap between two writes in one channel,
    the most writes any channel took in one second, and the busiest channel's mean rate. (Gaps are measured
    where the stand-in receives the calls, so network jitter can shorten a paced gap by milliseconds.)"""
    times = defaultdict(list)
    for call in stub.calls_to(MESSAGE_WRITES):
        times[call.params.get("channel")].append(call.at)
    shortest, most, busiest = float("inf"), 0, 0.0
    for stamps in times.values():
        stamps.sort()
        shortest = min([shortest, *(later - earlier for earlier, later in zip(stamps, stamps[1:]))])
        start = 0
        for end, stamp in enumerate(stamps):
            while stamp - stamps[start] >= 1.0:
                start += 1
            most = max(most, end - start + 1)
        span = stamps[-1] - stamps[0]
        busiest = max(busiest, (len(stamps) - 1) / span if span > 0 else 0.0)
    return {"shortest_gap_s": round(shortest, 3), "max_in_one_second": most,
            "busiest_mean_per_s": round(busiest, 3)}


def accounting(run: Run, asked: list[Sent], voted: list[Sent], better: list[Sent]) -> dict[str, Any]:
    with session_scope(run.engine) as session:
        stored = {i.question_ts: i for i in session.scalars(select(Interaction))}
        votes = {(f.user_id) for f in session.scalars(select(Feedback))}
        alternatives = {a.user_id for a in session.scalars(select(Alternative))}
        answered = {ts for ts, i in stored.items() if i.status is InteractionStatus.ok and i.message_ts}
        refused = {ts for ts, i in stored.items() if i.status is InteractionStatus.failed}
    answers = run.stub.answers_by_thread()
    acked = [s for s in asked if s.status == 200]
    told = {c.params.get("thread_ts") for c in run.stub.calls_to("chat.postMessage") if c.params.get("blocks")
            and blocks.RETRY_ACTION in json.dumps(c.params["blocks"])}
    return {
        "questions_sent": len(asked), "questions_acked": len(acked), "questions_stored": len(stored),
        "answered": len(answered), "refused_with_notice": len(refused & told),
        "questions_lost": sum(1 for s in acked if s.key not in answered and not (s.key in refused and s.key in told)),
        "duplicate_answers": sum(len(messages) - 1 for messages in answers.values() if len(messages) > 1),
        "votes_sent": len(voted), "votes_acked": sum(s.status == 200 for s in voted),
        "votes_lost": sum(1 for s in voted if s.status == 200 and s.key not in votes),
        "better_answers_sent": len(better), "better_answers_lost": sum(
            1 for s in better if s.status == 200 and s.key not in alternatives),
    }


def bot_processes(pid: int) -> list[int]:
    """`pid` and its children (the bot's processes when it runs several)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
        except (OSError, ValueError):  # a process that ended meanwhile
            continue
    return [pid, *children]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the bot's processes have used so far."""
    total = 0
    for each in bot_processes(pid):
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def idle_cpu(pid: int, seconds: float = IDLE_S) -> float:
    """CPU ms a second the bot's processes use while nobody asks anything (before the burst)."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return round((cpu_seconds(pid) - before) / seconds * 1000, 1)


def peak_rss_mb(pid: int) -> float:
    """The bot's processes' peak resident memory, summed."""
    total = 0
    for each in bot_processes(pid):
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total / 1024


# --- the parts ------------------------------------------------------------------------------------


def start_bot(mode: str, model_url: str, args, db_url: str, home: Path, stub: SlackStub,
              socket: SocketModeStub | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "SLACK_"))}
    env.update({
        "FLYWHEEL_HOME": str(home), "FLYWHEEL_DATABASE_URL": db_url, "FLYWHEEL_VLLM_URL": model_url,
        "FLYWHEEL_BOT_MODE": mode, "FLYWHEEL_BOT_PORT": str(port), "FLYWHEEL_SLACK_API_URL": stub.url,
        "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET, "SLACK_APP_TOKEN": APP_TOKEN,
        "FLYWHEEL_VLLM_MAX_NUM_SEQS": str(args.capacity), "FLYWHEEL_MAX_ANSWER_TOKENS": str(args.max_tokens),
        "FLYWHEEL_STREAM_CHUNK_TOKENS": str(args.stream_chunk_tokens),
        "FLYWHEEL_RATE_LIMIT_PER_MINUTE": "100000", "FLYWHEEL_REQUEST_TIMEOUT_S": "600",
        "FLYWHEEL_ANSWER_QUEUE_SIZE": "10000", "FLYWHEEL_BOT_PROCESSES": str(args.bot_processes),
        "FLYWHEEL_BOT_ANSWER_PROCESSES": str(args.answer_processes),
    })
    log = (home / "bot.log").open("wb")
    bot = subprocess.Popen([sys.executable, "-m", "flywheel", "bot"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/slack/events"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert bot.poll() is None, (home / "bot.log").read_text()
        # Every process, not the first one that answers: the others would still be importing beside the acks.
        started = (home / "bot.log").read_text(errors="replace")
        receiving = socket.connection_count if socket is not None else started.count("bot.app: listening on port")
        answering = started.count("bot.app: answering the questions")
        if receiving >= process_count(args) and answering >= args.answer_processes:
            return bot, url
        time.sleep(0.2)
    raise RuntimeError("the bot did not start")


def process_count(args) -> int:
    return Settings(bot_processes=args.bot_processes).bot_process_count


def model_answers_per_minute(model_url: str, count: int, capacity: int, max_tokens: int) -> float:
    """The model alone: `count` short questions fired straight at it, `capacity` at a time."""
    async def measure() -> float:
        client = openai.AsyncOpenAI(base_url=f"{model_url}/v1", api_key="bench", timeout=600, max_retries=0)
        slots = asyncio.Semaphore(capacity)

        async def one(n: int) -> None:
            async with slots:
                await client.chat.completions.create(
                    model="base", max_tokens=max_tokens, temperature=0.0,
                    messages=[{"role": "user", "content": QUESTIONS[n % 3].format(n=n)}])

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(count)))
        return count / (time.perf_counter() - started) * 60

    return asyncio.run(measure())


def one_run(users: int, mode: str, args, model_url: str, workdir: Path) -> dict[str, Any]:
    home = workdir / f"{mode}-{users}-{args.bot_processes}+{args.answer_processes}"
    home.mkdir(parents=True)
    db_url = f"sqlite:///{home / 'flywheel.db'}"
    upgrade(db_url)
    socket = SocketModeStub().__enter__() if mode == "socket" else None
    stub = SlackStub(TOKEN, app_token=APP_TOKEN, socket_url=socket.url if socket else None).__enter__()
    bot, url = start_bot(mode, model_url, args, db_url, home, stub, socket)
    run = Run(users, mode, args.channels, stub, socket, bot, url, make_engine(db_url))
    try:
        idle_cpu_ms_per_s = idle_cpu(bot.pid)
        first = questions(run, 1)
        cpu_before, started = cpu_seconds(bot.pid), time.time()
        asked_first = send(run, first)
        ack_cpu_s = cpu_seconds(bot.pid) - cpu_before  # the burst's acks (and the first answers' start)
        first_done = wait_until_settled(run, [k for k, _, _ in first], args.timeout_s)
        clicks, better_users = votes_and_better_answers(run, [k for k, _, _ in first], args.better_share)
        second = questions(run, 2)
        mixed = send(run, clicks + second)  # votes while the second wave is being answered
        better_sent = submit_better_answers(run, better_users) if better_users else []
        second_keys = {k for k, _, _ in second}
        asked_second = [s for s in mixed if s.key in second_keys]
        voted = [s for s in mixed if s.key not in second_keys and not s.key.endswith(":better")]
        second_done = wait_until_settled(run, sorted(second_keys), args.timeout_s)
        time.sleep(2)  # confirmations and the last updates
        asked = asked_first + asked_second
        visible, words = reply_times(run, asked)
        result = {
            "users": users, "mode": mode, "channels": args.channels, "bot_processes": process_count(args),
            "bot_answer_processes": args.answer_processes,
            "ack_questions_s": summary([s.latency_s for s in asked if s.latency_s is not None]),
            # the first burst alone: every question in the same instant, nothing else under way yet
            "ack_first_burst_s": summary([s.latency_s for s in asked_first if s.latency_s is not None]),
            **({"ack_do_nothing_server_s": harness_floor(users)} if mode == "http" else {}),
            "ack_votes_s": summary([s.latency_s for s in voted if s.latency_s is not None]),
            "acks_not_200": sum(s.status != 200 for s in asked + voted + better_sent),
            "bot_cpu_ms_per_question_in_burst": round(ack_cpu_s / users * 1000, 2),
            "bot_idle_cpu_ms_per_s": idle_cpu_ms_per_s,
            "first_visible_reply_s": summary(visible), "first_words_s": summary(words),
            "answers_per_minute": {
                "first_wave": round(users / (first_done - started) * 60, 1),
                "second_wave": round(users / (second_done - min(s.at for s in asked_second)) * 60, 1),
            },
            **accounting(run, asked, voted, [s for s in better_sent]),
            "updates_per_channel": updates_per_channel(stub),
            "bot_peak_rss_mb": round(peak_rss_mb(bot.pid), 1),
            "duration_s": round(time.time() - started, 1),
        }
    finally:
        bot.terminate()
        bot.wait(60)
        run.engine.dispose()
        stub.__exit__(None, None, None)
        if socket is not None:
            socket.__exit__(None, None, None)
    return result


# --- the models -----------------------------------------------------------------------------------


def start_standin(args) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([
        sys.executable, "-m", "bench.standin_model", "--port", str(port), "--concurrency", str(args.standin_concurrency),
        "--tokens", str(args.standin_tokens), "--delay-s", str(args.standin_delay_s)])
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{url}/v1/models", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("the stand-in model did not start")


def start_vllm(args, workdir: Path):
    from flywheel.settings import load_settings
    from serving.base_model import ensure_base_model
    from serving.engine import VLLMServer

    settings = load_settings(home=workdir / "vllm", vllm_port=free_port(), vllm_max_num_seqs=args.capacity,
                             **({"base_model_path": args.model_dir} if args.model_dir else {}))
    server = VLLMServer(settings, ensure_base_model(settings, progress=print))
    server.start()
    server.wait_ready(lambda msg: None)
    return server, server.url


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", default="100", help="Comma-separated numbers of simultaneous users.")
    parser.add_argument("--mode", default="http", help="Comma-separated: http, socket.")
    parser.add_argument("--model", choices=("standin", "vllm"), default="standin")
    parser.add_argument("--vllm-url", help="A running vLLM serving the model as 'base' (default: start one).")
    parser.add_argument("--model-dir", type=Path, help="Base model folder for a started vLLM.")
    parser.add_argument("--capacity", type=int, default=8,
                        help="Answers at once: the bot's workers and vLLM's --max-num-seqs (default 8).")
    parser.add_argument("--max-tokens", type=int, default=30, help="Most tokens per answer.")
    parser.add_argument("--stream-chunk-tokens", type=int, default=16,
                        help="Tokens in each streamed chunk the bot asks for (1: a chunk per token, as vLLM 0.26 sends).")
    parser.add_argument("--processes", default="0",
                        help="Comma-separated layouts of the bot's processes, each R or R+A: FLYWHEEL_BOT_PROCESSES R "
                        "(0: its default, one per core up to 8) and FLYWHEEL_BOT_ANSWER_PROCESSES A (receive and "
                        "answer processes apart; default 0: every process does both).")
    parser.add_argument("--channels", type=int, default=10, help="Channels the users are spread over.")
    parser.add_argument("--better-share", type=float, default=0.2, help="Share of voters who write a better answer.")
    parser.add_argument("--standin-concurrency", type=int, default=8)
    parser.add_argument("--standin-tokens", type=int, default=30)
    parser.add_argument("--standin-delay-s", type=float, default=0.04)
    parser.add_argument("--timeout-s", type=float, default=1800, help="Longest wait for one wave to be answered.")
    parser.add_argument("--out", type=Path, default=Path("bench-slack-load.json"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.model == "standin":
        args.capacity = args.standin_concurrency
    workdir = Path(tempfile.mkdtemp(prefix="slack-load-"))
    model, url = (start_standin(args) if args.model == "standin" else
                  (None, args.vllm_url.rstrip("/")) if args.vllm_url else start_vllm(args, workdir))
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "avx512_bf16": "avx512_bf16" in Path("/proc/cpuinfo").read_text()},
               "model": {"kind": args.model, "capacity": args.capacity, "max_tokens": args.max_tokens,
                         "stream_chunk_tokens": args.stream_chunk_tokens},
               "runs": []}
    try:
        results["model"]["answers_per_minute"] = round(model_answers_per_minute(
            url, 4 * args.capacity, args.capacity, args.max_tokens), 1)
        print(f"model alone: {results['model']['answers_per_minute']} answers/min at {args.capacity} at once")
        for mode, layout, users in itertools.product(args.mode.split(","), args.processes.split(","),
                                                     map(int, args.users.split(","))):
            receivers, _, answerers = layout.partition("+")
            args.bot_processes, args.answer_processes = int(receivers), int(answerers or 0)
            result = one_run(users, mode, args, url, workdir)
            results["runs"].append(result)
            print(json.dumps(result, indent=1))
            args.out.write_text(json.dumps(results, indent=1))
    finally:
        if isinstance(model, subprocess.Popen):
            model.terminate()
        elif model is not None:
            model.stop()
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()
