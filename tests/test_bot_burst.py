"""A burst, as a team meets it: 50 people mention the bot in the same instant (HTTP mode, correctly signed, in
Slack's payload shapes), then vote while the next 50 questions are being answered. Every question acked is
stored and answered exactly once, every vote acked is stored, and a full queue refuses with a notice instead of
dropping anyone. The real Bolt app on its production server, the real vLLM, the real database."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from slack_stub import BOT_USER_ID, RunningBot, SlackStub, app_mention, block_actions, event_callback
from slack_support import TOKEN, bot_settings, button, eventually, posted, rows, thumb

from bot import blocks
from storage.models import Feedback, Interaction, InteractionStatus

pytestmark = pytest.mark.vllm
USERS, WORKERS, CHANNELS = 50, 8, 25  # two questions a channel: Slack allows one write a second in each


def at_once(send, payloads: list) -> list:
    """Send every payload from its own thread, all released at the same instant."""
    start = threading.Barrier(len(payloads))

    def one(payload):
        start.wait()
        return send(payload)

    with ThreadPoolExecutor(len(payloads)) as pool:
        return list(pool.map(one, payloads))


def mentions(slack: SlackStub, wave: int, users: int) -> list[dict]:
    """One question per user, each in its own thread of one of the channels."""
    events = []
    for n in range(users):
        channel = f"C0BURST{n % CHANNELS}"
        message = slack.user_message(channel, f"U0W{wave}N{n:03d}", f"<@{BOT_USER_ID}> What is {n} plus {wave}?")
        events.append(event_callback(app_mention(message, channel)))
    return events


def answered(bot: RunningBot, slack: SlackStub, threads: set[str]) -> dict[str, list[dict]]:
    """Once every question of `threads` is answered: thread -> its finished answers in Slack."""
    eventually(lambda: sum(i.status is InteractionStatus.ok and bool(i.message_ts)
                           for i in rows(bot, Interaction) if i.question_ts in threads) == len(threads), timeout=600)
    return {thread: messages for thread, messages in slack.answers_by_thread().items() if thread in threads}


@pytest.fixture
def slack():
    with SlackStub(TOKEN) as stub:
        yield stub


def test_fifty_mentions_at_once_are_all_stored_and_answered_once_and_votes_during_answers_count(
    tmp_path, database_url, base_model_dir, slack, vllm_server
):
    settings = bot_settings(tmp_path, database_url, base_model_dir, slack, vllm_server.url, max_answer_tokens=8,
                            answer_workers=WORKERS, rate_limit_per_minute=1000)
    with RunningBot(settings) as bot:
        first = mentions(slack, 1, USERS)
        responses = at_once(bot.send_event, first)
        assert [r.status_code for r in responses] == [200] * USERS  # how fast: bench/slack_load.py
        threads = {event["event"]["ts"] for event in first}
        assert {i.question_ts for i in rows(bot, Interaction)} == threads  # stored before they were acked

        # Those who could not be answered at once were told where they are in line, in their thread, within
        # seconds (the notices wait for the burst's acks: bot/ack_priority.py).
        enough = USERS - 2 * WORKERS
        notices = eventually(lambda: found if len(found := posted(slack, "chat.postEphemeral")) >= enough else None)
        assert all(n["thread_ts"] in threads and "I'll answer in this thread" in n["text"] for n in notices)
        first_answers = answered(bot, slack, threads)
        assert sorted(map(len, first_answers.values())) == [1] * USERS  # each once

        # Everyone votes on their answer while a second wave of questions is being answered.
        by_user = {e["event"]["user"]: first_answers[e["event"]["ts"]][0] for e in first}
        clicks = [block_actions(user, answer["channel"], answer, thumb(answer, "down" if n % 2 else "up"))
                  for n, (user, answer) in enumerate(by_user.items())]
        second = mentions(slack, 2, USERS)
        mixed = at_once(lambda p: bot.send_interaction(p) if p["type"] == "block_actions" else bot.send_event(p),
                        clicks + second)
        assert [r.status_code for r in mixed] == [200] * (2 * USERS)
        votes = {(f.user_id, f.vote.value) for f in rows(bot, Feedback)}
        assert votes == {(user, "down" if n % 2 else "up") for n, user in enumerate(by_user)}  # none lost
        second_answers = answered(bot, slack, {event["event"]["ts"] for event in second})
        assert sorted(map(len, second_answers.values())) == [1] * USERS
        assert len(rows(bot, Interaction)) == 2 * USERS


def test_beyond_the_queue_bound_the_asker_is_told_and_the_question_kept_for_try_again(
    tmp_path, sqlite_url, base_model_dir, slack, vllm_server
):
    settings = bot_settings(tmp_path, sqlite_url, base_model_dir, slack, vllm_server.url, max_answer_tokens=16,
                            answer_workers=1, answer_queue_size=3, rate_limit_per_minute=1000)
    with RunningBot(settings) as bot:
        events = mentions(slack, 1, 10)
        assert [r.status_code for r in at_once(bot.send_event, events)] == [200] * 10
        threads = {e["event"]["ts"] for e in events}
        eventually(lambda: all(i.status is not InteractionStatus.pending and (i.status is InteractionStatus.failed
                                                                             or i.message_ts)
                               for i in rows(bot, Interaction)) and len(rows(bot, Interaction)) == 10, timeout=300)
        refused = [i for i in rows(bot, Interaction) if i.status is InteractionStatus.failed]
        assert refused and all(i.error.startswith("busy:") for i in refused)
        apologies = {m["thread_ts"]: m for m in slack.messages
                     if m.get("thread_ts") in threads and "too many questions" in m.get("text", "")}
        assert set(apologies) == {i.question_ts for i in refused}  # each refused asker was told, in their thread
        assert len(slack.answers_by_thread()) + len(refused) == 10  # nobody dropped silently

        # Later, Try again answers the kept question in place of the notice.
        kept = refused[0]
        notice = apologies[kept.question_ts]
        bot.send_interaction(block_actions(kept.user_id, notice["channel"], notice,
                                           button(notice, blocks.RETRY_ACTION)))
        eventually(lambda: next(i for i in rows(bot, Interaction) if i.id == kept.id).status
                   is InteractionStatus.ok, timeout=120)
        assert any(u["ts"] == notice["ts"] for u in posted(slack, "chat.update"))


def test_a_worker_asks_the_next_question_while_a_finished_answer_waits_for_its_channels_turn(
    tmp_path, sqlite_url, base_model_dir, slack, vllm_server
):
    # One worker, and Slack's pace set to one write every 3 s a channel: the first answer's last write waits
    # about 3 s for its channel's turn after its first words. The worker meanwhile answers the second
    # question, in another channel, instead of waiting with it.
    settings = bot_settings(tmp_path, sqlite_url, base_model_dir, slack, vllm_server.url, max_answer_tokens=8,
                            answer_workers=1, stream_interval_s=3.0, rate_limit_per_minute=1000)
    with RunningBot(settings) as bot:
        events = mentions(slack, 1, 2)  # two channels
        assert [r.status_code for r in at_once(bot.send_event, events)] == [200, 200]
        answered(bot, slack, {e["event"]["ts"] for e in events})
    first_words = {call.params["channel"]: call.at for call in slack.calls_to("chat.startStream")}
    last_writes = {call.params["channel"]: call.at for call in slack.calls_to("chat.stopStream")}
    first, second = sorted(first_words, key=first_words.get)
    assert last_writes[first] - first_words[first] >= 2.5  # the pace held the first answer's last write
    assert first_words[second] < last_writes[first]
