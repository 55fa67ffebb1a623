"""The dashboard against the session's real vLLM: promote / roll back reach the running server
without a restart, and the playground chats with and compares real adapters."""

from __future__ import annotations

import httpx
import pytest
import torch
from peft import LoraConfig, get_peft_model
from sqlalchemy import select
from transformers import AutoModelForCausalLM

from dashboard_support import ADMIN, REVIEWER, app_env, click, confirm, seed, signed_in, stored  # noqa: F401
from storage.models import Interaction, InteractionStatus, PairSource, PairStatus
from storage.pairs import PairFilter, list_pairs

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def adapters(base_model_dir, tmp_path_factory) -> tuple[str, str]:
    """Two real, different PEFT LoRA adapters of the base model (random weights, so they change answers)."""
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    paths = []
    for seed_value in (1, 2):
        torch.manual_seed(seed_value)
        config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        peft_model = get_peft_model(model, config)
        path = tmp_path_factory.mktemp(f"adapter{seed_value}")
        peft_model.save_pretrained(path)
        model = peft_model.unload()  # the plain base model again for the next adapter
        paths.append(str(path))
    return paths[0], paths[1]


@pytest.fixture
def served(sqlite_url, app_env, adapters, base_model_dir, vllm_server):
    app_env(sqlite_url, vllm_url=vllm_server.url, BASE_MODEL_PATH=str(base_model_dir), MAX_ANSWER_TOKENS="16")
    return sqlite_url, seed(sqlite_url, adapters, base_model=str(base_model_dir)), vllm_server.url


def served_adapters(url: str) -> dict[str, str]:
    cards = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    return {card["id"]: card["root"] for card in cards if card.get("parent")}


def test_promote_and_rollback_reach_the_running_vllm(served, adapters):
    _, data, vllm_url = served
    at = signed_in(ADMIN, "models")
    confirm(at, "promote")
    assert "vLLM now serves the registry" in at.success[1].value, [w.value for w in at.warning]
    loaded = served_adapters(vllm_url)
    assert loaded.get(data.candidate) == adapters[1] and data.active not in loaded

    confirm(at, "rollback")
    loaded = served_adapters(vllm_url)
    assert loaded.get(data.active) == adapters[0] and data.candidate not in loaded


def test_playground_chats_and_the_arena_makes_a_pending_pair(served):
    url, data, _ = served
    at = signed_in(REVIEWER, "playground")
    at.selectbox(key="chat_model").select(data.candidate).run()
    at.chat_input[0].set_value("What is the capital of France?").run()
    assert not at.error, at.error[0].value
    answer = stored(url, lambda s: s.scalars(select(Interaction).where(Interaction.user_id == REVIEWER[0])).one())
    assert (answer.status, answer.served_model) == (InteractionStatus.ok, data.candidate) and answer.answer

    at.segmented_control(key="mode").set_value("Arena").run()
    at.selectbox(key="arena_a").select("base")
    at.selectbox(key="arena_b").select(data.active)
    at.text_area(key="arena_question").input("Name one primary colour.")
    at.button(key="ask_both").click().run()
    assert not at.error, at.error[0].value
    base_text = at.session_state["arena"]["answers"][0][1]
    click(at, "pick_0")
    assert "Pending pair" in at.success[0].value
    pair = stored(url, lambda s: list_pairs(s, PairFilter(source=PairSource.arena), limit=1)[0])
    assert (pair.status, pair.chosen, pair.prompt[-1]["content"]) == (PairStatus.pending, base_text,
                                                                      "Name one primary colour.")
