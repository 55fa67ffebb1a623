"""The vLLM launch command and environment follow the settings and the build (no server needed)."""

from __future__ import annotations

from pathlib import Path

from flywheel.settings import load_settings
from serving import engine
from serving.engine import lora_target_modules, vllm_command, vllm_env
from serving.gpu_memory import vllm_share
from serving.routing import user_bucket


def test_cpu_command_has_lora_and_limits_but_no_gpu_options(tmp_path):
    settings = load_settings(home=tmp_path, vllm_port=18123, vllm_max_lora_rank=32, vllm_max_loras=2,
                             vllm_max_model_len=1024, vllm_kv_cache_gib=3, vllm_extra_args="--seed 7")
    command = vllm_command(settings, Path("/models/m"), cuda=False)
    joined = " ".join(command)
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    for part in ("--model /models/m", "--served-model-name base", "--port 18123", "--max-model-len 1024",
                 "--enable-lora", "--max-lora-rank 32", "--max-loras 2", "--lora-target-modules", "--seed 7"):
        assert part in joined
    assert "--tensor-parallel-size" not in joined and "--gpu-memory-utilization" not in joined
    env = vllm_env(settings, cuda=False)
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3" and env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"  # the model computes on every core
    import trl  # noqa: F401  (sets VLLM_LOGGING_LEVEL=ERROR in this process on import)

    assert vllm_env(settings, cuda=False)["VLLM_LOGGING_LEVEL"] == "INFO"


def test_cuda_command_has_tensor_parallel_and_memory_share(tmp_path):
    settings = load_settings(home=tmp_path, vllm_tensor_parallel_size=2, vllm_gpu_memory_utilization=0.5)
    joined = " ".join(vllm_command(settings, Path("m"), cuda=True, gpu_share=vllm_share(settings, Path("m")).share))
    assert "--tensor-parallel-size 2" in joined and "--gpu-memory-utilization 0.5" in joined
    assert "--enable-lora" in joined and "--lora-target-modules o_proj qkv_proj" in joined


def test_a_vllm_that_streams_every_token_gets_the_chunk_size_as_its_server_setting(tmp_path, monkeypatch):
    settings = load_settings(home=tmp_path, stream_chunk_tokens=12)
    assert engine.takes_stream_interval_per_request()  # the pinned CPU build (0.32) reads it from each request
    assert "--stream-interval" not in vllm_command(settings, Path("m"), cuda=False)
    monkeypatch.setattr(engine, "takes_stream_interval_per_request", lambda: False)  # as vLLM 0.26 (CUDA)
    assert "--stream-interval 12" in " ".join(vllm_command(settings, Path("m"), cuda=False))


def test_lora_targets_use_vllm_fused_module_names(tmp_path):
    settings = load_settings(home=tmp_path, lora_target_modules="q_proj,k_proj,v_proj,o_proj,up_proj,down_proj")
    assert lora_target_modules(settings) == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]


def test_user_buckets_are_stable_and_spread():
    buckets = [user_bucket(f"U{i:05d}") for i in range(2000)]
    assert buckets == [user_bucket(f"U{i:05d}") for i in range(2000)]
    assert all(0 <= b < 1 for b in buckets)
    assert 0.45 < sum(b < 0.5 for b in buckets) / len(buckets) < 0.55
