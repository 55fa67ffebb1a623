"""The bot's text handling: context fitting, streaming within Slack's size limits and pace, PII redaction,
the rate limit."""

from __future__ import annotations

import time

import pytest
from slack_sdk import WebClient
from slack_stub import SlackStub
from slack_support import TOKEN

from bot import blocks
from bot.answering import CHARS_PER_TOKEN, clean_text, estimate_tokens, fit_to_context
from bot.ratelimit import RateLimiter
from storage.redaction import redact
from bot.streaming import AnswerStream, ChannelPacer, EditedMessages, SlackStream


def turn(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def test_context_drops_the_oldest_turns_first_and_keeps_the_question():
    old = [turn("user", "a" * 300), turn("assistant", "b" * 300), turn("user", "c" * 300), turn("assistant", "d" * 300)]
    question = turn("user", "and now?")
    budget = sum(estimate_tokens(m["content"]) for m in old[2:] + [question])
    assert fit_to_context(old + [question], budget) == old[2:] + [question]
    # One token short: the kept part may not start with the assistant, so the whole exchange goes.
    assert fit_to_context(old + [question], budget - 1) == [question]
    assert fit_to_context(old + [question], 10_000) == old + [question]


def test_a_question_longer_than_the_context_is_cut_not_dropped():
    [kept] = fit_to_context([turn("user", "x" * 10_000)], 100)
    assert 0 < len(kept["content"]) <= 100 * CHARS_PER_TOKEN


def test_slack_markup_becomes_plain_text():
    assert clean_text("<@U0BOT> is 1 &lt; 2 &amp;&amp; <@U0ALICE> right?", "U0BOT") == "is 1 < 2 && <@U0ALICE> right?"


def answer_stream(kind: str, client: WebClient) -> AnswerStream:
    """An answer for thread 1.0 of C1: streamed by Slack, posted and edited as it grows, or posted whole."""
    metadata, pacer = blocks.answer_metadata(7), ChannelPacer(0)
    if kind == "streamed":
        return AnswerStream(SlackStream(client, "C1", "1.0", metadata, "U1", "T1"), "C1", pacer)
    edited = EditedMessages(client, "C1", "1.0", metadata, replace_ts=None)
    return AnswerStream(edited, "C1", pacer, stream=kind == "edited")


@pytest.mark.parametrize("kind", ["streamed", "edited", "whole"])
def test_long_answers_are_split_within_slack_limits_and_the_last_message_has_the_buttons(kind):
    paragraphs = [f"Paragraph {i}. " + "word " * 500 for i in range(12)]  # about 30,000 characters
    text = "\n\n".join(paragraphs)
    with SlackStub(TOKEN) as slack:
        stream = answer_stream(kind, WebClient(token=TOKEN, base_url=slack.url))
        for start in range(0, len(text), 750):  # as the model writes it, cut anywhere
            stream.write(text[start:start + 750])
        last_ts = stream.finish(blocks.feedback_blocks(7, "v3"))
    messages = slack.messages
    assert len(messages) == 3 and last_ts == messages[-1]["ts"]
    for message in messages:
        assert len(message["text"]) <= blocks.MESSAGE_CHARS and message["thread_ts"] == "1.0"
        assert message["metadata"] == blocks.answer_metadata(7)
    assert [any(b["type"] == "context_actions" for b in m["blocks"]) for m in messages] == [False, False, True]
    assert " ".join(m["text"] for m in messages).split() == text.split()  # nothing lost at the cuts
    if kind == "whole":
        assert [call.method for call in slack.calls] == ["chat.postMessage"] * 3


class FakeTime:
    """A clock that only moves when told to, or when someone sleeps."""

    def __init__(self):
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_streamed_answer_is_paced_and_reads_as_the_stripped_text():
    time_ = FakeTime()
    arrivals = [(0.0, "\nThe"), (0.4, " capital"), (0.9, " of"), (1.2, " France"), (1.5, " is Paris.  \n")]
    with SlackStub(TOKEN) as slack:
        client = WebClient(token=TOKEN, base_url=slack.url)
        pacer = ChannelPacer(1.0, clock=lambda: time_.now, sleep=time_.sleep)
        stream = AnswerStream(SlackStream(client, "C1", "1.0", {}, "U1", "T1"), "C1", pacer)
        for at, piece in arrivals:
            time_.now = at
            stream.write(piece)
        stream.finish(blocks.feedback_blocks(7, "v3"))
    calls = [(c.method, c.params.get("markdown_text")) for c in slack.calls]
    assert calls == [
        ("chat.startStream", "The"),  # at once
        ("chat.appendStream", " capital of France"),  # at 1.2 s: not before a second had passed
        ("chat.stopStream", " is Paris."),  # the rest, with the buttons, at the channel's next turn
    ]
    assert time_.now == 2.2  # the finish waited for the channel's next turn
    assert slack.messages[0]["text"] == "".join(piece for _, piece in arrivals).strip()


def test_answers_in_one_channel_share_its_pace_and_a_turn_starts_an_interval_after_the_last_write():
    time_ = FakeTime()
    pacer = ChannelPacer(1.0, clock=lambda: time_.now, sleep=time_.sleep)
    with pacer.turn("C1", wait=False) as mine:
        assert mine
        time_.now = 0.5  # the write takes half a second
    with pacer.turn("C1", wait=False) as mine:
        assert not mine  # another answer in C1 must wait, and is skipped
    with pacer.turn("C2", wait=False) as mine:
        assert mine  # other channels have their own pace
    with pacer.turn("C1") as mine:  # a finished answer waits for its turn
        assert mine and time_.now == 1.5  # an interval after the slow write returned, not after it started
    with pacer.turn("C1") as mine:
        assert time_.now == 2.5


def test_an_answers_first_words_take_the_channels_next_turn_before_updates_of_answers_under_way():
    time_ = FakeTime()
    pacer = ChannelPacer(1.0, clock=lambda: time_.now, sleep=time_.sleep)
    with pacer.turn("C1", wait=False) as mine:
        assert mine  # answer A's update at 0 s
    time_.now = 0.5
    with pacer.turn("C1", wait=False, first_words=True) as mine:
        assert not mine  # answer B's first words: the turn is not free yet; B claims the next one
    time_.now = 1.0
    with pacer.turn("C1", wait=False) as mine:
        assert not mine  # A tries first when the turn frees, and leaves it to B
    with pacer.turn("C1", wait=False, first_words=True) as mine:
        assert mine
    time_.now = 2.0
    with pacer.turn("C1", wait=False) as mine:
        assert mine  # B has started: A's updates go on, one a turn
    time_.now = 3.0
    with pacer.turn("C1", wait=False, first_words=True) as mine:
        assert mine  # free turn
    time_.now = 3.5
    with pacer.turn("C1", wait=False, first_words=True) as mine:
        assert not mine  # C claims at 3.5 ...
    time_.now = 5.0
    with pacer.turn("C1", wait=False) as mine:
        assert mine  # ... and stopped trying (finished another way): the claim lapsed an interval later


def test_a_write_waiting_for_its_turn_lets_another_answers_first_words_go_first():
    # A finished answer's last write waits for the channel's turn while answer B, which has shown nothing,
    # tries to show its first words on each of its tokens: B's words take the turn, A's last write the next.
    time_, writes, b_started = FakeTime(), [], []

    def sleep_while_b_writes(seconds: float) -> None:
        time_.sleep(seconds)
        with pacer.turn("C1", wait=False, first_words=not b_started) as mine:  # B's next token
            if mine:
                writes.append(("B", time_.now))
                b_started.append(True)

    pacer = ChannelPacer(1.0, clock=lambda: time_.now, sleep=sleep_while_b_writes)
    with pacer.turn("C1", wait=False, first_words=True) as mine:
        writes.append(("A", time_.now))
    time_.now = 0.5
    with pacer.turn("C1", wait=False, first_words=True) as mine:
        assert not mine  # B's first token: the turn is A's until 1.0; B claims the next one
    time_.now = 0.8
    with pacer.turn("C1"):  # A is finished: its last write waits for the turn
        writes.append(("A's last", time_.now))
    # B's update at 2.0 skipped the turn A's last write waited for
    assert writes == [("A", 0.0), ("B", 1.0), ("A's last", 2.0)]


def test_a_write_waiting_for_its_turn_waits_for_claimed_first_words_only_until_the_claim_lapses():
    time_ = FakeTime()
    pacer = ChannelPacer(1.0, clock=lambda: time_.now, sleep=time_.sleep)
    with pacer.turn("C1", wait=False) as mine:
        assert mine  # A at 0
    time_.now = 0.5
    with pacer.turn("C1", wait=False, first_words=True) as mine:
        assert not mine  # B claims the turn at 1.0 until 1.5, then tries no more (its model failed, say)
    time_.now = 0.8
    with pacer.turn("C1") as mine:
        assert mine and time_.now == 1.5
    time_.now = 2.5
    with pacer.turn("C1", wait=False, first_words=True) as mine:
        assert mine  # a finished answer that showed nothing is first words too: it goes at once
        time_.now = 2.6
    time_.now = 2.7
    with pacer.turn("C1", wait=False, first_words=True):
        pass  # C claims 3.6 .. 3.7
    with pacer.turn("C1", first_words=True) as mine:
        assert mine and time_.now == 3.6  # waiting first words do not defer to other first words


def test_redaction_takes_out_emails_phones_and_keys_but_not_dates_or_versions():
    text = (
        "Write to jane.doe@example.com or +49 (30) 1234-5678; my token is xoxb-1234567890-abcdefghij "
        "and the key sk-proj_ABCDEFGHIJKLMNOP1234, AWS AKIAABCDEFGHIJKLMNOP. Released 2024-05-01 as v1.2.3."
    )
    assert redact(text) == (
        "Write to [EMAIL] or [PHONE]; my token is [TOKEN] "
        "and the key [TOKEN], AWS [TOKEN]. Released 2024-05-01 as v1.2.3."
    )


def test_rate_limit_per_user_in_a_sliding_minute():
    now = [0.0]
    limiter = RateLimiter(per_minute=2, clock=lambda: now[0])
    assert [limiter.allow("U1") for _ in range(3)] == [True, True, False]
    assert limiter.allow("U2")  # per user
    now[0] = 60.5
    assert limiter.allow("U1")
