"""The LLM judge: the real vLLM with the bundled model stands in for a team's judge endpoint."""

from __future__ import annotations

import pytest

from flywheel.settings import SettingsError, load_settings
from serving.testing import free_port
from training.gate import decide
from training.judge import judge_versions, win_rate

ROWS = [
    {"prompt": "How do I restart the worker service?", "chosen": "Run `systemctl restart worker`.",
     "answer": "Run `systemctl restart worker`.", "incumbent_answer": "Try turning it off and on."},
    {"prompt": "Where are the logs of the api?", "chosen": "`journalctl -u api`.",
     "answer": "They are in a folder.", "incumbent_answer": "Run `journalctl -u api`."},
    {"prompt": "What does exit code 137 mean?", "chosen": "The process was killed (SIGKILL, often out of memory).",
     "answer": "Killed by SIGKILL, often the OOM killer.", "incumbent_answer": "It means success."},
]
SCORES = {"reward_accuracy": 1.0, "reward_margin": 0.5, "general_knowledge": 0.5}


@pytest.mark.vllm
def test_each_question_is_judged_in_both_orders_so_a_position_bias_cancels(settings, vllm_server):
    judged = settings.model_copy(update={"judge_url": f"{vllm_server.url}/v1"})
    result = win_rate(judged, ROWS)
    assert result["judge_comparisons"] == 2 * len(ROWS)
    assert 0.0 <= result["judge_win_rate"] <= 1.0 and 0 <= result["judge_unclear"] <= 2 * len(ROWS)
    # The same answer on both sides: the two orders are the same question, so a greedy judge gives the same
    # verdict twice, which is one win for each version (or two unclear halves) — exactly a tie.
    same = [{**row, "incumbent_answer": row["answer"]} for row in ROWS]
    assert win_rate(judged, same)["judge_win_rate"] == 0.5
    candidate, incumbent = judge_versions(judged, ROWS)
    assert candidate["judge_win_rate"] + incumbent["judge_win_rate"] == pytest.approx(1.0)


def test_a_gate_that_requires_the_judge_refuses_when_it_does_not_answer(settings):
    down = settings.model_copy(update={"judge_url": f"http://127.0.0.1:{free_port()}/v1", "request_timeout_s": 2})
    candidate, incumbent = judge_versions(down, ROWS)
    assert incumbent == {} and "did not answer" in candidate["judge_error"]
    decision = decide({**SCORES, **candidate}, SCORES, "v1", 0.0, "judge_win_rate")
    assert not decision.passed
    assert decision.reason.startswith("cannot compare the LLM judge's win rate") and "did not answer" in decision.reason


def test_the_gate_reads_the_judges_win_rate_against_one_minus_it(settings):
    assert decide({**SCORES, "judge_win_rate": 0.75}, {**SCORES, "judge_win_rate": 0.25}, "v1", 0.2,
                  "judge_win_rate").passed
    assert not decide({**SCORES, "judge_win_rate": 0.5}, {**SCORES, "judge_win_rate": 0.5}, "v1", 0.0,
                      "judge_win_rate").passed
    assert judge_versions(settings, ROWS) == ({}, {})  # no judge configured: nothing asked
    with pytest.raises(SettingsError, match="FLYWHEEL_JUDGE_URL"):
        load_settings(gate_metric="judge_win_rate")
