"""How the bot's answering processes share the channels, and how a process that stored a question wakes the
one that answers its channel.

One process answers a channel, so one pacer keeps that channel's writes within Slack's limit. Any process
may receive and store a question; it then rings the owner's bell: a datagram on a Unix socket in Linux's
abstract namespace (no file to clean up; it goes with its process), named after the bot's home and the share.
The owner reads the waiting questions when rung instead of reading the database every 50 ms. A
ring that finds nobody (the owner is restarting) or a full queue (the owner is awake already) is dropped: the
owner reads the database at its start and at least every second anyway.

Two bots of one home (one database) would answer every question twice: `claim_channels`, held by `flywheel bot`
for its life, stops the second one at once.
"""

from __future__ import annotations

import errno
import hashlib
import select
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path


class ChannelsTaken(RuntimeError):
    """Another bot of this FLYWHEEL_HOME is running."""


def _home_name(home: Path) -> str:
    return "flywheel-bot-" + hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]


def _bound(address: str) -> socket.socket:
    """A datagram socket bound to `address` in the abstract namespace; ChannelsTaken when it is taken."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(f"\0{address}".encode())
    except OSError as exc:
        sock.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        raise ChannelsTaken(f"another bot of this FLYWHEEL_HOME is running ({address}): stop it first") from exc
    sock.setblocking(False)
    return sock


def claim_channels(home: Path) -> socket.socket:
    """This home's channels, for as long as the returned socket is open (it closes with the process)."""
    return _bound(_home_name(home))


def owner_of(channel_id: str, count: int) -> int:
    """The share, of `count`, that answers `channel_id`: a stable hash, the same in every process."""
    return 0 if count == 1 else zlib.crc32(channel_id.encode()) % count


@dataclass(frozen=True)
class ChannelShare:
    """Channels whose owner, of `count` shares, is `index`."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"not a share of the channels: {self.index}/{self.count}")

    def owns(self, channel_id: str) -> bool:
        return owner_of(channel_id, self.count) == self.index


class QuestionBell:
    """Rings the owner of a channel (`ring`), from any thread of any bot process of this home; `door` is the
    socket one owner waits on."""

    def __init__(self, home: Path, shares: int):
        self.shares = shares
        self._name = _home_name(home)
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)

    def _address(self, index: int) -> str:
        return f"{self._name}-{index}-of-{self.shares}"

    def ring(self, channel_id: str) -> None:
        """A question of `channel_id` is stored: its owner reads the waiting questions now."""
        self.ring_share(owner_of(channel_id, self.shares))

    def ring_share(self, index: int) -> None:
        try:
            self._sender.sendto(b"!", f"\0{self._address(index)}".encode())
        except OSError:  # nobody there (restarting) or its queue is full (awake already): see the module's note
            pass

    def door(self, share: ChannelShare) -> "Door":
        return Door(self._address(share.index))

    def close(self) -> None:
        self._sender.close()


class Door:
    """The socket the owner of a share waits on for rings."""

    def __init__(self, address: str):
        self._socket = _bound(address)

    def wait(self, timeout_s: float) -> None:
        """Return when rung (every ring waiting is taken at once) or after `timeout_s`."""
        select.select([self._socket], [], [], timeout_s)
        while True:
            try:
                self._socket.recv(16)
            except BlockingIOError:
                return

    def close(self) -> None:
        self._socket.close()
