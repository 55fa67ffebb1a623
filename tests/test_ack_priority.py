"""Acks first: while a burst of requests is being acknowledged, work that can wait pauses (bounded), and
goes on as soon as the burst is over. A real Bolt app (its Web API client on the local Slack stand-in, which
answers its auth.test), with a listener that acks when the test says so."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager

import pytest
from slack_bolt import App, BoltRequest
from slack_sdk import WebClient
from slack_support import eventually

from bot.ack_priority import BURST, AckPriority
from bot.channel_shares import ChannelShare
from bot.question_feed import QuestionFeed
from bot.services import Services
from bot.slack_client import slack_client
from bot.testing.slack_api import SlackStub
from flywheel.settings import Settings
from storage.db import session_scope
from storage.interactions import record_question

TOKEN = "xoxb-1-ack-priority-test"


@pytest.fixture(scope="module")
def slack():
    with SlackStub(TOKEN) as stub:
        yield stub


def held_app(release: threading.Event, slack: SlackStub) -> App:
    app = App(client=WebClient(token=TOKEN, base_url=slack.url), signing_secret="unused",
              request_verification_enabled=False, process_before_response=True)

    @app.event("app_mention")
    def held(ack):
        release.wait(30)
        ack()

    return app


def mention(n: int) -> BoltRequest:
    body = {"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": f"Ev{n}",
            "event": {"type": "app_mention", "user": "U1", "text": "hi", "ts": f"{n}.0", "channel": "C1"}}
    return BoltRequest(body=json.dumps(body), headers={"content-type": ["application/json"]})


def dispatch_in_threads(app: App, count: int) -> list[threading.Thread]:
    threads = [threading.Thread(target=app.dispatch, args=(mention(n),)) for n in range(count)]
    for thread in threads:
        thread.start()
    return threads


def timed_yield(acks: AckPriority) -> float:
    started = time.monotonic()
    acks.yield_to_acks()
    return time.monotonic() - started


def wait_for_acking(acks: AckPriority, count: int) -> None:
    deadline = time.monotonic() + 10
    while acks.acking < count:
        assert time.monotonic() < deadline, f"{acks.acking} of {count} requests reached the listener"
        time.sleep(0.01)


@contextmanager
def held_requests(acks: AckPriority, count: int, slack: SlackStub):
    """`count` requests held in a watched app's listener; yields a function that holds more. On leaving, all
    are acked and their threads joined."""
    release, threads = threading.Event(), []
    app = held_app(release, slack)
    acks.watch(app)

    def hold(more: int) -> None:
        threads.extend(dispatch_in_threads(app, more))
        wait_for_acking(acks, len(threads))

    try:
        hold(count)
        yield hold
    finally:
        release.set()
        for thread in threads:
            thread.join(10)


def test_waiting_work_goes_on_when_the_burst_is_acked_and_at_once_below_a_burst(slack):
    acks, waited = AckPriority(burst=2, max_wait_s=20), []
    waiter = threading.Thread(target=lambda: waited.append(timed_yield(acks)))
    with held_requests(acks, 2, slack) as hold:
        assert timed_yield(acks) < 0.5  # two at once is not a burst
        hold(3)
        waiter.start()
        time.sleep(1.0)
        assert waiter.is_alive() and not waited  # paused while five are being acked
    waiter.join(10)
    assert 1.0 <= waited[0] < 5 and acks.acking == 0


def test_a_burst_that_lasts_pauses_waiting_work_for_at_most_max_wait(slack):
    acks = AckPriority(burst=1, max_wait_s=0.3)
    with held_requests(acks, 3, slack):
        assert 0.3 <= timed_yield(acks) < 3


def test_the_question_feed_reads_rung_questions_once_a_burst_of_acks_is_over(slack, tmp_path, sqlite_url):
    """Rung by every question of a burst, the feed would read the database again and again beside the acks;
    what it puts in line would wait for the acks anyway."""
    settings = Settings(home=tmp_path, database_url=sqlite_url, slack_bot_token=TOKEN, slack_api_url=slack.url)
    services, in_line = Services.from_settings(settings), []
    services.start_answering(lambda job: in_line.append(job.interaction_id))
    services.feed = QuestionFeed(services, slack_client(settings), ChannelShare())
    services.feed.start()
    try:
        with held_requests(services.acks, BURST + 1, slack):
            with session_scope(services.engine) as session:
                asked = record_question(session, "slack", ("T1", "C1", "1.0"), [{"role": "user", "content": "hi"}],
                                        user_id="U1", event_id="Ev1", question_ts="1.0")
            services.question_stored("C1")
            time.sleep(0.5)
            assert in_line == []  # rung, but the burst's acks come first
        assert eventually(lambda: in_line == [asked])  # put in line once the burst is acked
    finally:
        services.close()
