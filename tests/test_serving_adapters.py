"""Real PEFT LoRA adapters in the real vLLM: runtime load/unload, refusals, registry sync, routing, hot swap."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from flywheel.settings import load_settings
from serving.adapters import load_adapter, loaded_adapters, sync_adapters, unload_adapter
from serving.client import answer
from serving.engine import VLLMServer
from serving.errors import AdapterError, ServingError
from serving.routing import resolve, user_bucket
from serving.testing import free_port, random_lora_adapter
from storage import registry
from storage.db import get_engine, session_scope
from storage.users import SYSTEM

pytestmark = pytest.mark.vllm
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def adapters(base_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {
        "a": random_lora_adapter(base_model_dir, root / "a", seed=1),
        "b": random_lora_adapter(base_model_dir, root / "b", seed=2),
        "rank32": random_lora_adapter(base_model_dir, root / "rank32", rank=32, seed=3),
    }


def register(settings, path) -> tuple[int, str]:
    with session_scope(get_engine(settings.database_url)) as session:
        version = registry.register_version(session, adapter_path=str(path), base_model="base",
                                            training_run_id=None, parent_id=None, metrics={})
        return version.id, version.name


def promote(settings, version_id: int) -> None:
    with session_scope(get_engine(settings.database_url)) as session:
        registry.promote_version(session, version_id, SYSTEM)


def text(settings, model: str) -> str:
    return answer(settings, QUESTION, model=model, max_tokens=12).text


def test_adapter_loads_at_runtime_answers_when_named_and_unloads(vllm_settings, adapters):
    base_text = text(vllm_settings, "base")
    assert load_adapter(vllm_settings, "t-load", adapters["a"]) is True
    assert load_adapter(vllm_settings, "t-load", adapters["a"]) is False  # idempotent
    assert loaded_adapters(vllm_settings)["t-load"] == str(adapters["a"].resolve())
    result = answer(vllm_settings, QUESTION, model="t-load", max_tokens=12)
    assert result.served_model == "t-load" and result.text != base_text  # the adapter's weights are used
    assert unload_adapter(vllm_settings, "t-load") is True
    assert "t-load" not in loaded_adapters(vllm_settings)
    assert unload_adapter(vllm_settings, "t-load") is False
    with pytest.raises(ServingError, match="does not serve a model named 't-load'"):
        answer(vllm_settings, QUESTION, model="t-load", max_tokens=4)


def test_a_name_loaded_from_another_path_is_replaced(vllm_settings, adapters):
    load_adapter(vllm_settings, "t-other", adapters["b"])
    expected_b = text(vllm_settings, "t-other")
    load_adapter(vllm_settings, "t-same", adapters["a"])
    assert text(vllm_settings, "t-same") != expected_b
    assert load_adapter(vllm_settings, "t-same", adapters["b"]) is True  # e.g. "v1" of another database
    assert loaded_adapters(vllm_settings)["t-same"] == str(adapters["b"].resolve())
    assert text(vllm_settings, "t-same") == expected_b
    for name in ("t-other", "t-same"):
        unload_adapter(vllm_settings, name)


def test_a_version_is_answered_by_its_own_adapter_when_vllm_holds_another_under_its_name(vllm_settings, adapters):
    """One vLLM, two registries (a demo home, a restored database): each has a "v1" of its own."""
    load_adapter(vllm_settings, "t-b", adapters["b"])
    expected_b = text(vllm_settings, "t-b")
    _, name = register(vllm_settings, adapters["b"])
    load_adapter(vllm_settings, name, adapters["a"])  # the other registry's version of that name
    assert text(vllm_settings, name) == expected_b
    assert loaded_adapters(vllm_settings)[name] == str(adapters["b"].resolve())
    for served in ("t-b", name):
        unload_adapter(vllm_settings, served)


def test_bad_adapters_are_refused_and_the_served_version_stays(vllm_settings, adapters, tmp_path):
    with pytest.raises(AdapterError, match="adapter_config.json missing"):
        load_adapter(vllm_settings, "t-missing", tmp_path / "gone")
    with pytest.raises(AdapterError, match="rank 32, above the server's maximum 16"):
        load_adapter(vllm_settings, "t-big", adapters["rank32"])
    good_id, good = register(vllm_settings, adapters["a"])
    promote(vllm_settings, good_id)
    sync_adapters(vllm_settings)
    bad_id, bad = register(vllm_settings, tmp_path / "gone")
    promote(vllm_settings, bad_id)
    with pytest.raises(AdapterError, match="nothing was unloaded"):
        sync_adapters(vllm_settings)
    served = loaded_adapters(vllm_settings)
    assert good in served and bad not in served
    assert answer(vllm_settings, QUESTION, model=good, max_tokens=4).served_model == good


def test_sync_follows_the_registry_and_routing_picks_active_or_canary(vllm_settings, adapters):
    assert resolve(vllm_settings, None).model == "base"  # no adapter yet
    v1_id, v1 = register(vllm_settings, adapters["a"])
    v2_id, v2 = register(vllm_settings, adapters["b"])
    load_adapter(vllm_settings, "t-stray", adapters["b"])
    promote(vllm_settings, v1_id)
    with session_scope(get_engine(vllm_settings.database_url)) as session:
        registry.start_canary(session, v2_id, 0.3, SYSTEM)
    result = sync_adapters(vllm_settings)
    assert v2 in result.loaded and "t-stray" in result.unloaded  # v1 may be loaded already by an earlier test
    assert set(loaded_adapters(vllm_settings)) == {v1, v2}
    assert sync_adapters(vllm_settings).loaded == []  # idempotent
    users = [f"user-{i}" for i in range(400)]
    routes = {user: resolve(vllm_settings, None, user).model for user in users}
    canary_share = sum(model == v2 for model in routes.values()) / len(users)
    assert 0.2 < canary_share < 0.4
    assert all(resolve(vllm_settings, None, user).model == routes[user] for user in users[:50])  # stable
    canary_user = next(user for user in users if user_bucket(user) < 0.3)
    assert answer(vllm_settings, QUESTION, user_id=canary_user, max_tokens=4).model_version_id == v2_id


def test_hot_swap_under_load_loses_no_request(vllm_settings, adapters):
    # 50 LoRA requests at once are slow on a busy 2-core CPU: allow for it, this test is about the swap.
    vllm_settings = vllm_settings.model_copy(update={"request_timeout_s": 300})
    v1_id, v1 = register(vllm_settings, adapters["a"])
    v2_id, v2 = register(vllm_settings, adapters["b"])
    promote(vllm_settings, v1_id)
    sync_adapters(vllm_settings)

    def ask(i: int):
        question = [{"role": "user", "content": f"Python tip {i}?"}]
        return answer(vllm_settings, question, user_id=f"user-{i}", max_tokens=2)

    with ThreadPoolExecutor(max_workers=50) as pool:
        during = [pool.submit(ask, i) for i in range(50)]
        time.sleep(1.0)  # requests are in flight
        promote(vllm_settings, v2_id)
        sync_adapters(vllm_settings)
        after = [pool.submit(ask, i) for i in range(50, 60)]
        during_results = [future.result() for future in during]  # raises if any request failed
        after_results = [future.result() for future in after]
    assert {r.served_model for r in during_results} <= {v1, v2}
    assert any(r.served_model == v1 for r in during_results)  # the swap really happened mid-load
    assert all(r.served_model == v2 and r.model_version_id == v2_id for r in after_results)
    assert set(loaded_adapters(vllm_settings)) == {v2}


@pytest.fixture(scope="module")
def float32_vllm(base_model_dir, tmp_path_factory):
    """A vLLM computing in float32. In bf16, on CPUs whose matrix units (AMX) block the work by batch size, a
    batch's greedy answers differ from the same requests' alone by rounding wherever random adapters leave
    near-ties (seen here: 2 of 9 answers diverged after one token), whether or not the adapters are grouped
    right; in float32 only a wrong adapter changes an answer."""
    settings = load_settings(home=tmp_path_factory.mktemp("vllm-fp32"), base_model_path=base_model_dir,
                             vllm_port=free_port(), vllm_extra_args="--dtype float32")
    server = VLLMServer(settings, base_model_dir)
    server.start()
    try:
        server.wait_ready()
        yield server.url
    finally:
        server.stop()


def test_a_batch_mixing_adapters_and_the_base_answers_each_as_alone(vllm_settings, adapters, float32_vllm):
    """On the CPU the LoRA ops group a step's tokens by adapter (serving/cpu_lora.py): every request in a
    batch of base, `a` and `b` requests gets its own model's greedy answer."""
    vllm_settings = vllm_settings.model_copy(update={"vllm_url": float32_vllm})
    for name in ("t-mix-a", "t-mix-b"):
        load_adapter(vllm_settings, name, adapters[name[-1]])
    models = ["base", "t-mix-a", "t-mix-b"] * 3
    alone = {model: text(vllm_settings, model) for model in set(models)}
    assert len(set(alone.values())) == 3  # the three models really answer differently
    with ThreadPoolExecutor(max_workers=len(models)) as pool:
        together = list(pool.map(lambda model: text(vllm_settings, model), models))
    assert together == [alone[model] for model in models]
    for name in ("t-mix-a", "t-mix-b"):
        unload_adapter(vllm_settings, name)
