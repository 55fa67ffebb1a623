"""The GPU memory plan: a training run's estimated need, vLLM's share beside it, and the refusal of a run that
cannot fit. Arithmetic only (no GPU here); README ("GPU") compares the estimates with H200 measurements."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from flywheel.settings import load_settings
from serving.engine import vllm_command
from serving.gpu_memory import GIB, InsufficientGPUMemory, ModelShape, check_room, run_need, vllm_share

LLAMA_8B_SHAPE = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                  "intermediate_size": 14336, "vocab_size": 49152, "tie_word_embeddings": False}
QKVO = ["q_proj", "k_proj", "v_proj", "o_proj"]


def safetensors_params(path: Path) -> dict[str, int]:
    with path.open("rb") as handle:
        header = json.loads(handle.read(struct.unpack("<Q", handle.read(8))[0]))
    header.pop("__metadata__", None)
    return {name: math.prod(entry["shape"]) for name, entry in header.items()}


def test_shape_counts_the_parameters_of_the_bundled_model(base_model_dir):
    shape = ModelShape.read(base_model_dir)
    params = safetensors_params(base_model_dir / "model.safetensors")
    linear = sum(n for name, n in params.items() if name.endswith("_proj.weight"))
    assert shape.linear_params == linear
    assert shape.embedding_params == params["model.embed_tokens.weight"]  # tied: one matrix


def test_an_8b_shaped_model_in_qlora_needs_a_third_of_lora_bf16(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_8B_SHAPE))
    shape = ModelShape.read(tmp_path)
    assert round((shape.linear_params + shape.embedding_params) / 1e9, 2) == 7.38
    plan = dict(batch_size=4, max_length=1024, lora_r=16, target_modules=QKVO)
    qlora, lora = run_need(shape, qlora=True, **plan), run_need(shape, qlora=False, **plan)
    assert round(lora.weights / 1e9, 2) == 14.76  # bf16: 2 bytes a parameter
    assert round(qlora.weights / 1e9, 2) == 4.41  # NF4 layers (4.127 bits a parameter), bf16 embeddings
    assert qlora.activations == lora.activations and qlora.total < 12 * GIB < 20 * GIB < lora.total
    assert qlora.total > 11_142 * 2**20  # what the whole QLoRA run process took on an H200 (nvidia-smi)
    longer = run_need(shape, qlora=True, **{**plan, "max_length": 2048})
    assert longer.activations == 2 * qlora.activations and longer.total > qlora.total


def test_a_run_that_does_not_fit_is_refused_with_what_to_change(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_8B_SHAPE))
    need = run_need(ModelShape.read(tmp_path), qlora=False, batch_size=4, max_length=1024, lora_r=16,
                    target_modules=QKVO)
    check_room(need, need.total, 140 * GIB, "run 1")  # exactly enough: no refusal
    with pytest.raises(InsufficientGPUMemory) as refused:
        check_room(need, need.total - 1, 140 * GIB, "run 7")
    message = str(refused.value)
    assert message.startswith("run 7 needs about ") and "of 140.0 GiB of GPU memory are free" in message
    assert "FLYWHEEL_QLORA=true" in message and "FLYWHEEL_VLLM_GPU_MEMORY_UTILIZATION" in message


def test_vllm_share_leaves_room_for_the_planned_run(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_8B_SHAPE))
    total = 140 * GIB
    for qlora in (True, False):
        settings = load_settings(home=tmp_path, qlora=qlora, batch_size=4, max_length=1024)
        plan = vllm_share(settings, tmp_path, total_bytes=total)
        left = total * (1 - plan.share)
        need = run_need(ModelShape.read(tmp_path), qlora=qlora, batch_size=4, max_length=1024, lora_r=16,
                        target_modules=QKVO).total
        assert need + 2 * GIB < left <= max(need + 3 * GIB, 0.1 * total) and "stay for a training run" in plan.note
    tiny = load_settings(home=tmp_path, qlora=True, batch_size=1, max_length=64)
    assert vllm_share(tiny, tmp_path, total_bytes=total).share == 0.9  # never more than vLLM's own default
    explicit = load_settings(home=tmp_path, vllm_gpu_memory_utilization=0.5)
    assert vllm_share(explicit, tmp_path).share == 0.5  # the setting wins; no GPU is asked


def test_cuda_command_serves_fp8_weights_when_asked(tmp_path):
    settings = load_settings(home=tmp_path, vllm_quantization="fp8")
    assert "--quantization fp8" in " ".join(vllm_command(settings, Path("m"), cuda=True, gpu_share=0.8))
    assert "--quantization" not in " ".join(vllm_command(settings, Path("m"), cuda=False))
    assert "--quantization" not in " ".join(vllm_command(load_settings(home=tmp_path), Path("m"), cuda=True, gpu_share=0.8))
