"""An answer written into Slack while the model writes it.

Slack's own streaming for AI apps (chat.startStream / appendStream / stopStream) comes first: Slack
shows the text growing, with no "edited" marks, and stopStream puts the feedback controls and the
answer's metadata on the finished message. It needs the Agents & AI Apps feature (the manifest's
`assistant_view`, scope assistant:write), a thread and the person asking, which every answer has. Where
Slack refuses to start a stream (an app installed without that feature), and where the answer takes the
place of a message already posted (the "Try again" button: a stream is always a new message), the text
is posted once and then edited with chat.update.

Slack allows about one update per second per channel, and every answer being written in a channel shares
that: a `ChannelPacer` hands out the channel's turns. An update of an answer still being written goes out
only when the channel's turn is free now (its text waits for the next one); the last write of a message
waits for its turn. A message holds at most MESSAGE_CHARS of text: a longer answer continues in a new
message, and only the last one gets the controls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import blocks
from flywheel.settings import Settings

log = logging.getLogger(__name__)
Blocks = list[dict[str, Any]]
WORD_CHARS = 200  # longer than any word, shorter than a message
MAX_CHANNELS = 10_000  # channels the pacer remembers before it forgets those whose next turn has come


@dataclass
class _Turns:
    """One channel's turns."""

    lock: threading.Lock = field(default_factory=threading.Lock)  # held by the one write in its turn
    next_at: float = 0.0  # when the next turn starts
    claimed_until: float = 0.0  # an answer's first words claim the next free turn until then
    waiting: int = 0  # writes waiting for the next turn (a finished answer's last one, a notice)

    def idle(self, now: float) -> bool:
        return max(self.next_at, self.claimed_until) <= now and not self.waiting and not self.lock.locked()


class ChannelPacer:
    """At most one message write per `interval_s` in each channel, across every answer written there.

    A write happens inside a turn (`with pacer.turn(channel)`); the channel's next turn starts `interval_s`
    after the write has returned, so even a slow call keeps the writes apart by the interval. `before_turn`
    runs before a turn is taken (the bot yields to a burst of acks there).

    First words come first: an answer that has shown nothing yet claims the channel's next free turn, and
    updates of answers already under way skip it; so does a write that waits for its turn (a finished
    answer's last one), for one interval at most. Otherwise the answers being streamed there, which try on
    every token, won most turns, and a person whose answer started second saw nothing for seconds (p99 3.6 s
    with two answers a channel, bench/slack_load.py); and once finished answers no longer held a worker while
    they waited, their last writes took the turns the next answers' first words needed (p99 2.5 s with two
    a channel). A claim lapses an interval after its last try, so an answer that stops trying (finished,
    failed) holds nobody back. Updates also skip while a write waits, so that it is not passed over."""

    def __init__(self, interval_s: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, before_turn: Callable[[], None] = lambda: None):
        self._interval, self._clock, self._sleep, self._before_turn = interval_s, clock, sleep, before_turn
        self._channels: dict[str, _Turns] = {}
        self._lock = threading.Lock()

    @contextmanager
    def turn(self, channel: str, *, wait: bool = True, first_words: bool = False) -> Iterator[bool]:
        """Yields True inside the channel's turn: at once or after waiting for it. With `wait=False` (an
        update that may be skipped: its text goes out with the next one) it yields False at once when the
        turn is not free now, or when it is an update (not `first_words`) and an answer's first words claim
        the turn or another write waits for it."""
        self._before_turn()
        turns = self._channel(channel)
        if not (self._wait_for_turn(turns, first_words) if wait else self._free_turn(turns, first_words)):
            yield False
            return
        try:
            if first_words:
                turns.claimed_until = 0.0  # claimed turn taken: other first words claim again at their next try
            yield True
            turns.next_at = self._clock() + self._interval
        finally:
            turns.lock.release()

    def _free_turn(self, turns: _Turns, first_words: bool) -> bool:
        """Take the turn (its lock) if it is free now; first words that find it taken claim the next one."""
        if turns.lock.acquire(blocking=False):
            now = self._clock()
            if turns.next_at <= now and (first_words or (turns.claimed_until <= now and not turns.waiting)):
                return True
            turns.lock.release()
        if first_words:
            turns.claimed_until = max(turns.claimed_until, self._clock() + self._interval)
        return False

    def _wait_for_turn(self, turns: _Turns, first_words: bool) -> bool:
        """Take the channel's next turn (its lock), letting claimed first words go first for one interval."""
        with self._lock:
            turns.waiting += 1
        deferred_until = None
        try:
            while True:
                turns.lock.acquire()
                now = self._clock()
                if turns.next_at > now:
                    until = turns.next_at
                elif not first_words and turns.claimed_until > now and (deferred_until is None or now < deferred_until):
                    deferred_until = deferred_until or now + self._interval
                    until = min(turns.claimed_until, deferred_until)
                else:
                    return True
                turns.lock.release()  # the claimed first words may take the turn meanwhile
                self._sleep(until - now)
        finally:
            with self._lock:
                turns.waiting -= 1

    def _channel(self, channel: str) -> _Turns:
        with self._lock:
            if channel not in self._channels:
                if len(self._channels) > MAX_CHANNELS:  # forget channels whose next turn has come
                    now = self._clock()
                    self._channels = {c: t for c, t in self._channels.items() if not t.idle(now)}
                self._channels[channel] = _Turns()
            return self._channels[channel]


class StreamingRefused(Exception):
    """Slack would not start a stream in this conversation."""


class Writer(Protocol):
    """Puts one answer's text into Slack, one message at a time."""

    def add(self, text: str, piece: str) -> None:
        """Show `text`, the current message so far, of which `piece` is new."""

    def close(self, text: str, piece: str, feedback: Blocks) -> str:
        """Finish the current message as `text` (with `feedback` under it); returns its ts."""

    def abandon(self) -> None:
        """Leave the current message as it is: the answer failed."""


class EditedMessages:
    """chat.postMessage, then chat.update with the text so far: works in every workspace, and in place
    of an earlier message (`replace_ts`)."""

    def __init__(self, client: WebClient, channel_id: str, thread_ts: str, metadata: dict, replace_ts: str | None):
        self._client, self._channel, self._thread, self._metadata = client, channel_id, thread_ts, metadata
        self._ts = replace_ts

    def add(self, text: str, piece: str) -> None:
        self._show(text, [])

    def close(self, text: str, piece: str, feedback: Blocks) -> str:
        self._show(text, feedback)
        ts, self._ts = self._ts, None
        return ts

    def abandon(self) -> None:
        """Nothing to end: an edited message is complete after every edit."""

    def _show(self, text: str, feedback: Blocks) -> None:
        page = blocks.answer_page(text, feedback)
        if self._ts:
            self._client.chat_update(
                channel=self._channel, ts=self._ts, text=text, blocks=page, metadata=self._metadata
            )
            return
        response = self._client.chat_postMessage(
            channel=self._channel, thread_ts=self._thread, text=text, blocks=page, metadata=self._metadata,
            unfurl_links=False, unfurl_media=False,
        )
        self._ts = response["ts"]


class SlackStream:
    """Slack's streaming for AI apps: chat.startStream, chat.appendStream, chat.stopStream."""

    def __init__(self, client: WebClient, channel_id: str, thread_ts: str, metadata: dict, user_id: str, team_id: str):
        self._client, self._channel, self._thread, self._metadata = client, channel_id, thread_ts, metadata
        self._recipient = {"recipient_user_id": user_id, "recipient_team_id": team_id}
        self._ts: str | None = None

    def add(self, text: str, piece: str) -> None:
        if self._ts is None:
            self._start(piece)
        else:
            self._client.chat_appendStream(channel=self._channel, ts=self._ts, markdown_text=piece)

    def close(self, text: str, piece: str, feedback: Blocks) -> str:
        if self._ts is None:  # nothing shown yet (a short answer, a busy channel): one message, one call
            response = self._client.chat_postMessage(
                channel=self._channel, thread_ts=self._thread, text=text, blocks=blocks.answer_page(text, feedback),
                metadata=self._metadata, unfurl_links=False, unfurl_media=False,
            )
            return response["ts"]
        self._client.chat_stopStream(
            channel=self._channel, ts=self._ts, markdown_text=piece or None, blocks=feedback or None,
            metadata=self._metadata,
        )
        ts, self._ts = self._ts, None
        return ts

    def abandon(self) -> None:
        """Stop the stream without the answer's metadata: a partial text is no turn of the conversation."""
        if self._ts is not None:
            self._client.chat_stopStream(channel=self._channel, ts=self._ts)
            self._ts = None

    def _start(self, piece: str) -> None:
        try:
            response = self._client.chat_startStream(
                channel=self._channel, thread_ts=self._thread, markdown_text=piece, **self._recipient
            )
        except SlackApiError as exc:
            raise StreamingRefused(exc.response.get("error")) from exc
        self._ts = response["ts"]


class AnswerStream:
    """One answer: `write` each piece as the model produces it, then `finish` (or `abort`).

    Leading and trailing whitespace never reach Slack (trailing whitespace waits for the text after
    it), so a one-message answer reads exactly as `text.strip()`."""

    def __init__(self, writer: Writer, channel_id: str, pacer: ChannelPacer, *, stream: bool = True,
                 fallback: Writer | None = None):
        self._writer, self._fallback = writer, fallback
        self._channel, self._pacer, self._stream = channel_id, pacer, stream  # stream False: shown when finished
        self._shown = ""  # in the current message
        self._pending = ""  # not shown yet
        self._started = False  # any text of this answer shown

    def write(self, piece: str) -> None:
        self._pending += piece
        if not self._shown:
            self._pending = self._pending.lstrip()
        if self._stream and self._pending.strip():
            with self._pacer.turn(self._channel, wait=False, first_words=not self._started) as mine:
                if mine:
                    self._show()

    def finish(self, feedback: Blocks) -> str:
        """Show the rest, with `feedback` under the last message; returns that message's ts."""
        if not self._shown and not self._pending.strip():
            self._pending = blocks.EMPTY_ANSWER
        while self._over_a_message():
            with self._pacer.turn(self._channel, first_words=not self._started):
                self._close_full_message()
        rest = self._pending.rstrip()
        with self._pacer.turn(self._channel, first_words=not self._started):  # nothing shown: its first words
            return self._send(lambda writer: writer.close(self._shown + rest, rest, feedback))

    def abort(self) -> None:
        try:
            self._writer.abandon()
        except SlackApiError as exc:
            log.warning("could not end a partial answer: %s", exc.response.get("error"))

    def _show(self) -> None:
        """One write: the current message grown by the text so far, or, when that no longer fits, the
        message closed full (the rest goes out with the next turns)."""
        if self._over_a_message():
            self._close_full_message()
            return
        ready = self._pending.rstrip()
        if len(self._shown) + len(ready) > blocks.MESSAGE_CHARS - WORD_CHARS:
            # Near a message's end, whole words only: shown text cannot be taken back, and the next
            # message should not start in the middle of a word.
            ready = ready[:max(ready.rfind(" "), ready.rfind("\n"), 0)].rstrip()
        if ready:
            self._send(lambda writer: writer.add(self._shown + ready, ready))
            self._shown, self._started = self._shown + ready, True
            self._pending = self._pending[len(ready):]

    def _over_a_message(self) -> bool:
        return len(self._shown) + len(self._pending.rstrip()) > blocks.MESSAGE_CHARS

    def _close_full_message(self) -> None:
        room = blocks.MESSAGE_CHARS - len(self._shown)
        head, rest = blocks.cut_text(self._pending, room)
        if not head and not self._shown:  # one unbroken run longer than a message: cut it anywhere
            head, rest = self._pending[:room], self._pending[room:]
        self._send(lambda writer: writer.close(self._shown + head, head, []))
        self._shown, self._pending, self._started = "", rest, True

    def _send(self, call: Callable[[Writer], Any]) -> Any:
        try:
            return call(self._writer)
        except StreamingRefused as refused:
            if self._fallback is None:
                raise
            log.info("Slack refused to stream here (%s): posting and editing instead", refused)
            self._writer, self._fallback = self._fallback, None
            return call(self._writer)


def answer_stream(
    settings: Settings, pacer: ChannelPacer, client: WebClient, interaction_id: int, channel_id: str,
    thread_ts: str, *, user_id: str, team_id: str, replace_ts: str | None = None,
) -> AnswerStream:
    """The stream for one answer, as the setting `stream_answers` asks."""
    metadata = blocks.answer_metadata(interaction_id)
    edited = EditedMessages(client, channel_id, thread_ts, metadata, replace_ts)
    if not settings.stream_answers:
        return AnswerStream(edited, channel_id, pacer, stream=False)
    if replace_ts:
        return AnswerStream(edited, channel_id, pacer)
    native = SlackStream(client, channel_id, thread_ts, metadata, user_id, team_id)
    return AnswerStream(native, channel_id, pacer, fallback=edited)
