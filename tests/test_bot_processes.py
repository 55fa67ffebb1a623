"""`flywheel bot` as several processes (FLYWHEEL_BOT_PROCESSES): in HTTP mode they accept from one shared
socket, in Socket Mode each holds a connection of its own; every process stores and acks what it receives and
answers the questions of its share of the channels, or (FLYWHEEL_BOT_ANSWER_PROCESSES) receiving and answering
run in processes apart. A burst at once is stored and answered exactly once,
whichever process received each question, and the parent serves the processes' metrics as one."""

from __future__ import annotations

import json

import httpx
import pytest
from slack_stub import SlackStub, signed_headers
from slack_support import TOKEN, eventually
from test_bot import SECRET
from test_bot_burst import at_once, mentions
from test_bot_cli import bot_process, wait_until_listening
from test_bot_socket_mode import APP_TOKEN, stored, wait_until
from vllm_fixture import free_port

from bot.testing.socket_mode import SocketModeStub
from storage.models import Interaction, InteractionStatus

pytestmark = pytest.mark.vllm
PROCESSES, USERS = 2, 50


def env(tmp_path, url: str, slack: SlackStub, vllm_url: str, **extra: str) -> dict[str, str]:
    return {"FLYWHEEL_DATABASE_URL": url, "FLYWHEEL_SLACK_API_URL": slack.url, "SLACK_BOT_TOKEN": TOKEN,
            "FLYWHEEL_VLLM_URL": vllm_url, "FLYWHEEL_HOME": str(tmp_path / "home"),
            "FLYWHEEL_BOT_PROCESSES": str(PROCESSES), "FLYWHEEL_MAX_ANSWER_TOKENS": "8",
            "FLYWHEEL_RATE_LIMIT_PER_MINUTE": "1000", "FLYWHEEL_ANSWER_WORKERS": "8", **extra}


def answered_once(url: str, slack: SlackStub, threads: set[str]) -> None:
    eventually(lambda: sum(i.status is InteractionStatus.ok and bool(i.message_ts)
                           for i in stored(url, Interaction)) == len(threads), timeout=600)
    answers = slack.answers_by_thread()
    assert {thread: len(answers.get(thread, [])) for thread in threads} == {thread: 1 for thread in threads}


def burst_stored_acked_and_answered_once(url: str, sqlite_url: str, slack: SlackStub) -> None:
    """USERS signed mentions sent over HTTP at once: every one acked 200, stored before its ack, answered once."""
    events = mentions(slack, 1, USERS)

    def send(payload: dict) -> int:
        body = json.dumps(payload)
        return httpx.post(url, content=body, headers=signed_headers(SECRET, body, "application/json"),
                          timeout=30).status_code

    assert at_once(send, events) == [200] * USERS
    threads = {e["event"]["ts"] for e in events}
    assert {i.question_ts for i in stored(sqlite_url, Interaction)} == threads  # stored before the acks
    answered_once(sqlite_url, slack, threads)


def metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


def test_http_burst_over_two_processes_is_stored_and_answered_once_and_metrics_add_up(
    tmp_path, sqlite_url, vllm_server
):
    port, metrics_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}/slack/events"
    with SlackStub(TOKEN) as slack:
        process = bot_process(tmp_path, env(tmp_path, sqlite_url, slack, vllm_server.url, FLYWHEEL_BOT_MODE="http",
                                            FLYWHEEL_BOT_PORT=str(port), SLACK_SIGNING_SECRET=SECRET,
                                            FLYWHEEL_BOT_METRICS_PORT=str(metrics_port)))
        try:
            wait_until_listening(url.replace("/slack/events", "/healthz"), process)
            burst_stored_acked_and_answered_once(url, sqlite_url, slack)
            scraped = eventually(lambda: text if metric(text := httpx.get(
                f"http://127.0.0.1:{metrics_port}/metrics").text, "flywheel_bot_answers_completed_total") == USERS
                else None)
            assert metric(scraped, "flywheel_bot_questions_total") == USERS
            assert metric(scraped, "flywheel_bot_ack_seconds_count") == USERS  # the acks of both processes
            assert metric(scraped, "flywheel_bot_answers_in_progress") == 0
        finally:
            process.terminate()
            output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert output.count("started bot") == PROCESSES and output.count("stopped") >= PROCESSES


def test_receive_processes_and_answer_processes_apart_answer_a_burst_once(tmp_path, sqlite_url, vllm_server):
    port = free_port()
    url = f"http://127.0.0.1:{port}/slack/events"
    with SlackStub(TOKEN) as slack:
        process = bot_process(tmp_path, env(tmp_path, sqlite_url, slack, vllm_server.url, FLYWHEEL_BOT_MODE="http",
                                            FLYWHEEL_BOT_PORT=str(port), SLACK_SIGNING_SECRET=SECRET,
                                            FLYWHEEL_BOT_ANSWER_PROCESSES="2"))
        try:
            wait_until_listening(url.replace("/slack/events", "/healthz"), process)
            burst_stored_acked_and_answered_once(url, sqlite_url, slack)
        finally:
            process.terminate()
            output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert output.count("started bot") == PROCESSES + 2
    # the receivers serve HTTP and answer nothing; each answer process answers its share and serves nothing
    assert output.count("bot.app: listening on port") == PROCESSES
    assert output.count("bot.app: answering the questions of channel share") == 2


@pytest.mark.parametrize("answer_processes", [0, 1])
def test_socket_mode_receiving_processes_each_hold_a_connection_and_every_question_is_answered_once(
    tmp_path, sqlite_url, vllm_server, answer_processes
):
    with SocketModeStub() as socket, SlackStub(TOKEN, app_token=APP_TOKEN, socket_url=socket.url) as slack:
        process = bot_process(tmp_path, env(tmp_path, sqlite_url, slack, vllm_server.url, FLYWHEEL_BOT_MODE="socket",
                                            SLACK_APP_TOKEN=APP_TOKEN,
                                            FLYWHEEL_BOT_ANSWER_PROCESSES=str(answer_processes)))
        try:
            wait_until(socket.connected, process)
            eventually(lambda: socket.connection_count == PROCESSES, timeout=60)
            events = mentions(slack, 1, 20)
            envelopes = [socket.send("events_api", event) for event in events]  # spread over both connections
            assert all(socket.wait_for_ack(envelope) == {"envelope_id": envelope} for envelope in envelopes)
            answered_once(sqlite_url, slack, {e["event"]["ts"] for e in events})
            assert socket.connection_count == PROCESSES  # an answer process holds no connection
        finally:
            process.terminate()
            output = process.communicate(timeout=60)[0]
    assert process.returncode == 0
    assert output.count("bot.app: answering the questions of channel share") == answer_processes
