"""Group commit: the writes of many threads, committed together in one transaction.

The bot stores every question and vote before Slack's ack, and a burst brings a hundred at once. Each in its
own transaction, they queue for the database's one writer: on SQLite a transaction's BEGIN and COMMIT cost
about 2 ms of its 3.5, so the hundredth ack waited some 350 ms. Here one thread takes whatever writes are
waiting, runs each in a savepoint of one transaction (a write that fails is rolled back alone and its caller
gets the error) and commits once; every caller returns when its write is committed, so an ack still means
stored. A database that is unreachable or restarting is tried again, the whole batch, for a while.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from storage.db import is_transient, session_scope

T = TypeVar("T")
MAX_BATCH = 256  # writes per transaction: bounds how long one commit holds the database's lock
RETRY_PAUSE_S = 0.1


@dataclass
class _Write:
    work: Callable[[Session], Any]
    deadline: float  # monotonic: past it, an unreachable database fails the write instead of retrying
    done: Future = field(default_factory=Future)


class GroupCommit:
    """`run(work)` from any thread: `work(session)` is committed, with whatever else was waiting, by the
    one writer thread. Writes must be safe to repeat (idempotent or deduplicated by a unique key): a batch
    whose commit the database dropped is run again."""

    def __init__(self, engine: Engine, *, max_batch: int = MAX_BATCH):
        self._engine, self._max_batch = engine, max_batch
        self._waiting: deque[_Write] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._write_batches, name="group-commit", daemon=True)
        self._thread.start()

    def run(self, work: Callable[[Session], T], *, within_s: float) -> T:
        """`work`'s result once committed; its own exception, or the database's once `within_s` has passed."""
        write = _Write(work, time.monotonic() + within_s)
        with self._changed:
            if self._closed:
                raise RuntimeError("the group commit is closed")
            self._waiting.append(write)
            self._changed.notify()
        return write.done.result()

    def close(self) -> None:
        """Commit what is waiting, then stop."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join()

    def _write_batches(self) -> None:
        while batch := self._next_batch():
            self._commit(batch)

    def _next_batch(self) -> list[_Write]:
        with self._changed:
            self._changed.wait_for(lambda: self._waiting or self._closed)
            return [self._waiting.popleft() for _ in range(min(len(self._waiting), self._max_batch))]

    def _commit(self, batch: list[_Write]) -> None:
        while True:
            try:
                with session_scope(self._engine) as session:
                    outcomes = [_in_savepoint(session, write.work) for write in batch]
            except DBAPIError as exc:
                if is_transient(exc) and time.monotonic() + RETRY_PAUSE_S < min(w.deadline for w in batch):
                    time.sleep(RETRY_PAUSE_S)
                    continue
                outcomes = [(None, exc)] * len(batch)
            except Exception as exc:  # noqa: BLE001 - the commit itself failed: every caller hears why
                outcomes = [(None, exc)] * len(batch)
            for write, (result, error) in zip(batch, outcomes):
                write.done.set_exception(error) if error is not None else write.done.set_result(result)
            return


def _in_savepoint(session: Session, work: Callable[[Session], Any]) -> tuple[Any, BaseException | None]:
    """`work` in a savepoint: its failure rolls back only its own writes. A database that went away fails
    the whole transaction instead (raised), so that the batch is tried again."""
    try:
        with session.begin_nested():
            return work(session), None
    except DBAPIError as exc:
        if is_transient(exc):
            raise
        return None, exc
    except Exception as exc:  # noqa: BLE001 - handed to the caller that submitted this write
        return None, exc
