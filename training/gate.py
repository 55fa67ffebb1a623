"""The registration gate: a candidate is registered only if it beats the version it would replace."""

from __future__ import annotations

from dataclasses import dataclass

# What a version is judged by (training/evaluation.py), in the order reports show it: CLI, demo, model card.
REPORTED = ("reward_accuracy", "reward_margin", "likelihood_accuracy", "chosen_perplexity", "key_content_share",
            "rouge_l", "mean_answer_chars", "general_knowledge", "judge_win_rate")
LABELS = {"reward_accuracy": "held-out preference accuracy",
          "key_content_share": "held-out answers saying the chosen answer's key content",
          "rouge_l": "held-out answers' ROUGE-L against the chosen answers",
          "judge_win_rate": "the LLM judge's win rate (both orders)"}


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str


def decide(candidate: dict[str, float], incumbent: dict[str, float], incumbent_name: str, margin: float,
           metric: str = "reward_accuracy", max_knowledge_drop: float = 1.0) -> GateDecision:
    """`metric` must exceed the incumbent's by more than `margin`; a gain of exactly `margin` (both perfect on a
    small set, say) passes only with a higher mean reward margin. A candidate whose general-knowledge share fell
    by more than `max_knowledge_drop` is refused whatever it gained: it forgot."""
    # rounded: shares of 20 questions are not exact in binary (0.55 - 0.45 > 0.1)
    drop = round(incumbent.get("general_knowledge", 0.0) - candidate.get("general_knowledge", 0.0), 9)
    if drop > max_knowledge_drop:
        return GateDecision(False, (
            f"forgets what {incumbent_name} knew: general-knowledge questions answered right "
            f"{candidate['general_knowledge']:.3f} vs {incumbent['general_knowledge']:.3f} "
            f"(drop {drop:.3f}, allowed {max_knowledge_drop:.3f})"))
    if metric not in candidate or metric not in incumbent:
        why = candidate.get("judge_error", "not measured")
        return GateDecision(False, f"cannot compare {LABELS[metric]} with {incumbent_name}: {why}")
    gain = candidate[metric] - incumbent[metric]
    summary = (
        f"{LABELS[metric]} {candidate[metric]:.3f} vs {incumbent_name} {incumbent[metric]:.3f} "
        f"(gain {gain:+.3f}, required > {margin:+.3f}); reward margin {candidate['reward_margin']:.3f} "
        f"vs {incumbent['reward_margin']:.3f}"
    )
    said = "key_content_share"
    if metric != said and said in candidate and said in incumbent:  # what it says, whatever the gate compared
        summary += f"; {LABELS[said]} {candidate[said]:.3f} vs {incumbent[said]:.3f}"
    if gain > margin or (gain >= margin and candidate["reward_margin"] > incumbent["reward_margin"]):
        return GateDecision(True, f"beats {incumbent_name}: {summary}")
    return GateDecision(False, f"does not beat {incumbent_name}: {summary}")
