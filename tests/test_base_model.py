"""The bundled model: prepared into a safetensors folder that answers sensibly, idempotently, checksummed."""

from __future__ import annotations

import json
import shutil

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from serving.base_model import MARKER, bundled_gguf_path, file_sha256, is_prepared, prepare_bundled_model


def test_prepared_model_knows_the_capital_of_france(base_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_prepare_is_idempotent_and_redoes_a_corrupted_model(cli, tmp_path, base_model_dir):
    target = tmp_path / "home" / "models" / "SmolLM2-135M-Instruct"  # the default place under FLYWHEEL_HOME
    shutil.copytree(base_model_dir, target)
    weights = target / "model.safetensors"
    before = weights.stat().st_mtime_ns

    result = cli(["model", "prepare"])  # already prepared: nothing is rewritten
    assert result.exit_code == 0 and "already prepared" in result.stderr, result.output
    assert weights.stat().st_mtime_ns == before

    with weights.open("r+b") as handle:  # flip bytes in the last tensor: the checksum no longer matches
        handle.seek(-64, 2)
        handle.write(bytes(64))
    assert not is_prepared(target, file_sha256(bundled_gguf_path()))
    messages = []
    prepare_bundled_model(target, progress=messages.append)
    assert any("dequantizing" in m for m in messages)
    marker = json.loads((target / MARKER).read_text())
    assert marker["weights_sha256"] == file_sha256(weights) == file_sha256(base_model_dir / "model.safetensors")
    assert not list(target.parent.glob("*.partial*"))  # no temporary folder left behind
