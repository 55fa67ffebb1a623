"""The registration gate: a candidate is registered only if it beats the version it would replace."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str


def decide(candidate: dict[str, float], incumbent: dict[str, float], incumbent_name: str, margin: float) -> GateDecision:
    """Held-out preference (implicit-reward) accuracy must exceed the incumbent's by more than `margin`; a
    gain of exactly `margin` (both perfect on a small set, say) passes only with a higher mean reward margin."""
    gain = candidate["reward_accuracy"] - incumbent["reward_accuracy"]
    summary = (
        f"held-out preference accuracy {candidate['reward_accuracy']:.3f} vs {incumbent_name} "
        f"{incumbent['reward_accuracy']:.3f} "
        f"(gain {gain:+.3f}, required > {margin:+.3f}); reward margin {candidate['reward_margin']:.3f} "
        f"vs {incumbent['reward_margin']:.3f}"
    )
    if gain > margin or (gain >= margin and candidate["reward_margin"] > incumbent["reward_margin"]):
        return GateDecision(True, f"beats {incumbent_name}: {summary}")
    return GateDecision(False, f"does not beat {incumbent_name}: {summary}")
