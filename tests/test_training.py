"""Real DPO (+SFT) runs on the CPU with the bundled model, through the runner, registry and real vLLM.

One module-wide run trains on approved pairs with a clear preference (the exact command in
backticks beats a vague answer); the tests check what it stored, that it learned on held-out
prompts, that vLLM serves the adapter with changed answers, the gate, and a killed run's fate.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine
from training_support import add_command_pairs, wait_for, queue_dpo, training_database

from flywheel.settings import Settings
from serving.adapters import loaded_adapters
from serving.client import answer
from storage.db import session_scope
from storage.models import RunKind, RunStatus, VersionStatus
from storage.registry import active_version, get_version_by_name, list_versions, promote_version
from storage.runs import get_run, run_metrics
from storage.users import SYSTEM
from training.config import TrainConfig
from training.evaluation import BASE, score_versions
from training.launcher import queue, start_run_now
from training.runner import execute_run
from training.scheduler import FlywheelScheduler
from training.served_answers import answerer
from training.snapshots import load_snapshot

pytestmark = [pytest.mark.training, pytest.mark.vllm]

# Small and fast on 2 CPU cores: 24 pairs, short sequences, a handful of steps.
TRAINING = dict(max_length=96, batch_size=4, epochs=1, learning_rate=2e-3, lora_r=8, lora_alpha=16,
                eval_fraction=0.3, max_answer_tokens=40)


@dataclass
class Loop:
    settings: Settings
    engine: Engine
    run_id: int


@pytest.fixture(scope="module")
def loop(tmp_path_factory, base_model_dir, vllm_server):
    home = tmp_path_factory.mktemp("training")
    # The session's vLLM also stands in for a team's LLM judge (any OpenAI-compatible endpoint).
    settings, engine = training_database(home, base_model_path=base_model_dir, vllm_url=vllm_server.url,
                                         judge_url=f"{vllm_server.url}/v1", **TRAINING)
    add_command_pairs(engine, 24)
    run_id = queue_dpo(engine)
    execute_run(settings, run_id, engine=engine)
    yield Loop(settings, engine, run_id)
    engine.dispose()


def test_run_stores_step_metrics_and_beats_the_base_model(loop):
    with session_scope(loop.engine) as session:
        run = get_run(session, loop.run_id)
        steps = run_metrics(session, loop.run_id)
        assert run.status is RunStatus.succeeded, run.error
        assert run.total_steps == len(steps) == run.current_step >= 4  # 17 train pairs, batch 4: 5 steps
        for step in steps:
            assert {"loss", "reward_accuracy", "reward_margin", "learning_rate", "tokens_per_s"} <= set(step.values)
            assert step.values["tokens_per_s"] > 0
        assert steps[-1].values["reward_margin"] > steps[0].values["reward_margin"]
        metrics, base = run.eval_metrics, run.eval_metrics["incumbent"]
        # Measured here (5 steps): held-out likelihood accuracy base 0.143 -> candidate 1.0 on 7 held-out pairs,
        # reward margin 0 (the base is its own reference) -> 4.3, chosen perplexity 25.0 -> 5.5.
        assert metrics["compared_with"] == "base" and metrics["pairs"] == run.snapshot.eval_count >= 4
        assert metrics["likelihood_accuracy"] >= base["likelihood_accuracy"] + 0.3, metrics
        assert metrics["reward_margin"] > 0.3 and metrics["reward_accuracy"] >= 0.75, metrics
        assert metrics["chosen_perplexity"] < base["chosen_perplexity"]
        # What each says: greedy answers to every held-out prompt, judged against the chosen answer's command.
        held_out = metrics["held_out_answers"]
        assert len(held_out) == metrics["pairs"] == metrics["key_content_pairs"] == base["key_content_pairs"]
        assert all(row["answer"] and row["incumbent_answer"] and row["chosen"] for row in held_out), held_out
        assert sum(row["answer"] != row["incumbent_answer"] for row in held_out) >= len(held_out) // 2, held_out
        # 5 steps on 17 pairs teach the 135M model the short form, not yet the exact commands (measured here:
        # key content 0 of 7 for both; the demo's 256 pairs teach those): closer wording, shorter answers.
        assert metrics["rouge_l"] > base["rouge_l"], held_out
        assert metrics["mean_answer_chars"] < base["mean_answer_chars"], held_out
        # Both versions answered through the running vLLM, under names that were unloaded after.
        assert metrics["answered_by"] == base["answered_by"] == "vllm", (metrics["answered_by"], base["answered_by"])
        assert not [name for name in loaded_adapters(loop.settings) if name.startswith(f"run-{run.id}-")]
        # The 60 shipped general-knowledge questions: the base model answers 40 right with transformers, 41 through
        # vLLM (measured in bench.learning).
        assert base["general_knowledge"] >= 0.4 and 0 <= metrics["general_knowledge"] <= 1
        # The judge read every held-out question in both orders; the base's win rate is the rest.
        assert metrics["judge_comparisons"] == 2 * len(held_out) and "judge_error" not in metrics, metrics
        assert metrics["judge_win_rate"] + base["judge_win_rate"] == pytest.approx(1.0)
        assert run.not_registered_reason is None and "beats base" in metrics["gate"]
        version = get_version_by_name(session, "v1")
        assert version.training_run_id == run.id and version.status is VersionStatus.candidate
        assert Path(version.adapter_path, "adapter_config.json").exists()
        answers = version.regression_answers
        assert len(answers) == 6 and all(a["answer"].strip() for a in answers), answers


def held_out_questions(loop) -> list[str]:
    with session_scope(loop.engine) as session:
        held_out = load_snapshot(get_run(session, loop.run_id).snapshot)["eval"]
    return [row["prompt"][-1]["content"] for row in held_out]


def concise_commands(answers) -> int:
    """Answers in the preferred style: an inline `command`, finished well before the token limit.
    (The base model uses backticks too, in long code-fenced answers that run to the limit.)"""
    return sum("`" in a.text and a.completion_tokens < 30 for a in answers)


def test_vllm_serves_the_adapter_and_its_answers_prefer_commands(loop):
    questions = held_out_questions(loop)  # never trained on
    base = [answer(loop.settings, [{"role": "user", "content": q}], model="base") for q in questions]
    tuned = [answer(loop.settings, [{"role": "user", "content": q}], model="v1") for q in questions]
    assert [a.served_model for a in tuned] == ["v1"] * len(questions)
    assert [a.text for a in base] != [a.text for a in tuned]
    assert concise_commands(tuned) > concise_commands(base), ([a.text for a in base], [a.text for a in tuned])
    assert sum(a.completion_tokens for a in tuned) < sum(a.completion_tokens for a in base)


def test_gate_refuses_a_candidate_that_does_not_beat_the_active_version(loop):
    with session_scope(loop.engine) as session:
        promote_version(session, get_version_by_name(session, "v1").id, SYSTEM)
    strict = loop.settings.model_copy(update={"gate_margin": 0.5})
    run_id = queue(loop.engine, strict, SYSTEM, RunKind.dpo, {"max_steps": 1})
    execute_run(strict, run_id, engine=loop.engine)
    with session_scope(loop.engine) as session:
        run = get_run(session, run_id)
        assert run.status is RunStatus.succeeded and run.parent_version_id == active_version(session).id
        assert run.not_registered_reason.startswith("does not beat v1: held-out preference accuracy")
        assert "required > +0.500" in run.not_registered_reason
        assert [v.name for v in list_versions(session)] == ["v1"] and active_version(session).name == "v1"


def eval_output(result) -> dict[str, float]:
    assert result.exit_code == 0, result.output
    return {key: float(value) for key, value in re.findall(r"^(\w+): (-?[\d.]+)$", result.output, re.MULTILINE)}


def test_flywheel_eval_scores_a_version_and_the_base_model_on_a_pairs_file(loop, cli, tmp_path):
    with session_scope(loop.engine) as session:
        held_out = load_snapshot(get_run(session, loop.run_id).snapshot)["eval"]
    pairs = tmp_path / "held-out.jsonl"  # the export format: the system prompt is added again on reading
    pairs.write_text("".join(json.dumps({**row, "prompt": [m for m in row["prompt"] if m["role"] != "system"]}) + "\n"
                             for row in held_out))
    env = dict(FLYWHEEL_HOME=str(loop.settings.home), FLYWHEEL_DATABASE_URL=loop.settings.database_url,
               FLYWHEEL_BASE_MODEL_PATH=str(loop.settings.base_model_path), FLYWHEEL_MAX_LENGTH="96")
    served = cli(["eval", "--version", "v1", "--pairs", str(pairs)], **env, FLYWHEEL_VLLM_URL=loop.settings.vllm_url)
    local = cli(["eval", "--version", "base", "--pairs", str(pairs)], **env)  # no vLLM at the default address
    assert "answered_by: vllm" in served.output and "answered_by: transformers" in local.output, local.output
    v1, base = eval_output(served), eval_output(local)
    assert v1["pairs"] == base["pairs"] == len(held_out)
    assert (base["preference_accuracy"], base["reward_margin"]) == (0.0, 0.0)  # its own reference
    assert v1["preference_accuracy"] >= 0.75 and v1["reward_margin"] > 0.3, v1
    assert v1["key_content_pairs"] == base["key_content_pairs"] == len(held_out)
    assert v1["rouge_l"] > base["rouge_l"] and 0 < v1["mean_answer_chars"] < base["mean_answer_chars"], (v1, base)
    unknown = cli(["eval", "--version", "v9", "--pairs", str(pairs)], **env)
    assert unknown.exit_code != 0 and "v9" in unknown.output, unknown.output
    pairs.write_text(pairs.read_text().splitlines()[0] + '\n{"prompt": [{"role": "user", "content": "hi"}]}\n')
    bad = cli(["eval", "--version", "v1", "--pairs", str(pairs)], **env)
    assert bad.exit_code != 0 and "line 2: missing field(s): chosen, rejected" in bad.output, bad.output


def test_evaluation_answers_with_transformers_when_vllm_refuses_midway(loop):
    with session_scope(loop.engine) as session:
        held_out = list(load_snapshot(get_run(session, loop.run_id).snapshot)["eval"])[:2]
    refused = {BASE: answerer(loop.settings, "never-loaded")}  # the real vLLM answers 404 for it
    [scores] = score_versions(loop.settings.base_model_path, {BASE: None}, held_out, TrainConfig(max_length=96),
                              served=refused).values()
    assert scores["answered_by"].startswith("transformers (vLLM failed: ") and "never-loaded" in scores["answered_by"]
    assert len(scores["held_out_answers"]) == 2 and all(row["answer"] for row in scores["held_out_answers"])
    assert 0.4 <= scores["general_knowledge"] <= 1, scores


def test_killed_run_is_reaped_as_failed_and_the_active_version_stays(loop):
    if loop.settings.auto_promote:
        pytest.fail("this test needs auto_promote off")
    with session_scope(loop.engine) as session:
        if active_version(session) is None:
            promote_version(session, get_version_by_name(session, "v1").id, SYSTEM)
    run_id = start_run_now(loop.settings, SYSTEM, overrides={"max_steps": 500})

    def running_mid_way():
        with session_scope(loop.engine) as session:
            run = get_run(session, run_id)
            assert run.status in (RunStatus.queued, RunStatus.running), run.error
            return run if run.current_step >= 1 else None

    run = wait_for(running_mid_way, 600, "the run process to train a step")
    assert Path(run.log_path).read_text().strip()  # the process logs to its file
    os.killpg(run.pid, signal.SIGKILL)  # its own session: kills the process and any children
    time.sleep(1.5)
    FlywheelScheduler(loop.settings.model_copy(update={"heartbeat_timeout_s": 1}), engine=loop.engine).reap()
    with session_scope(loop.engine) as session:
        run = get_run(session, run_id)
        assert run.status is RunStatus.failed and "no heartbeat" in run.error
        assert active_version(session).name == "v1" and [v.name for v in list_versions(session)] == ["v1"]
