"""The bot's text handling: context fitting, Slack's size limits, PII redaction, the rate limit."""

from __future__ import annotations

from slack_sdk import WebClient
from slack_stub import SlackStub
from test_bot import TOKEN

from bot import blocks
from bot.answering import CHARS_PER_TOKEN, clean_text, estimate_tokens, fit_to_context, post_answer
from bot.ratelimit import Decision, RateLimiter
from bot.redaction import redact


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


def test_long_answers_are_split_within_slack_limits_and_the_last_message_has_the_buttons():
    paragraphs = [f"Paragraph {i}. " + "word " * 500 for i in range(12)]  # about 30,000 characters
    text = "\n\n".join(paragraphs)
    with SlackStub(TOKEN) as slack:
        client = WebClient(token=TOKEN, base_url=slack.url)
        last_ts = post_answer(client, "C1", "1.0", text, 7, "v3")
        posts = [call.params for call in slack.calls_to("chat.postMessage")]
    assert len(posts) == 3 and last_ts == slack.messages[-1]["ts"]
    for post in posts:
        markdown = [b["text"] for b in post["blocks"] if b["type"] == "markdown"]
        assert sum(map(len, markdown)) <= blocks.MESSAGE_CHARS and post["thread_ts"] == "1.0"
        assert post["metadata"]["event_payload"] == {"interaction_id": 7}
    assert [any(b["type"] == "context_actions" for b in p["blocks"]) for p in posts] == [False, False, True]
    rejoined = " ".join(" ".join(b["text"] for b in p["blocks"] if b["type"] == "markdown") for p in posts)
    assert rejoined.split() == text.split()  # nothing lost at the cuts


def test_redaction_takes_out_emails_phones_and_keys_but_not_dates_or_versions():
    text = (
        "Write to jane.doe@example.com or +49 (30) 1234-5678; my token is xoxb-1234567890-abcdefghij "
        "and the key sk-proj_ABCDEFGHIJKLMNOP1234, AWS AKIAABCDEFGHIJKLMNOP. Released 2024-05-01 as v1.2.3."
    )
    assert redact(text) == (
        "Write to [EMAIL] or [PHONE]; my token is [TOKEN] "
        "and the key [TOKEN], AWS [TOKEN]. Released 2024-05-01 as v1.2.3."
    )


def test_rate_limit_per_user_in_a_sliding_minute_and_redeliveries_count_once():
    now = [0.0]
    limiter = RateLimiter(per_minute=2, clock=lambda: now[0])
    assert [limiter.check("U1", f"e{i}") for i in range(3)] == [Decision.allow, Decision.allow, Decision.deny]
    assert limiter.check("U2", "e9") is Decision.allow  # per user
    assert limiter.check("U1", "e0") is Decision.seen  # a Slack retry of a counted event
    now[0] = 60.5
    assert limiter.check("U1", "e3") is Decision.allow
