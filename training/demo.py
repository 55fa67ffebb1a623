"""`flywheel demo` as plain functions: one turn of the loop on a fresh database, with the real parts.

A chat-ops scenario (training/demo_scenario.jsonl) is asked to the real model and recorded through
the same storage functions the bot uses; teammates vote, and write the exact command as a better
answer when the bot was vague. A reviewer approves the pairs, one DPO run trains in its own process
(as the scheduler starts it), the candidate is promoted and synced into vLLM, and held-out prompts
(never asked before) are answered before and after.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from flywheel.settings import Settings
from serving.adapters import loaded_adapters, sync_adapters
from serving.base_model import ensure_base_model
from serving.client import Answer, answer
from serving.engine import VLLMServer, is_ready
from storage.db import get_engine, session_scope, upgrade
from storage.errors import InvalidInput
from storage.interactions import (
    VoteFilter, approve_vote, complete_interaction, get_or_create_conversation, list_votes, record_alternative,
    record_vote, start_interaction,
)
from storage.models import PairStatus, RunStatus, Vote
from storage.pairs import PairFilter, approve_pair, list_pairs
from storage.registry import get_version, list_versions, promote_version
from storage.runs import get_run, reap_stale_runs
from storage.users import Actor, Role
from training.launcher import start_run_now

SCENARIO_FILE = Path(__file__).with_name("demo_scenario.jsonl")
MARKER = ".flywheel-demo"  # written into the demo's home: only such a folder is ever wiped
TEAM, CHANNEL = "T0DEMO", "C0OPS"
ASKERS = ["U0ALICE", "U0BOB", "U0CAROL", "U0DAVE"]
REVIEWER = Actor("demo-reviewer", Role.reviewer)
ADMIN = Actor("demo-admin", Role.admin)
# Measured on 2 CPU cores (see `flywheel demo --help`): 18 steps of about 5 s on a quiet machine.
# A high learning rate for 3 epochs, with the SFT term on the chosen answers, makes the greedy answers to
# the held-out questions give the exact commands (lr 1e-3 for 2 epochs: the "Run `...`." form only);
# 64 tokens hold the prompt, the chosen answer and the start of the rejected one. So fast a lesson forgets:
# measured here, the candidate answers 11 of the 60 general-knowledge questions where the base model answers 41,
# and the default gate refuses it. The demo shows the loop turning, so its gate allows that;
# its metrics table prints general_knowledge for everyone to see.
TRAINING = dict(max_length=64, batch_size=4, epochs=3, learning_rate=3e-3, sft_weight=1.0, lora_r=8, lora_alpha=16,
                eval_fraction=0.2, max_answer_tokens=24, temperature=0.0, auto_promote=False,
                gate_max_knowledge_drop=1.0)
Progress = Callable[[str, int, int], None]  # (stage, done, total)
TERMINAL = (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled)


@dataclass(frozen=True)
class Item:
    question: str
    command: str
    held_out: bool = False

    @property
    def better_answer(self) -> str:
        return f"Run `{self.command}`."

    def answered_by(self, text: str) -> bool:
        return self.command in text


@dataclass
class FeedbackCounts:
    asked: int = 0
    up: int = 0
    down: int = 0
    better: int = 0
    pairs: int = 0


@dataclass
class DemoResult:
    feedback: FeedbackCounts
    approved: int
    run_id: int
    run_status: str
    metrics: dict[str, Any]
    not_registered_reason: str | None
    version: str | None  # the promoted version's name; None when the gate refused the candidate
    held_out: list[Item]
    before: list[Answer]
    after: list[Answer]
    timings: dict[str, float] = field(default_factory=dict)


def load_scenario(path: Path = SCENARIO_FILE) -> list[Item]:
    return [Item(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def demo_settings(base: Settings, home: Path) -> Settings:
    """The user's settings, but with the demo's own home and SQLite database and its small training."""
    return base.model_copy(update={
        "home": home, "database_url": f"sqlite:///{(home / 'flywheel.db').as_posix()}",
        "base_model_path": base.base_model_dir, **TRAINING,
    })


def fresh_home(home: Path) -> None:
    """Empty the demo's home; refuse a folder that holds data and is not a demo's."""
    if home.exists() and any(home.iterdir()):
        if not (home / MARKER).exists():
            raise InvalidInput(f"{home} is not empty and is not a demo folder; choose another --home")
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("created by `flywheel demo`; wiped by the next one\n")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reusable(settings: Settings) -> bool:
    """A running vLLM is borrowed only if it serves no adapters: the demo's "v1" must not replace
    a version someone else serves under that name."""
    return is_ready(settings.vllm_url) and not loaded_adapters(settings)


@contextmanager
def model_server(settings: Settings, progress: Progress, note: Callable[[str], None]) -> Iterator[Settings]:
    """Settings pointing at a vLLM: the configured one if it is free to borrow, else one started here
    on a free port and stopped on the way out."""
    if reusable(settings):
        note(f"using the vLLM server at {settings.vllm_url}")
        yield settings
        return
    port = free_port()
    own = settings.model_copy(update={"vllm_port": port, "vllm_url": f"http://{settings.vllm_host}:{port}"})
    server = VLLMServer(own, ensure_base_model(own, progress=note))
    note(f"starting vLLM on {own.vllm_url} (log {server.log_path})")
    server.start()
    try:
        server.wait_ready(lambda _log_line: progress("starting vLLM", 0, 0))
        progress("starting vLLM", 1, 1)
        yield own
    finally:
        note("stopping vLLM")
        server.stop()


def ask(settings: Settings, engine: Engine, item: Item, number: int, model: str | None = None) -> tuple[int, Answer]:
    """Ask like the bot does: the question is stored first, then answered and completed."""
    user = ASKERS[number % len(ASKERS)]
    messages = [{"role": "user", "content": item.question}]
    with session_scope(engine) as session:
        conversation = get_or_create_conversation(session, "slack", TEAM, CHANNEL, f"{1_700_000_000 + number}.000100")
        interaction = start_interaction(session, conversation, messages, user_id=user, event_id=f"EvDemo{number}")
        session.flush()
        interaction_id = interaction.id
    reply = answer(settings, messages, user_id=user, model=model)
    with session_scope(engine) as session:
        complete_interaction(session, interaction_id, answer=reply.text, served_model=reply.served_model,
                             model_version_id=reply.model_version_id, latency_ms=reply.latency_ms,
                             prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)
    return interaction_id, reply


def react(engine: Engine, item: Item, interaction_id: int, reply: Answer, number: int, feedback: FeedbackCounts,
          better: bool = True) -> None:
    """A teammate's thumbs up for an answer with the command; else thumbs down and (if `better`) the command as
    a better answer."""
    teammate = ASKERS[(number + 1) % len(ASKERS)]
    with session_scope(engine) as session:
        if item.answered_by(reply.text):
            record_vote(session, interaction_id, teammate, Vote.up)
            feedback.up += 1
            return
        record_vote(session, interaction_id, teammate, Vote.down)
        feedback.down += 1
        if not better:
            return
        _, pair = record_alternative(session, interaction_id, teammate, item.better_answer)
    feedback.better += 1
    feedback.pairs += pair is not None


def answer_all(settings: Settings, engine: Engine, items: list[Item], progress: Progress, stage: str,
               *, model: str | None = None, first: int = 0) -> list[tuple[int, Answer]]:
    """Ask every item (a few at once: vLLM batches them), in order."""
    done = [0]

    def one(numbered: tuple[int, Item]) -> tuple[int, Answer]:
        result = ask(settings, engine, numbered[1], first + numbered[0], model)
        done[0] += 1
        progress(stage, done[0], len(items))
        return result

    progress(stage, 0, len(items))
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, enumerate(items)))


def react_all(engine: Engine, items: list[Item], answered: list[tuple[int, Answer]], better: bool = True) -> FeedbackCounts:
    feedback = FeedbackCounts(asked=len(items))
    for number, (item, (interaction_id, reply)) in enumerate(zip(items, answered)):
        react(engine, item, interaction_id, reply, number, feedback, better)
    return feedback


def collect_feedback(settings: Settings, engine: Engine, items: list[Item], progress: Progress) -> FeedbackCounts:
    return react_all(engine, items, answer_all(settings, engine, items, progress, "team asks the bot"))


def approve_all(engine: Engine, pending: Callable[[Session], list], approve: Callable, reviewer: Actor) -> int:
    with session_scope(engine) as session:
        items = pending(session)
        for item in items:
            approve(session, item.id, reviewer)
        return len(items)


def approve_pending(engine: Engine, reviewer: Actor = REVIEWER) -> int:
    """What a reviewer does in the dashboard's review queue: approve each pending pair."""
    return approve_all(engine, lambda s: list_pairs(s, PairFilter(status=PairStatus.pending), limit=10_000),
                       approve_pair, reviewer)


def approve_votes(engine: Engine, reviewer: Actor = REVIEWER) -> int:
    """What a reviewer does in the review queue's Votes section: approve each pending vote."""
    return approve_all(engine, lambda s: list_votes(s, VoteFilter(status=PairStatus.pending), limit=10_000),
                       approve_vote, reviewer)


def wait_for_run(settings: Settings, engine: Engine, run_id: int, progress: Progress, timeout_s: float = 3600):
    """Follow the run's steps until it ends; a run whose process died silently is reaped as failed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with session_scope(engine) as session:
            reap_stale_runs(session, settings.heartbeat_timeout_s)
            run = get_run(session, run_id)
            if run.status in TERMINAL:
                return run.status, run.eval_metrics or {}, run.not_registered_reason, run.error
            progress("DPO training", run.current_step, run.total_steps or 0)
        time.sleep(1.0)
    raise TimeoutError(f"run {run_id} did not finish within {timeout_s:.0f} s")


def registered_version(engine: Engine, run_id: int) -> tuple[int, str] | None:
    with session_scope(engine) as session:
        found = [v for v in list_versions(session) if v.training_run_id == run_id]
        return (found[0].id, found[0].name) if found else None


def promote(settings: Settings, engine: Engine, version_id: int, admin: Actor = ADMIN) -> str:
    """What an admin does in the dashboard's models page: promote, then make vLLM serve it."""
    with session_scope(engine) as session:
        name = promote_version(session, version_id, admin).name
    sync_adapters(settings)
    return name


def run_demo(base: Settings, home: Path, progress: Progress, note: Callable[[str], None]) -> DemoResult:
    scenario = load_scenario()
    feedback_items = [i for i in scenario if not i.held_out]
    held_out = [i for i in scenario if i.held_out]
    settings = demo_settings(base, home)
    fresh_home(home)
    upgrade(settings.database_url)
    engine = get_engine(settings.database_url)
    timings, lap = {}, stopwatch()
    with model_server(settings, progress, note) as settings:
        timings["vLLM start"] = lap()
        # One batch: the held-out questions are asked (before training) beside the team's.
        answered = answer_all(settings, engine, feedback_items + held_out, progress, "asking the bot (team + held-out)")
        before = [a for _, a in answered[len(feedback_items):]]
        feedback = react_all(engine, feedback_items, answered[:len(feedback_items)])
        approved = approve_pending(engine)
        timings["asking + feedback"] = lap()
        run_id = start_run_now(settings, ADMIN)
        note(f"run {run_id} started; log {settings.logs_dir / f'run-{run_id}.log'}")
        status, metrics, reason, error = wait_for_run(settings, engine, run_id, progress)
        timings["training run"] = lap()
        if status is not RunStatus.succeeded:
            raise RuntimeError(f"run {run_id} {status.value}: {error}; log {settings.logs_dir / f'run-{run_id}.log'}")
        version = registered_version(engine, run_id)
        name = promote(settings, engine, version[0]) if version else None
        after = [a for _, a in answer_all(settings, engine, held_out, progress, "held-out answers after",
                                          first=len(feedback_items) + len(held_out))]
        timings["promotion + answers after"] = lap()
    engine.dispose()
    timings["vLLM stop"] = lap()
    timings["total"] = sum(timings.values())
    return DemoResult(feedback, approved, run_id, status.value, metrics, reason, name, held_out, before, after, timings)


def stopwatch() -> Callable[[], float]:
    """Each call returns the seconds since the previous one (the first: since creation)."""
    last = [time.monotonic()]

    def lap() -> float:
        now = time.monotonic()
        elapsed, last[0] = now - last[0], now
        return elapsed

    return lap
