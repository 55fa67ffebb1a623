"""The whole loop through the real parts: Slack feedback -> pairs -> review -> scheduler -> DPO run ->
candidate -> promotion -> the next Slack question is answered by the new adapter.

Real Bolt app over signed HTTP (Slack's Web API is the local stand-in), the session's real vLLM,
SQLite, the real scheduler starting a real `flywheel train run` process (9 DPO steps). Measured on
2 CPU cores shared with other jobs (load 4-9): 8 minutes (3 of them the Slack feedback, 5 the run),
plus the session's vLLM start; far less on an idle machine, where a step takes seconds, not 25 s.
"""

from __future__ import annotations

import pytest
from slack_stub import RunningBot, SlackStub
from slack_support import BOB, TOKEN, ask, bot_settings, eventually, rows, vote, write_better_answer
from training_support import wait_for

from bot.listeners.views import SAVED
from serving.adapters import loaded_adapters, sync_adapters
from storage.db import session_scope
from storage.models import Interaction, PairSource, PairStatus, PreferencePair, RunStatus, VersionStatus
from storage.pairs import approve_pair
from storage.registry import list_versions, promote_version
from storage.runs import get_run, list_runs
from storage.users import Actor, Role
from training.demo import TRAINING, load_scenario
from training.scheduler import FlywheelScheduler

pytestmark = [pytest.mark.vllm, pytest.mark.training]

FEEDBACK_QUESTIONS = 16  # 16 pairs: the run holds out about a third for its own evaluation
REVIEWER, ADMIN = Actor("rita", Role.reviewer), Actor("adam", Role.admin)
E2E_TRAINING = {**TRAINING, "epochs": 3, "eval_fraction": 0.3}


def interaction_of(bot: RunningBot, reply: dict) -> Interaction:
    """The stored interaction of a reply seen in Slack: its ts is stored just after the reply is posted."""
    return eventually(lambda: [i for i in rows(bot, Interaction) if i.message_ts == reply["ts"]])[0]


def give_feedback(bot: RunningBot, slack: SlackStub, items) -> None:
    """Each question asked in a channel; a teammate votes the vague answer down and writes the command."""
    for item in items:
        message = ask(bot, slack, item.question)
        assert vote(bot, BOB, message, "down").status_code == 200
        response = write_better_answer(bot, slack, BOB, message, item.better_answer)
        assert response.status_code == 200 and response.text == ""  # the modal closed: saved


def run_succeeded(engine, run_id: int) -> bool:
    with session_scope(engine) as session:
        run = get_run(session, run_id)
        assert run.status in (RunStatus.queued, RunStatus.running, RunStatus.succeeded), (run.status, run.error)
        return run.status is RunStatus.succeeded


def started_runs(engine) -> list[int]:
    with session_scope(engine) as session:
        return [run.id for run in list_runs(session)]


def test_feedback_in_slack_becomes_a_promoted_adapter_that_answers_the_next_question(
    tmp_path, sqlite_url, base_model_dir, vllm_server
):
    scenario = load_scenario()
    items = [i for i in scenario if not i.held_out][:FEEDBACK_QUESTIONS]
    probe = next(i for i in scenario if i.held_out)  # never part of any pair
    with SlackStub(TOKEN) as slack:
        settings = bot_settings(
            tmp_path, sqlite_url, base_model_dir, slack, vllm_server.url, **E2E_TRAINING,
            rate_limit_per_minute=1000, request_retries=1, min_new_pairs=FEEDBACK_QUESTIONS,
            min_interval_minutes=0, scheduler_interval_s=1,
        )
        with RunningBot(settings) as bot:
            engine = bot.services.engine
            before = ask(bot, slack, probe.question)
            assert interaction_of(bot, before).served_model == "base"

            # Feedback in Slack -> pending pairs.
            give_feedback(bot, slack, items)
            confirmations = slack.wait_for("chat.postEphemeral", 2 * len(items))  # each vote, each saved answer
            assert sum(c.params["text"] == SAVED for c in confirmations) == len(items)
            pairs = rows(bot, PreferencePair)
            assert len(pairs) == len(items)
            assert all(p.status is PairStatus.pending and p.source is PairSource.alternative for p in pairs)
            assert {p.chosen for p in pairs} == {i.better_answer for i in items}

            # Review, as the dashboard's review queue does it.
            with session_scope(engine) as session:
                for pair in pairs:
                    approve_pair(session, pair.id, REVIEWER)

            # The real scheduler sees enough new approved pairs and starts a real run process.
            scheduler = FlywheelScheduler(settings)
            scheduler.start()
            try:
                [run_id] = wait_for(lambda: started_runs(engine), 60, "the scheduler to start a run")
            finally:
                scheduler.stop()
            # Generous for a busy machine; pytest-timeout ends a hung test sooner.
            wait_for(lambda: run_succeeded(engine, run_id), 1500, f"run {run_id} to finish")

            # The candidate, registered with its metrics, promoted as the dashboard's models page does it.
            with session_scope(engine) as session:
                run = get_run(session, run_id)
                assert run.triggered_by == "scheduler" and run.snapshot.train_count + run.snapshot.eval_count == len(items)
                metrics, base = run.eval_metrics, run.eval_metrics["incumbent"]
                # Seen here: likelihood accuracy 0 for both (the base model's own greedy answers stay more
                # likely per token than the short commands), reward margin 2.3 vs 0, and the preference
                # (implicit-reward) accuracy the gate compares 1.0 vs 0.
                assert metrics["reward_margin"] > base["reward_margin"] and metrics["reward_accuracy"] >= 0.5, metrics
                assert metrics["chosen_perplexity"] < base["chosen_perplexity"], metrics
                assert run.not_registered_reason is None and len(run.metrics) == run.total_steps > 0
                [version] = list_versions(session)
                assert version.status is VersionStatus.candidate and version.training_run_id == run_id
                assert version.metrics["compared_with"] == "base" and "beats base" in version.metrics["gate"]
                promote_version(session, version.id, ADMIN)
                name, version_id, adapter_path = version.name, version.id, version.adapter_path
            sync_adapters(settings)
            assert loaded_adapters(settings)[name] == adapter_path

            # The next question in Slack is answered by the new adapter, and the answer changed.
            after = ask(bot, slack, probe.question)
            interaction = interaction_of(bot, after)
            assert (interaction.served_model, interaction.model_version_id) == (name, version_id)
            assert interaction.answer == after["text"] != before["text"], (before["text"], after["text"])
