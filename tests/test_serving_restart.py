"""Killing the vLLM process: callers get a quick, retryable error; the supervisor restarts it and
reloads the registry's adapters. Uses the session's supervised server and leaves it healthy."""

from __future__ import annotations

import os
import signal
import time

import pytest
from test_serving_adapters import QUESTION, promote, register

from serving.adapters import loaded_adapters, sync_adapters
from serving.client import ModelUnavailable, answer
from serving.engine import is_ready
from serving.testing import random_lora_adapter

pytestmark = pytest.mark.vllm


def test_killed_server_fails_fast_then_comes_back_with_its_adapters(vllm_server, vllm_settings, base_model_dir, tmp_path):
    if vllm_server.supervisor is None:
        pytest.skip("FLYWHEEL_TEST_VLLM_URL points at a server this session does not supervise")
    version_id, name = register(vllm_settings, random_lora_adapter(base_model_dir, tmp_path / "adapter", seed=5))
    promote(vllm_settings, version_id)
    sync_adapters(vllm_settings)
    supervisor = vllm_server.supervisor
    supervisor.after_restart, restarts = (lambda: sync_adapters(vllm_settings)), supervisor.restarts
    try:
        os.kill(supervisor.server.process.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(ModelUnavailable):
            answer(vllm_settings, QUESTION, max_tokens=4)
        assert time.monotonic() - started < 10  # bounded retries, never a hang
        deadline = time.monotonic() + vllm_server.settings.vllm_startup_timeout_s
        while supervisor.restarts == restarts and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        supervisor.after_restart = None
    assert is_ready(vllm_server.url)
    assert name in loaded_adapters(vllm_settings)
    result = answer(vllm_settings, QUESTION, max_tokens=4)
    assert result.served_model == name and result.model_version_id == version_id
