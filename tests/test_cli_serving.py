"""The operator's CLI against the session's real vLLM: canary, promote and rollback from a terminal make
the running server load and unload the adapters (as the dashboard's Models page does), and `flywheel
status` reports the adapters vLLM has loaded."""

from __future__ import annotations

import json

import pytest

from dashboard_support import ADMIN, seed
from serving.adapters import loaded_adapters
from serving.testing import random_lora_adapter

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def adapters(base_model_dir, tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("cli-adapters")
    return tuple(str(random_lora_adapter(base_model_dir, root / name, seed=n)) for n, name in enumerate("ab", 1))


def test_cli_registry_changes_reach_the_running_vllm(cli, sqlite_url, adapters, base_model_dir, vllm_server,
                                                     vllm_settings):
    data = seed(sqlite_url, adapters, base_model=str(base_model_dir))
    env = {"FLYWHEEL_DATABASE_URL": sqlite_url, "FLYWHEEL_VLLM_URL": vllm_server.url,
           "FLYWHEEL_BASE_MODEL_PATH": str(base_model_dir)}

    def run(*args: str) -> dict:
        result = cli([*args, "--json"], **env)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    canary = run("versions", "canary", data.candidate, "--share", "0.2", "--as", ADMIN[0])
    assert canary["vllm"]["updated"] and set(canary["vllm"]["loaded"]) == {data.active, data.candidate}
    assert loaded_adapters(vllm_settings) == {data.active: adapters[0], data.candidate: adapters[1]}
    status = run("status")
    assert status["vllm"]["reachable"] and set(status["vllm"]["adapters"]) == {data.active, data.candidate}
    assert status["canary"] == {"version": data.candidate, "share": 0.2}

    assert run("versions", "canary", "off", "--as", ADMIN[0])["vllm"]["unloaded"] == [data.candidate]
    promoted = run("versions", "promote", data.candidate, "--as", ADMIN[0])
    assert (promoted["vllm"]["loaded"], promoted["vllm"]["unloaded"]) == ([data.candidate], [data.active])
    assert loaded_adapters(vllm_settings) == {data.candidate: adapters[1]}
    run("versions", "rollback", "--as", ADMIN[0])
    assert loaded_adapters(vllm_settings) == {data.active: adapters[0]}
    assert run("status")["vllm"]["adapters"] == {data.active: adapters[0]}
