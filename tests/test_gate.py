"""The registration gate compares held-out preference (implicit-reward) accuracy, with the reward margin as tie-break."""

from training.gate import decide


def scores(reward_accuracy: float, reward_margin: float, likelihood_accuracy: float = 0.0) -> dict[str, float]:
    return {"reward_accuracy": reward_accuracy, "reward_margin": reward_margin, "likelihood_accuracy": likelihood_accuracy}


def test_a_gain_above_the_margin_passes():
    decision = decide(scores(0.8, 1.2), scores(0.0, 0.0), "base", margin=0.1)
    assert decision.passed and decision.reason.startswith("beats base: held-out preference accuracy 0.800 vs base 0.000")


def test_a_gain_of_exactly_the_margin_needs_a_higher_reward_margin():
    assert decide(scores(1.0, 2.0), scores(1.0, 1.5), "v1", margin=0.0).passed
    refused = decide(scores(1.0, 1.5), scores(1.0, 2.0), "v1", margin=0.0)
    assert not refused.passed and refused.reason.startswith("does not beat v1")


def test_likelihood_accuracy_does_not_decide():
    """Slack pairs reject the model's own greedy answer: outright likelihood stays 0 even after learning."""
    assert decide(scores(0.9, 2.3, likelihood_accuracy=0.0), scores(0.0, 0.0, 0.4), "base", margin=0.0).passed
    assert not decide(scores(0.5, 0.3, likelihood_accuracy=1.0), scores(0.75, 0.9, 0.0), "v2", margin=0.0).passed


def test_the_gate_can_judge_by_what_the_answers_say():
    """A candidate whose preference accuracy rose but whose answers say the key content less often is refused
    when the gate judges by generation, and the reason names the metric."""
    candidate = {**scores(0.9, 2.0), "key_content_share": 0.25, "rouge_l": 0.40}
    incumbent = {**scores(0.5, 0.5), "key_content_share": 0.50, "rouge_l": 0.30}
    passed = decide(candidate, incumbent, "v1", margin=0.0)
    assert passed.passed  # on preference accuracy; the reason still says how often each says the key content
    assert passed.reason.endswith("; held-out answers saying the chosen answer's key content 0.250 vs 0.500")
    refused = decide(candidate, incumbent, "v1", margin=0.0, metric="key_content_share")
    assert not refused.passed
    assert refused.reason.startswith("does not beat v1: held-out answers saying the chosen answer's key content 0.250")
    assert decide(candidate, incumbent, "v1", margin=0.05, metric="rouge_l").passed
    assert not decide(candidate, incumbent, "v1", margin=0.2, metric="rouge_l").passed


def test_a_candidate_that_forgot_general_knowledge_is_refused_whatever_it_gained():
    candidate = {**scores(1.0, 3.0), "general_knowledge": 0.45}
    incumbent = {**scores(0.2, 0.1), "general_knowledge": 0.60}
    refused = decide(candidate, incumbent, "v2", margin=0.0, max_knowledge_drop=0.1)
    assert not refused.passed
    assert refused.reason.startswith("forgets what v2 knew: general-knowledge questions answered right 0.450 vs 0.600")
    assert decide(candidate, incumbent, "v2", margin=0.0, max_knowledge_drop=0.15).passed


def test_a_drop_of_exactly_the_allowed_share_passes():
    """Two of 20 questions lost with 0.1 allowed: 0.55 - 0.45 is 0.10000000000000003 in floating point."""
    candidate, incumbent = {**scores(1.0, 3.0), "general_knowledge": 0.45}, {**scores(0.2, 0.1), "general_knowledge": 0.55}
    assert decide(candidate, incumbent, "base", margin=0.0, max_knowledge_drop=0.1).passed
