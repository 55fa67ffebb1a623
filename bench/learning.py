"""What a run teaches, method against method: one chat-ops scenario and one team's feedback, trained several
ways on the same approved pairs and budget, each candidate judged by what it says.

    python -m bench.learning                                  # dpo, dpo+sft and kto, the bundled model, 2 CPU cores
    python -m bench.learning --methods dpo+sft --judge-url http://gpu-box:8000/v1

A fresh demo database (training/demo.py: the scenario asked to the real vLLM, the team's votes and better
answers, the pairs and the votes approved), then one run per method through the real path (`start_run_now`: its
own process, snapshot, training, evaluation, gate), each from the base model with the demo's training settings.
KTO learns from the votes only: the 👍 / 👎 labels on the bot's answers, without the better answers' text.
Reported per method: the run's wall time and steps; the evaluation's figures for the candidate and the base
on the held-out pairs (preference accuracy, chosen perplexity, and of the greedy answers the key-content
share, ROUGE-L, mean length, general knowledge, the judge's win rate with --judge-url); and through vLLM, how
many of the scenario's held-out question families (never asked before) the candidate answers with the exact
command.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel.settings import load_settings
from serving.adapters import load_adapter
from storage.db import get_engine, session_scope, upgrade
from storage.models import RunKind
from storage.registry import get_version
from training.demo import (
    ADMIN, answer_all, approve_pending, approve_votes, demo_settings, fresh_home, load_scenario, model_server,
    react_all, registered_version, wait_for_run,
)
from training.launcher import start_run_now


@dataclass(frozen=True)
class Method:
    kind: RunKind
    overrides: dict[str, Any]  # training settings of the run (TrainConfig)
    settings: dict[str, Any] = field(default_factory=dict)  # Flywheel settings the run's process sees


# KTO from votes only: the team's 👍 / 👎 as approved votes, without the better answers' text (kto_pairs off);
# kto+pairs: KTO on the approved pairs too (the default), the same data as DPO's.
METHODS = {"dpo": Method(RunKind.dpo, {"sft_weight": 0.0}), "dpo+sft": Method(RunKind.dpo, {"sft_weight": 1.0}),
           "kto": Method(RunKind.kto, {}, {"kto_pairs": False}), "kto+pairs": Method(RunKind.kto, {})}
FIGURES = ("reward_accuracy", "chosen_perplexity", "key_content_share", "rouge_l", "mean_answer_chars",
           "general_knowledge", "judge_win_rate")


def quiet(*_args) -> None:
    """Progress callbacks the bench does not show."""


def run_method(settings, engine, name: str, held_out: list, first: int) -> dict[str, Any]:
    method, started = METHODS[name], time.monotonic()
    run_id = start_run_now(settings.model_copy(update=method.settings), ADMIN, method.kind, overrides=method.overrides)
    status, metrics, reason, error = wait_for_run(settings, engine, run_id, quiet)
    result = {"method": name, "kind": method.kind.value, "overrides": method.overrides, "settings": method.settings,
              "run_id": run_id, "status": status.value,
              "error": error, "gate": metrics.get("gate") or reason, "wall_s": round(time.monotonic() - started, 1),
              "steps": metrics.get("steps"), "candidate": {k: metrics[k] for k in FIGURES if k in metrics},
              "base": {k: v for k, v in metrics.get("incumbent", {}).items() if k in FIGURES}}
    version = registered_version(engine, run_id)
    if version:  # the scenario's held-out families, answered by the candidate through vLLM
        with session_scope(engine) as session:
            path = get_version(session, version[0]).adapter_path
        load_adapter(settings, version[1], Path(path))
        answers = answer_all(settings, engine, held_out, quiet, "held-out", first=first, model=version[1])
        result["held_out_families_with_the_command"] = sum(i.answered_by(a.text) for i, (_, a) in zip(held_out, answers))
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="dpo,dpo+sft,kto", help=f"Comma-separated, of {sorted(METHODS)}.")
    parser.add_argument("--judge-url", default="", help="An OpenAI-compatible endpoint whose model judges the answers.")
    parser.add_argument("--home", type=Path, help="The bench's demo home (default: a new temporary folder).")
    parser.add_argument("--out", type=Path, default=Path("bench-learning.json"))
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="flywheel-learning-"))
    settings = demo_settings(load_settings(), home).model_copy(update={"judge_url": args.judge_url})
    scenario = load_scenario()
    feedback_items, held_out = [i for i in scenario if not i.held_out], [i for i in scenario if i.held_out]
    fresh_home(home)
    upgrade(settings.database_url)
    engine = get_engine(settings.database_url)
    report: dict[str, Any] = {"scenario": {"feedback_questions": len(feedback_items), "held_out": len(held_out)}}
    with model_server(settings, quiet, print) as settings:
        started = time.monotonic()
        answered = answer_all(settings, engine, feedback_items + held_out, quiet, "asking")
        before = [a for _, a in answered[len(feedback_items):]]
        report["feedback"] = vars(react_all(engine, feedback_items, answered[:len(feedback_items)]))
        report["approved_pairs"], report["approved_votes"] = approve_pending(engine), approve_votes(engine)
        report["base_held_out_families_with_the_command"] = sum(i.answered_by(a.text) for i, a in zip(held_out, before))
        report["feedback_s"] = round(time.monotonic() - started, 1)
        report["methods"] = [run_method(settings, engine, name, held_out, len(scenario) * (n + 1))
                             for n, name in enumerate(args.methods.split(","))]
    args.out.write_text(json.dumps(report, indent=1))
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()
