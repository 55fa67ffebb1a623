"""The bell between bot processes (bot/channel_shares.py): a stored question wakes the process that answers its
channel, and only that one; a second bot of the same home cannot claim the same channels. Real sockets of
Linux's abstract namespace, as between the bot's processes."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from bot.channel_shares import ChannelShare, ChannelsTaken, QuestionBell, claim_channels, owner_of

CHANNELS = [f"C0{n:04d}" for n in range(40)]


def waited(door, timeout_s: float) -> float:
    started = time.monotonic()
    door.wait(timeout_s)
    return time.monotonic() - started


def ring_from_another_process(home: str, shares: int, channel: str) -> None:
    QuestionBell(Path(home), shares).ring(channel)


def test_every_channel_has_one_owner_and_the_shares_split_the_channels():
    owners = [[ChannelShare(k, 3).owns(channel) for k in range(3)] for channel in CHANNELS]
    assert all(sum(row) == 1 for row in owners)
    assert all(any(row[k] for row in owners) for k in range(3))  # 40 channels reach every share
    assert {owner_of(channel, 1) for channel in CHANNELS} == {0}
    with pytest.raises(ValueError, match="not a share"):
        ChannelShare(3, 3)


def test_a_question_stored_in_another_process_wakes_its_channels_owner_and_nobody_else(tmp_path):
    bell = QuestionBell(tmp_path, 2)
    doors = [bell.door(ChannelShare(k, 2)) for k in range(2)]
    channel = CHANNELS[0]
    owner = owner_of(channel, 2)
    try:
        process = multiprocessing.get_context("spawn").Process(
            target=ring_from_another_process, args=(str(tmp_path), 2, channel))
        process.start()
        assert waited(doors[owner], 60) < 30  # rung (unrung, it waits the whole 60 s)
        process.join()
        assert waited(doors[1 - owner], 0.3) >= 0.3  # the other share was not rung

        for _ in range(500):  # a burst rings far more often than the socket queues: extra rings are dropped
            bell.ring(channel)
        assert waited(doors[owner], 60) < 30
        assert waited(doors[owner], 0.3) >= 0.3  # one read takes every ring that waited
    finally:
        for door in doors:
            door.close()
        bell.close()


def test_a_second_bot_of_the_same_home_cannot_claim_its_channels_until_the_first_stops(tmp_path):
    claim = claim_channels(tmp_path)
    with pytest.raises(ChannelsTaken, match="another bot of this FLYWHEEL_HOME is running"):
        claim_channels(tmp_path)
    claim_channels(tmp_path / "other").close()  # another home is another bot
    claim.close()
    claim_channels(tmp_path).close()  # the first one stopped: the channels are free again
