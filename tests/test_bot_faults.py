"""Faults a team meets in its first month, with the real parts: vLLM killed in the middle of a streamed answer,
PostgreSQL restarted during a burst of questions and votes, the bot killed right after acking a burst. What
the user sees, and what is kept."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest
from postgres_server import PrivatePostgres
from slack_stub import BOT_USER_ID, RunningBot, SlackStub, app_mention, block_actions, event_callback, signed_headers
from slack_support import ALICE, CHANNEL, SECRET, TOKEN, bot_settings, button, eventually, posted, rows, thumb
from sqlalchemy import select
from test_bot import down_url
from test_bot_burst import at_once, mentions
from test_bot_cli import bot_process, wait_until_listening
from vllm_fixture import free_port

from bot import blocks
from storage.db import make_engine, session_scope, upgrade
from storage.interactions import complete_interaction, get_or_create_conversation, start_interaction
from storage.models import Feedback, Interaction, InteractionStatus


@pytest.fixture
def slack():
    with SlackStub(TOKEN) as stub:
        yield stub


@pytest.mark.vllm
def test_vllm_killed_mid_answer_closes_the_stream_apologises_and_try_again_answers_after_the_restart(
    tmp_path, sqlite_url, base_model_dir, slack, vllm_server
):
    if vllm_server.supervisor is None:
        pytest.skip("FLYWHEEL_TEST_VLLM_URL points at a server this session does not supervise")
    supervisor, restarts = vllm_server.supervisor, vllm_server.supervisor.restarts
    settings = bot_settings(tmp_path, sqlite_url, base_model_dir, slack, vllm_server.url, max_answer_tokens=60)
    with RunningBot(settings) as bot:
        question = slack.user_message(CHANNEL, ALICE, f"<@{BOT_USER_ID}> Write a long story about a lighthouse "
                                                      "keeper, at least 300 words.")
        assert bot.send_event(event_callback(app_mention(question, CHANNEL))).status_code == 200
        slack.wait_for("chat.appendStream", 3)  # words are arriving in Slack
        os.kill(supervisor.server.process.pid, signal.SIGKILL)

        apology = eventually(lambda: next((m for m in slack.messages if "try again" in m.get("text", "")), None),
                             timeout=60)
        [stopped] = posted(slack, "chat.stopStream")  # the partial message was closed, without the answer's marks
        assert "metadata" not in stopped and not stopped.get("blocks")
        assert slack.answers_by_thread() == {}  # nothing in Slack reads as a finished answer
        [failed] = rows(bot, Interaction)
        assert failed.status is InteractionStatus.failed and "ModelUnavailable" in failed.error
        assert failed.answer == "" and failed.message_ts is None  # never stored as a complete answer

        eventually(lambda: supervisor.restarts > restarts, timeout=vllm_server.settings.vllm_startup_timeout_s)
        bot.send_interaction(block_actions(ALICE, CHANNEL, apology, button(apology, blocks.RETRY_ACTION)))
        [answered] = eventually(lambda: [i for i in rows(bot, Interaction)
                                         if i.status is InteractionStatus.ok and i.message_ts],
                                timeout=300)
    assert answered.id == failed.id and len(answered.answer) > 60
    assert slack.messages[-1]["ts"] == apology["ts"] == answered.message_ts  # answered in place of the apology


def seed_answers(url: str, count: int) -> list[dict]:
    """`count` answered questions, each as the bot posted it (with its thumbs) in its own thread."""
    engine = make_engine(url)
    messages = []
    with session_scope(engine) as session:
        for n in range(count):
            thread = f"1700000{n:03d}.000100"
            conversation = get_or_create_conversation(session, "slack", "T0FLYWHEEL", CHANNEL, thread)
            interaction = start_interaction(session, conversation, [{"role": "user", "content": f"question {n}"}])
            complete_interaction(session, interaction.id, answer=f"answer {n}", served_model="base",
                                 model_version_id=None, latency_ms=1.0)
            session.flush()
            messages.append({"type": "message", "ts": f"1700000{n:03d}.000200", "thread_ts": thread,
                             "text": f"answer {n}", "blocks": blocks.feedback_blocks(interaction.id, "base")})
    engine.dispose()
    return messages


def test_postgres_restarting_during_a_burst_loses_no_acknowledged_question_or_vote(tmp_path, base_model_dir, slack):
    server = PrivatePostgres()
    server.start()
    try:
        upgrade(server.url)
        answers = seed_answers(server.url, 40)
        settings = bot_settings(tmp_path, server.url, base_model_dir, slack, down_url(), rate_limit_per_minute=1000)
        with RunningBot(settings) as bot:
            questions = [event_callback(app_mention(
                slack.user_message(CHANNEL, f"U0Q{n:03d}", f"<@{BOT_USER_ID}> question {n} during the restart"),
                CHANNEL)) for n in range(40)]
            votes = [block_actions(f"U0V{n:03d}", CHANNEL, message, thumb(message, "up"))
                     for n, message in enumerate(answers)]
            requests = [(bot.send_event, q) for q in questions] + [(bot.send_interaction, v) for v in votes]
            window = []

            def restart() -> None:
                time.sleep(0.8)
                window.append(time.monotonic())
                server.restart()
                window.append(time.monotonic())

            def send(offset_s: float, request) -> tuple[float, object]:
                time.sleep(offset_s)
                return time.monotonic(), request[0](request[1])

            restarter = threading.Thread(target=restart)
            restarter.start()
            results = [None] * len(requests)
            senders = [threading.Thread(target=lambda i=i: results.__setitem__(i, send(3.0 * i / len(requests),
                                                                                        requests[i])))
                       for i in range(len(requests))]
            for thread in senders:
                thread.start()
            for thread in senders + [restarter]:
                thread.join()
            assert any(window[0] <= sent_at <= window[1] for sent_at, _ in results)  # the fault hit the burst

            acked = [request for request, (_, response) in zip(requests, results) if response.status_code == 200]
            refused = [request for request, (_, response) in zip(requests, results) if response.status_code != 200]
            assert all(response.status_code in (200, 500) for _, response in results)
            stored_events = {i.event_id for i in rows(bot, Interaction)}
            stored_votes = {f.user_id for f in rows(bot, Feedback)}
            for send_, payload in acked:  # acknowledged to Slack means in the database
                if payload.get("type") == "event_callback":
                    assert payload["event_id"] in stored_events
                else:
                    assert payload["user"]["id"] in stored_votes
            # Slack delivers an unacknowledged event again (a minute later): now it is stored too.
            for send_, payload in refused:
                if payload.get("type") == "event_callback":
                    assert send_(payload, headers={"X-Slack-Retry-Num": "1"}).status_code == 200
            assert {i.event_id for i in rows(bot, Interaction) if i.event_id} == {q["event_id"] for q in questions}
    finally:
        server.stop()


@pytest.mark.vllm
def test_a_bot_killed_right_after_acking_a_burst_answers_every_question_when_it_starts_again(
    tmp_path, sqlite_url, slack, vllm_server
):
    port = free_port()
    env = {"FLYWHEEL_BOT_MODE": "http", "FLYWHEEL_BOT_PORT": str(port), "FLYWHEEL_DATABASE_URL": sqlite_url,
           "FLYWHEEL_SLACK_API_URL": slack.url, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET,
           "FLYWHEEL_VLLM_URL": vllm_server.url, "FLYWHEEL_ANSWER_WORKERS": "1", "FLYWHEEL_MAX_ANSWER_TOKENS": "8",
           "FLYWHEEL_HOME": str(tmp_path / "home")}
    url = f"http://127.0.0.1:{port}/slack/events"

    def post(event: dict) -> httpx.Response:
        body = json.dumps(event)
        return httpx.post(url, content=body, headers=signed_headers(SECRET, body, "application/json"), timeout=30)

    first = bot_process(tmp_path, env)
    try:
        wait_until_listening(url, first)
        events = mentions(slack, 1, 10)
        assert [r.status_code for r in at_once(post, events)] == [200] * 10
    finally:
        first.kill()  # no goodbye: whatever it had in memory is gone
        first.wait()
    engine = make_engine(sqlite_url)
    with session_scope(engine) as session:
        waiting = session.scalars(select(Interaction).where(Interaction.status == InteractionStatus.pending)).all()
    assert len(waiting) >= 5  # most questions were acked and stored, but not answered yet

    second = bot_process(tmp_path, env)
    try:
        threads = {e["event"]["ts"] for e in events}

        def all_answered() -> bool:
            with session_scope(engine) as session:
                done = session.scalars(select(Interaction).where(Interaction.status == InteractionStatus.ok,
                                                                 Interaction.message_ts.is_not(None))).all()
            return {i.question_ts for i in done} == threads

        eventually(all_answered, timeout=300)
    finally:
        second.terminate()
        output = second.communicate(timeout=60)[0]
        engine.dispose()
    assert "resumed" in output
    assert sorted(len(slack.answers_by_thread()[thread]) for thread in threads) == [1] * 10
