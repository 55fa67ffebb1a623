"""The fixed regression prompt set: the candidate's answers to it, kept on its version for side-by-side review."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from serving.errors import ServingError
from training.served_answers import Generate
from training.snapshots import with_system_prompt

PROMPTS_FILE = Path(__file__).with_name("regression_prompts.jsonl")


def regression_prompts(path: Path = PROMPTS_FILE) -> list[str]:
    return [json.loads(line)["prompt"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def answer_regression_prompts(settings, generate: Generate | None) -> list[dict[str, Any]]:
    """Greedy answers as Slack users would get them (the system prompt first), through the evaluation's vLLM;
    without it, the reason instead."""
    if generate is None:
        return [{"error": "vLLM unavailable: it does not run this run's base model"}]
    prompts = regression_prompts()
    conversations = [with_system_prompt([{"role": "user", "content": p}], settings.system_prompt) for p in prompts]
    try:
        answers = generate(conversations, settings.max_answer_tokens)
    except ServingError as exc:
        return [{"error": f"vLLM unavailable: {exc}"}]
    return [{"prompt": prompt, "answer": answer} for prompt, answer in zip(prompts, answers)]
