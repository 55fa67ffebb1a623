"""The real vLLM server answers through the client: base model, streaming, routing without adapters."""

from __future__ import annotations

import pytest

from flywheel.settings import load_settings
from serving.client import answer

pytestmark = pytest.mark.vllm


@pytest.fixture
def serving_settings(tmp_path, sqlite_url, base_model_dir, vllm_server):
    return load_settings(home=tmp_path / "home", database_url=sqlite_url, base_model_path=base_model_dir,
                         vllm_url=vllm_server.url)


def test_base_model_answers_a_factual_question(serving_settings):
    result = answer(serving_settings, [{"role": "user", "content": "What is the capital of France?"}], max_tokens=24)
    assert "Paris" in result.text
    assert result.served_model == "base" and result.model_version_id is None  # no adapter yet: routed to base
    assert result.prompt_tokens > 5 and 0 < result.completion_tokens <= 24
    assert result.latency_ms > 0


def test_streaming_passes_each_piece_and_returns_the_whole(serving_settings):
    pieces = []
    result = answer(serving_settings, [{"role": "user", "content": "What is the capital of France?"}],
                    model="base", max_tokens=24, on_token=pieces.append)
    assert len(pieces) > 1 and "".join(pieces) == result.text
    assert "Paris" in result.text and result.completion_tokens > 0
