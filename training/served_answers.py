"""Each version's held-out answers through the running vLLM: the engine that will serve the candidate, so
the evaluation reads what users would read, and it batches the prompts (transformers' generate answers
them a batch of 8 at a time). Used when vLLM runs the run's own base model; otherwise, or if vLLM fails
during the evaluation, training/evaluation.py answers with transformers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from serving.adapters import PROBE_TIMEOUT_S, load_adapter, served_base_model, unload_adapter
from serving.client import answer
from serving.engine import BASE_MODEL_NAME
from serving.errors import ServingError

log = logging.getLogger(__name__)

Generate = Callable[[list[list[dict]], int], list[str]]  # prompts, max new tokens -> greedy answers
IN_FLIGHT = 32  # requests at once: vLLM batches them
# One request's limit here: the last of IN_FLIGHT waits for those before it (a CPU vLLM runs a few at once), and
# no person waits on an evaluation, so a Slack answer's FLYWHEEL_REQUEST_TIMEOUT_S would fall back to
# transformers on a slow machine for nothing (seen on 2 busy cores: 60 s passed with 60 general-knowledge
# questions queued).
REQUEST_TIMEOUT_S = 600.0


def answerer(settings, served_name: str) -> Generate:
    """Greedy answers of the model vLLM serves as `served_name`, to prompts sent as they are."""
    settings = settings.model_copy(update={"request_timeout_s": max(settings.request_timeout_s, REQUEST_TIMEOUT_S)})

    def ask(messages: list[dict], max_tokens: int) -> str:
        reply = answer(settings, messages, model=served_name, max_tokens=max_tokens, temperature=0.0,
                       system_prompt=False)
        return reply.text.strip()

    def generate(prompts: list[list[dict]], max_tokens: int) -> list[str]:
        with ThreadPoolExecutor(max_workers=max(1, min(IN_FLIGHT, len(prompts)))) as pool:
            return list(pool.map(lambda messages: ask(messages, max_tokens), prompts))

    return generate


def serves_model(settings, model_dir: Path) -> bool:
    """Whether vLLM runs now with `model_dir` as its base model (one started on another would judge another)."""
    try:
        served = served_base_model(settings, PROBE_TIMEOUT_S)
    except ServingError:
        return False
    return served is not None and Path(served).resolve() == Path(model_dir).resolve()


def _serve(settings, model_dir: Path, adapters: dict[str, Path | None], prefix: str) -> dict[str, str]:
    """Version name -> the name vLLM answers it under ({} when vLLM cannot answer for this evaluation)."""
    if not serves_model(settings, model_dir):
        return {}
    served = {name: BASE_MODEL_NAME if path is None else f"{prefix}-{name}" for name, path in adapters.items()}
    try:
        for name, path in adapters.items():
            if path is not None:
                load_adapter(settings, served[name], path)
    except ServingError as exc:
        log.warning("evaluating with transformers: vLLM did not load an adapter (%s)", exc)
        _unload(settings, served)
        return {}
    return served


def _unload(settings, served: dict[str, str]) -> None:
    for served_name in served.values():
        if served_name != BASE_MODEL_NAME:
            try:
                unload_adapter(settings, served_name)
            except ServingError as exc:  # harmless: an unused adapter only holds a slot until vLLM restarts
                log.warning("could not unload %s after the evaluation: %s", served_name, exc)


@contextmanager
def vllm_answerers(settings, model_dir: Path, adapters: dict[str, Path | None], prefix: str) -> Iterator[dict[str, Generate]]:
    """An answerer per version through vLLM ({} when vLLM does not run `model_dir`); the adapters are served
    under `prefix`-name for the while, apart from the names Slack is answered with, and unloaded after."""
    served = _serve(settings, model_dir, adapters, prefix)
    try:
        yield {name: answerer(settings, served_name) for name, served_name in served.items()}
    finally:
        _unload(settings, served)
