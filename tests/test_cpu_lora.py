"""serving/cpu_lora.py: the grouped CPU LoRA ops compute what vLLM's own CPU ops compute, for batches that
use one adapter, several, and none; and the real vLLM server runs them."""

from __future__ import annotations

import pytest
import torch
from vllm.lora.ops import torch_ops as vllm_ops

from serving import cpu_lora

SLOTS, RANK, HIDDEN, OUT = 4, 8, 64, 96
BATCHES = {"one adapter": [0] * 5, "mixed": [1, 0, -1, 1, 2], "no adapter": [-1] * 3, "one token": [2]}


@pytest.fixture(params=[torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def weights(request):
    generator = torch.Generator().manual_seed(0)
    lora_a = torch.randn(SLOTS, 1, RANK, HIDDEN, generator=generator).to(request.param)
    lora_b = torch.randn(SLOTS, 1, OUT, RANK, generator=generator).to(request.param)
    lora_a[-1], lora_b[-1] = 0, 0  # vLLM's op reads the last slot for a token without adapter: keep it empty
    return lora_a, lora_b


@pytest.fixture(autouse=True)
def fresh_groups():
    yield
    cpu_lora.forget_groups()  # each test's index tensors are new: vLLM's stay put between its updates


def close(expected: torch.Tensor, got: torch.Tensor) -> bool:
    return torch.allclose(expected.float(), got.float(), rtol=1e-2, atol=5e-2)


@pytest.mark.parametrize("batch", BATCHES.values(), ids=BATCHES.keys())
def test_shrink_and_expand_match_vllms_ops(weights, batch):
    lora_a, lora_b = weights
    indices, x = torch.tensor(batch), torch.randn(len(batch), HIDDEN).to(lora_a.dtype)
    expected, got = torch.full((len(batch), RANK), 7.0), torch.full((len(batch), RANK), 7.0)  # stale buffer
    vllm_ops.bgmv_shrink(x, lora_a, expected, indices, 0.5)
    cpu_lora.bgmv_shrink(x, lora_a, got, indices, 0.5)
    assert close(expected, got)
    for add in (True, False):
        y = torch.randn(len(batch), OUT + 10).to(lora_a.dtype)
        expected_y, got_y = y.clone(), y.clone()
        vllm_ops.bgmv_expand_slice(expected, lora_b, expected_y, indices, 5, OUT, add)
        cpu_lora.bgmv_expand_slice(expected, lora_b, got_y, indices, 5, OUT, add)
        assert close(expected_y, got_y)
        expected_y, got_y = y[:, :OUT].clone(), y[:, :OUT].clone()
        vllm_ops.bgmv_expand(expected, lora_b, expected_y, indices, add)
        cpu_lora.bgmv_expand(expected, lora_b, got_y, indices, add)
        assert close(expected_y, got_y)


def test_prefill_ops_follow_each_sequences_adapter(weights):
    lora_a, lora_b = weights
    lengths, adapters = torch.tensor([3, 2, 4]), torch.tensor([1, -1, 0])
    layout = (torch.tensor([0, 3, 5]), lengths, adapters, 3, 4, 9)
    x = torch.randn(9, HIDDEN).to(lora_a.dtype)
    expected, got = torch.zeros(9, RANK), torch.zeros(9, RANK)
    vllm_ops.sgmv_shrink(x, lora_a, expected, *layout, 2.0)
    cpu_lora.sgmv_shrink(x, lora_a, got, *layout, 2.0)
    assert close(expected, got) and got[3:5].abs().sum() == 0  # the sequence without adapter gets nothing
    y = torch.randn(9, OUT + 4).to(lora_a.dtype)
    expected_y, got_y = y.clone(), y.clone()
    vllm_ops.sgmv_expand_slice(expected, lora_b, expected_y, *layout, 4, OUT, True)
    cpu_lora.sgmv_expand_slice(expected, lora_b, got_y, *layout, 4, OUT, True)
    assert close(expected_y, got_y)


@pytest.mark.vllm
def test_the_cpu_server_runs_the_grouped_ops(vllm_server):
    if vllm_server.settings is None:
        pytest.skip("an external vLLM (FLYWHEEL_TEST_VLLM_URL) was started by someone else")
    log = (vllm_server.settings.logs_dir / "vllm.log").read_text()
    assert "grouped CPU LoRA ops in use" in log, log[-2000:]
