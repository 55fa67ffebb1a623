"""Several OS processes write votes, pairs and Slack events at the same moment: nothing is lost or doubled."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import queue
import time
import traceback

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from storage.db import make_engine, session_scope
from storage.interactions import complete_interaction, get_or_create_conversation, record_vote, start_interaction
from storage.leases import acquire_lease, lease_holder
from storage.models import Feedback, Interaction, ModelVersion, PairSource, PreferencePair, Vote
from storage.pairs import create_pair
from storage.registry import promote_version, register_version
from storage.users import SYSTEM

PROCESSES = 4
ITEMS = 25  # per process: 25 own votes, 25 contested votes, 25 own pairs, 25 contested pairs, 25 contested events,
# 2 contested leases, and a promotion of its own candidate (all at once: one active version must remain)


def prompt(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def write_everything(url: str, worker: int, interaction_ids: list[int], version_id: int, barrier, results) -> None:
    """One process: every write in its own transaction, as the bot and dashboard do them."""
    try:
        engine = make_engine(url)
        created = {"shared_pairs": 0, "shared_events": 0}
        barrier.wait(timeout=120)  # start together, so that the contested writes really collide
        for name in ("fresh", "expired"):  # a new lease, and one whose holder's time ran out
            with session_scope(engine) as session:
                created[name] = acquire_lease(session, name, f"w{worker}", ttl_s=600)
        with session_scope(engine) as session:
            promote_version(session, version_id, SYSTEM)
        for k, interaction_id in enumerate(interaction_ids):
            with session_scope(engine) as session:
                record_vote(session, interaction_id, f"U{worker}", Vote.up)
            with session_scope(engine) as session:  # the same user's vote arriving from every process
                record_vote(session, interaction_id, "U-shared", Vote.up if worker % 2 else Vote.down)
            with session_scope(engine) as session:
                create_pair(session, prompt(f"q{k}"), f"good {worker}", f"bad {worker}", PairSource.alternative)
            with session_scope(engine) as session:
                if create_pair(session, prompt(f"q{k}"), "good shared", "bad shared", PairSource.vote_contrast):
                    created["shared_pairs"] += 1
            with session_scope(engine) as session:  # a Slack event delivered to every process
                conversation = get_or_create_conversation(session, "slack", "T", "C", f"thread-{k}")
                if start_interaction(session, conversation, prompt(f"event {k}"), event_id=f"Ev{k}"):
                    created["shared_events"] += 1
        engine.dispose()
        results.put((worker, created))
    except BaseException:
        results.put((worker, traceback.format_exc()))


def collect(results, workers, timeout_s: float) -> dict:
    """Each worker's outcome; a worker that died without reporting (killed, or failed before its first line)
    fails the test at once with its exit code, instead of after the timeout."""
    outcomes, deadline = {}, time.monotonic() + timeout_s
    while len(outcomes) < len(workers):
        exited = {w for w, p in enumerate(workers) if p.exitcode is not None}  # their reports are in the pipe
        try:
            worker, outcome = results.get(timeout=1)
            outcomes[worker] = outcome
        except queue.Empty:
            silent = {w: workers[w].exitcode for w in exited - set(outcomes)}
            assert not silent, f"workers exited without a report (exit codes): {silent}"
            assert time.monotonic() < deadline, f"no report from workers {set(range(len(workers))) - set(outcomes)}"
    return outcomes


def test_processes_writing_at_once_lose_and_double_nothing(database_url):
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        acquire_lease(session, "expired", "crashed-scheduler", ttl_s=-1)
        conversation = get_or_create_conversation(session, "slack", "T", "C", "seed")
        ids = []
        for k in range(ITEMS):
            interaction = start_interaction(session, conversation, prompt(f"seed {k}"))
            session.flush()
            complete_interaction(session, interaction.id, answer=f"answer {k}", served_model="base",
                                 model_version_id=None, latency_ms=1.0)
            ids.append(interaction.id)
        versions = [register_version(session, adapter_path=f"/a/{w}", base_model="smol", training_run_id=None,
                                     parent_id=None, metrics={}).id for w in range(PROCESSES)]

    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    workers = [ctx.Process(target=write_everything, args=(database_url, w, ids, versions[w], barrier, results))
               for w in range(PROCESSES)]
    for worker in workers:
        worker.start()
    try:
        outcomes = collect(results, workers, timeout_s=240)
    finally:
        for worker in workers:
            worker.join(timeout=30)
            worker.kill()  # only if it hung; a finished process is left as it is
    failures = {w: o for w, o in outcomes.items() if isinstance(o, str)}
    assert not failures, failures
    # Each contested write was won by exactly one process.
    assert sum(o["shared_pairs"] for o in outcomes.values()) == ITEMS
    assert sum(o["shared_events"] for o in outcomes.values()) == ITEMS
    lease_winners = {name: [w for w, o in outcomes.items() if o[name]] for name in ("fresh", "expired")}
    assert all(len(winners) == 1 for winners in lease_winners.values()), lease_winners

    with session_scope(engine) as session:
        votes = session.execute(select(Feedback.interaction_id, Feedback.user_id)).all()
        assert len(votes) == len(set(votes)) == ITEMS * (PROCESSES + 1)
        assert set(votes) == {(i, f"U{w}") for i in ids for w in range(PROCESSES)} | {(i, "U-shared") for i in ids}
        pairs = session.execute(select(PreferencePair.prompt, PreferencePair.chosen)).all()
        assert len(pairs) == ITEMS * (PROCESSES + 1)
        assert {(p[0][0]["content"], p[1]) for p in pairs} == {
            (f"q{k}", chosen) for k in range(ITEMS) for chosen in [*(f"good {w}" for w in range(PROCESSES)),
                                                                   "good shared"]}
        events = session.scalar(select(func.count()).where(Interaction.event_id.is_not(None)))
        assert events == ITEMS
        statuses = sorted(v.status.value for v in session.scalars(select(ModelVersion)))
        assert statuses == ["active"] + ["retired"] * (PROCESSES - 1)
        assert lease_holder(session, "expired") == f"w{lease_winners['expired'][0]}"
    engine.dispose()


def hold_the_write_turn(url: str, holding, then: str) -> None:
    """Store a vote inside a transaction, say so, then die in it ("die") or wait to be killed ("wait")."""
    engine = make_engine(url)
    with session_scope(engine) as session:
        conversation = get_or_create_conversation(session, "slack", "T", "C", "uncommitted")
        start_interaction(session, conversation, prompt("never committed"))
        session.flush()
        holding.set()
        if then == "die":
            time.sleep(0.5)
            os._exit(3)
        time.sleep(600)


def test_sqlite_writers_of_all_processes_take_turns_on_one_lock_freed_when_the_holder_dies(sqlite_url):
    """SQLite's own lock makes waiters poll with sleeps of up to 100 ms; the writer lock file beside the database
    hands the turn over at once, and the kernel frees it with the process that held it."""
    lock_path = make_url(sqlite_url).database + ".writer-lock"
    ctx = multiprocessing.get_context("spawn")
    holding = ctx.Event()
    holder = ctx.Process(target=hold_the_write_turn, args=(sqlite_url, holding, "wait"))
    holder.start()
    try:
        assert holding.wait(60)
        with open(lock_path, "a+b") as lock_file:  # the turn is taken: another process cannot have it now
            with pytest.raises(BlockingIOError):
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        holder.kill()
        holder.join()

    holding = ctx.Event()
    dying = ctx.Process(target=hold_the_write_turn, args=(sqlite_url, holding, "die"))
    dying.start()
    assert holding.wait(60)
    engine = make_engine(sqlite_url)
    with session_scope(engine) as session:  # waits for the turn until the holder dies, then writes
        conversation = get_or_create_conversation(session, "slack", "T", "C", "after")
        start_interaction(session, conversation, prompt("committed"))
    dying.join(timeout=30)
    assert dying.exitcode == 3
    with session_scope(engine) as session:
        prompts = [i.prompt_messages[0]["content"] for i in session.scalars(select(Interaction))]
    assert prompts == ["committed"]
    engine.dispose()
