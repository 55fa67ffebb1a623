"""What a run teaches, method against method: one chat-ops scenario and one team's feedback, trained several
ways on the same approved pairs and budget, each candidate judged by what it says.

    python -m bench.learning                                  # dpo, dpo+sft and kto, the bundled model, 2 CPU cores
    python -m bench.learning --methods dpo+sft --judge-url http://gpu-box:8000/v1
    python -m bench.learning --methods dpo+sft --scenario chatops --training default   # the 256-pair default loop

A fresh demo database (training/demo.py: the scenario asked to the real vLLM, the team's votes and better
answers, the pairs and the votes approved), then one run per method through the real path (`start_run_now`: its
own process, snapshot, training, evaluation, gate), each from the base model with the demo's training settings.
KTO learns from the votes only: the 👍 / 👎 labels on the bot's answers, without the better answers' text.

`--votes runbook` is the feedback of a team that only votes: the bot answered every other question with that
question's runbook line in its system prompt (a stand-in for retrieval; the stored prompt is the question
alone; answers of up to 64 tokens, held-out ones too), and the team voted 👍 on each answer that gives the
command and 👎 on the others, writing no better answer. Only KTO can learn from that (no pairs): it shows whether
votes alone teach the command. `--votes runbook+better` is the same team writing the command as a better answer
under each 👎 too, so DPO learns from those pairs and KTO from the votes alone, in one bench run:

    python -m bench.learning --votes runbook+better --methods dpo,dpo+sft,kto
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
    ADMIN, FeedbackCounts, Item, answer_all, approve_pending, approve_votes, ask, demo_settings, fresh_home,
    load_scenario, model_server, react_all, registered_version, wait_for_run,
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
# The demo's training settings that `--training default` puts back to the product's.
DEFAULT_TRAINING = ("max_length", "batch_size", "epochs", "learning_rate", "sft_weight", "lora_r", "lora_alpha",
                    "eval_fraction")
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
              "steps": metrics.get("steps"), "answered_by": metrics.get("answered_by"), "candidate": {k: metrics[k] for k in FIGURES if k in metrics},
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


# `--scenario chatops`: the demo's question families over many services, 256 asked and the held-out families'
# questions about services never asked; `--training default` trains them with the product's own defaults.
FAMILIES = [("How do I restart the {} service on the prod box?", "sudo systemctl restart {}"),
            ("How do I follow the {} service logs live?", "journalctl -u {} -f"),
            ("How do I restart the {} deployment in Kubernetes?", "kubectl rollout restart deployment/{}"),
            ("How do I see the logs of the {} container?", "docker logs {}"),
            ("How do I roll back the last deploy of {}?", "kubectl rollout undo deployment/{}"),
            ("How do I read the {} secret from Vault?", "vault kv get secret/{}"),
            ("How do I scale the {} deployment to three replicas?", "kubectl scale deployment/{} --replicas=3"),
            ("How do I open a shell in the {} pod?", "kubectl exec -it deploy/{} -- sh")]
SERVICES = ["api", "payments", "nginx", "billing", "checkout", "frontend", "auth", "web", "postgres", "rabbitmq",
            "gateway", "ledger", "mailer", "scheduler", "reports", "inventory", "orders", "profile", "media",
            "notifier", "pricing", "catalog", "cart", "analytics", "ingest", "export", "audit", "session", "upload",
            "thumbnails", "webhooks", "ratelimit"]  # 32 × 8 families = 256 asked
HELD_OUT_SERVICES = ["worker", "search", "redis"]


def chatops_scenario() -> list[Item]:
    asked = [Item(q.format(name), c.format(name)) for name in SERVICES for q, c in FAMILIES]
    return asked + [Item(q.format(name), c.format(name), held_out=True) for name in HELD_OUT_SERVICES
                    for q, c in FAMILIES]


RUNBOOK_ANSWER_TOKENS = 64


def runbook_answers(settings, engine, items: list[Item]) -> list[tuple[int, Any]]:
    """`--votes runbook…`: every other question answered with its runbook line in the system prompt."""
    answered = []
    for number, item in enumerate(items):
        hinted = settings.model_copy(update={
            "system_prompt": f"{settings.system_prompt}\nRunbook: `{item.command}`"}) if number % 2 == 0 else settings
        answered.append(ask(hinted, engine, item, number))
    return answered


def collect(settings, engine, items: list[Item], votes: str) -> FeedbackCounts:
    """The scenario's questions asked, and the team's feedback on the answers (see --votes)."""
    if votes == "team":
        return react_all(engine, items, answer_all(settings, engine, items, quiet, "asking"))
    return react_all(engine, items, runbook_answers(settings, engine, items), better=votes == "runbook+better")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="dpo,dpo+sft,kto", help=f"Comma-separated, of {sorted(METHODS)}.")
    parser.add_argument("--scenario", choices=("demo", "chatops"), default="demo",
                        help="demo: the demo's 30 questions (6 held out); chatops: 256 questions (24 held out)")
    parser.add_argument("--training", choices=("demo", "default"), default="demo",
                        help="demo: the demo's fast lesson; default: the settings' own training (FLYWHEEL_* apply)")
    parser.add_argument("--votes", choices=("team", "runbook", "runbook+better"), default="team",
                        help="team: the demo's 👎 + better answers; runbook: votes only; runbook+better: both (above)")
    parser.add_argument("--judge-url", default="", help="An OpenAI-compatible endpoint whose model judges the answers.")
    parser.add_argument("--home", type=Path, help="The bench's demo home (default: a new temporary folder).")
    parser.add_argument("--out", type=Path, default=Path("bench-learning.json"))
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="flywheel-learning-"))
    settings = demo_settings(load_settings(), home).model_copy(update={"judge_url": args.judge_url})
    if args.training == "default":  # the product's training settings; the demo's short answers and open gate stay
        own = load_settings()
        settings = settings.model_copy(update={k: getattr(own, k) for k in DEFAULT_TRAINING})
    if args.votes != "team":  # the command comes after a sentence: 24 tokens cut most of them off
        settings = settings.model_copy(update={"max_answer_tokens": RUNBOOK_ANSWER_TOKENS})
    scenario = chatops_scenario() if args.scenario == "chatops" else load_scenario()
    feedback_items, held_out = [i for i in scenario if not i.held_out], [i for i in scenario if i.held_out]
    fresh_home(home)
    upgrade(settings.database_url)
    engine = get_engine(settings.database_url)
    report: dict[str, Any] = {"training": args.training, "scenario": {
        "name": args.scenario, "feedback_questions": len(feedback_items), "held_out": len(held_out)}}
    with model_server(settings, quiet, print) as settings:
        started = time.monotonic()
        before = [a for _, a in answer_all(settings, engine, held_out, quiet, "asking", first=len(feedback_items))]
        feedback = collect(settings, engine, feedback_items, args.votes)
        report["votes"], report["feedback"] = args.votes, vars(feedback)
        report["approved_pairs"], report["approved_votes"] = approve_pending(engine), approve_votes(engine)
        report["base_held_out_families_with_the_command"] = sum(i.answered_by(a.text) for i, a in zip(held_out, before))
        report["feedback_s"] = round(time.monotonic() - started, 1)
        report["methods"] = [run_method(settings, engine, name, held_out, len(scenario) * (n + 1))
                             for n, name in enumerate(args.methods.split(","))]
    args.out.write_text(json.dumps(report, indent=1))
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()
