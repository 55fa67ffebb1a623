"""Hostile input at HTTP mode's endpoints: malformed bodies, wrong content types, oversized bodies, unknown
payload types, forged or stale signatures, and a fuzz of random and mutated Slack payloads. Every answer is a
4xx (never a 5xx), nothing unsigned is stored or reaches Slack, and the log holds no traceback."""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from slack_stub import (
    BOT_USER_ID,
    RunningBot,
    SlackStub,
    app_mention,
    block_actions,
    event_callback,
    signed_headers,
    view_submission,
)
from slack_support import ALICE, CHANNEL, SECRET, TOKEN, bot_settings, rows
from test_bot import down_url
from test_bot_faults import seed_answers

from bot import blocks
from bot.http_server import MAX_BODY_BYTES
from storage.models import Feedback, Interaction

JSON, FORM = "application/json", "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, migrated_template, base_model_dir):
    """One bot for the module (the model is down: answers are apologies), with one answered question."""
    import shutil

    tmp = tmp_path_factory.mktemp("hostile")
    shutil.copyfile(migrated_template("sqlite"), tmp / "flywheel.db")
    url = f"sqlite:///{tmp / 'flywheel.db'}"
    [answer] = seed_answers(url, 1)
    with SlackStub(TOKEN) as slack, RunningBot(bot_settings(tmp, url, base_model_dir, slack, down_url())) as bot:
        with httpx.Client(timeout=30) as client:
            yield bot, slack, client, answer


def post(bot: RunningBot, client: httpx.Client, body: bytes, content_type: str, *, signed: str = "good",
         path: str = "/slack/events") -> httpx.Response:
    headers = {"Content-Type": content_type}
    if signed != "none":
        secret = SECRET if signed in ("good", "stale") else "not-the-secret"
        stamp = int(time.time()) - (6 * 60 if signed == "stale" else 0)
        headers = {**signed_headers(secret, body.decode("utf-8", "replace"), content_type, timestamp=stamp),
                   **headers}
    return client.post(bot.url.replace("/slack/events", path), content=body, headers=headers)


def stored(bot: RunningBot) -> tuple[int, int]:
    return len(rows(bot, Interaction)), len(rows(bot, Feedback))


def mention_body() -> dict:
    message = {"type": "message", "user": ALICE, "text": f"<@{BOT_USER_ID}> hello", "ts": f"{time.time():.6f}"}
    return event_callback(app_mention(message, CHANNEL))


def test_each_kind_of_bad_request_gets_its_4xx_and_no_traceback(hostile, caplog):
    bot, slack, client, answer = hostile
    caplog.set_level(logging.DEBUG)
    url = bot.url
    assert client.get(url.replace("/slack/events", "/healthz")).status_code == 200
    assert client.post(url.replace("/slack/events", "/healthz")).status_code == 405
    assert client.get(url).status_code == 405
    assert post(bot, client, b"{}", JSON, path="/admin").status_code == 404
    cases = [
        (b'{"type": "event_callback", "event": ', JSON, 400),  # truncated JSON
        (b"[1, 2, 3]", JSON, 400),  # not an object
        (b"\xff\xfe\x00garbage", JSON, 401),  # not UTF-8: no valid signature can cover it
        (b"", JSON, 400),
        (urlencode({"payload": "{not json"}).encode(), FORM, 400),
        (urlencode({"payload": "[]"}).encode(), FORM, 400),
        (b"<xml/>", "text/xml", 415),
        (b"a=1", "multipart/form-data; boundary=x", 415),
        (b"x" * (MAX_BODY_BYTES + 1), JSON, 413),
        (json.dumps({"type": "no_such_payload_type"}).encode(), JSON, 404),  # Bolt: unhandled
        (json.dumps({**mention_body(), "event": "not an object"}).encode(), JSON, 400),
    ]
    bad_vote = block_actions(ALICE, CHANNEL, answer, {"type": "button", "action_id": "vote", "block_id": "b",
                                                      "value": "up:not-a-number"})
    cases.append((urlencode({"payload": json.dumps(bad_vote)}).encode(), FORM, 400))
    for body, content_type, expected in cases:
        response = post(bot, client, body, content_type)
        assert response.status_code == expected, (body[:60], response.status_code, response.text)
    assert "Traceback" not in caplog.text and not any(r.exc_info for r in caplog.records)


def test_nothing_unsigned_is_stored_or_reaches_slack(hostile):
    bot, slack, client, answer = hostile
    before, calls = stored(bot), len(slack.calls)
    vote = block_actions(ALICE, CHANNEL, answer, {"type": "button", "action_id": "vote", "block_id": "b",
                                                  "value": answer["blocks"][0]["elements"][0]["negative_button"]["value"]})
    for signed in ("none", "forged", "stale"):
        assert post(bot, client, json.dumps(mention_body()).encode(), JSON, signed=signed).status_code == 401
        body = urlencode({"payload": json.dumps(vote)}).encode()
        assert post(bot, client, body, FORM, signed=signed).status_code == 401
    time.sleep(0.5)
    assert stored(bot) == before and len(slack.calls) == calls


# --- fuzz -------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)


@st.composite
def mutated(draw, payload: dict) -> dict:
    """A real payload with a few of its values replaced by anything, or removed."""
    payload = json.loads(json.dumps(payload))
    for _ in range(draw(st.integers(1, 3))):
        node = payload
        while isinstance(node, dict) and node and draw(st.booleans()):
            child = node[draw(st.sampled_from(sorted(node)))]
            if not isinstance(child, dict) or not child:
                break
            node = child
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
            if draw(st.booleans()):
                del node[key]
            else:
                node[key] = draw(json_values)
    return payload


def payloads(answer: dict):
    vote = block_actions(ALICE, CHANNEL, answer, {"type": "feedback_buttons", "action_id": "vote", "block_id": "b",
                                                  "value": "down:1"})
    modal = blocks.better_answer_modal(1, "answer 0", CHANNEL, answer["thread_ts"])
    better = view_submission(ALICE, modal, {blocks.BETTER_BLOCK: {blocks.BETTER_INPUT: {"value": "Run `ls`."}}})
    return st.one_of(mutated(mention_body()), mutated(vote), mutated(better),
                     st.dictionaries(st.text(max_size=10), json_values))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_payloads_never_get_a_5xx_and_unsigned_ones_change_nothing(hostile, caplog, data):
    bot, slack, client, answer = hostile
    payload = data.draw(payloads(answer))
    as_form = data.draw(st.booleans())
    body = urlencode({"payload": json.dumps(payload)}) if as_form else json.dumps(payload)
    signed = data.draw(st.sampled_from(["good", "good", "none", "forged", "stale"]))
    before = stored(bot)
    response = post(bot, client, body.encode(), FORM if as_form else JSON, signed=signed)
    assert response.status_code < 500, response.text
    if signed != "good":
        assert response.status_code == 401 and stored(bot) == before
    assert "Traceback" not in caplog.text
