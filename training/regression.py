"""The fixed regression prompt set, answered through vLLM by a version, for side-by-side review."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from serving.adapters import load_adapter
from serving.client import answer

PROMPTS_FILE = Path(__file__).with_name("regression_prompts.jsonl")


def regression_prompts(path: Path = PROMPTS_FILE) -> list[str]:
    return [json.loads(line)["prompt"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def answer_regression_prompts(settings, model_name: str, adapter_path: str | None) -> list[dict[str, Any]]:
    """Greedy answers of `model_name` (loaded into vLLM first when it is an adapter)."""
    if adapter_path is not None:
        load_adapter(settings, model_name, adapter_path)
    return [
        {"prompt": prompt,
         "answer": answer(settings, [{"role": "user", "content": prompt}], model=model_name, temperature=0.0).text}
        for prompt in regression_prompts()
    ]
