"""Acks first: while a burst of requests is being acknowledged, work that can wait pauses (bounded), and
goes on as soon as the burst is over. A real Bolt app, with a listener that acks when the test says so."""

from __future__ import annotations

import json
import threading
import time

from slack_bolt import App, BoltRequest

from bot.ack_priority import AckPriority


def held_app(release: threading.Event) -> App:
    app = App(token="xoxb-test", signing_secret="unused", token_verification_enabled=False,
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


def test_waiting_work_goes_on_when_the_burst_is_acked_and_at_once_below_a_burst():
    release = threading.Event()
    app, acks = held_app(release), AckPriority(burst=2, max_wait_s=20)
    acks.watch(app)
    threads = dispatch_in_threads(app, 2)
    wait_for_acking(acks, 2)
    assert timed_yield(acks) < 0.5  # two at once is not a burst
    threads += dispatch_in_threads(app, 3)
    wait_for_acking(acks, 5)
    waited: list[float] = []
    waiter = threading.Thread(target=lambda: waited.append(timed_yield(acks)))
    waiter.start()
    time.sleep(1.0)
    assert waiter.is_alive() and not waited  # paused while five are being acked
    release.set()
    waiter.join(10)
    for thread in threads:
        thread.join(10)
    assert 1.0 <= waited[0] < 5 and acks.acking == 0


def test_a_burst_that_lasts_pauses_waiting_work_for_at_most_max_wait():
    release = threading.Event()
    app, acks = held_app(release), AckPriority(burst=1, max_wait_s=0.3)
    acks.watch(app)
    threads = dispatch_in_threads(app, 3)
    wait_for_acking(acks, 3)
    try:
        assert 0.3 <= timed_yield(acks) < 3
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
