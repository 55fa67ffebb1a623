"""LoRA on vLLM's CPU build at the cost of one small matmul per adapter, not one per token.

vLLM's CPU LoRA ops (vllm/lora/ops/torch_ops) gather every token's adapter matrices
(`weights[indices]`, a copy of r x hidden numbers per token per layer) and multiply them with a
batched einsum, so a batch of prompts copies those matrices once per prompt token: an adapter cost 30 % of
the throughput at concurrency 64 here (77 % on another 2-core machine). Tokens of one step use a handful of adapters (usually one), so these
ops group the tokens by adapter (once per step, not once per layer) and run one matmul per group.

Loaded in every vLLM process as a general plugin (entry point `vllm.general_plugins` in
pyproject.toml); `VLLM_PLUGINS=""` turns it off, which bench/serving.py uses as its baseline.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("vllm.flywheel_cpu_lora")  # under vLLM's logger: its log shows the line
NO_LORA = -1  # vLLM's index of a token served without an adapter


# The grouping of one step, computed once and shared by every LoRA layer of it: {(tensor address, length):
# groups}. vLLM rewrites its index buffers in place only in update_metadata, which register() makes forget.
_step_groups: dict[tuple, list] = {}


def forget_groups() -> None:
    """Call when the index tensors may hold other values (vLLM: in update_metadata)."""
    _step_groups.clear()


def _grouping(indices: torch.Tensor) -> list[tuple[int, torch.Tensor | None]]:
    """(adapter slot, the rows that use it); rows None when every row uses the same slot."""
    slots = torch.unique(indices).tolist()
    if len(slots) == 1:
        return [(slots[0], None)]
    return [(slot, torch.nonzero(indices == slot).squeeze(1)) for slot in slots]


def _groups(key_tensors: tuple[torch.Tensor, ...], per_token) -> list[tuple[int, torch.Tensor | None]]:
    key = tuple((tensor.data_ptr(), tensor.numel()) for tensor in key_tensors)
    if key not in _step_groups:
        _step_groups[key] = _grouping(per_token())
    return _step_groups[key]


def _products(inputs: torch.Tensor, weights: torch.Tensor, groups, dtype: torch.dtype):
    """Yield (rows, inputs[rows] @ weights[slot].T) for each adapter in use; rows None means all."""
    for slot, rows in groups:
        if slot == NO_LORA:
            continue
        weight = weights[slot]
        if weight.dim() == 3:  # (1, out, in): the stacked layout keeps a layer axis of one
            weight = weight[0]
        selected = inputs if rows is None else inputs[rows]
        yield rows, selected.to(dtype) @ weight.to(dtype).T


def _write(output: torch.Tensor, rows, values: torch.Tensor, add: bool) -> None:
    if rows is None:  # in place: `output` is often a column slice of the layer's output
        output.add_(values) if add else output.copy_(values)
    else:
        output[rows] = output[rows] + values if add else values


def _zero_unserved(output: torch.Tensor, groups) -> None:
    # A token without an adapter gets no LoRA term (vLLM's own CPU op reads slot -1, the last one).
    for slot, rows in groups:
        if slot == NO_LORA:
            output.zero_() if rows is None else output.index_fill_(0, rows, 0)


def _shrink(inputs, lora_a_weights, output_tensor, groups, scaling) -> None:
    output = output_tensor[:, :lora_a_weights.shape[-2]]
    _zero_unserved(output, groups)
    for rows, values in _products(inputs, lora_a_weights, groups, output_tensor.dtype):
        _write(output, rows, scaling * values, add=False)


def _expand_slice(inputs, lora_b_weights, output_tensor, groups, slice_offset, slice_size, add_inputs) -> None:
    output = output_tensor[:, slice_offset:slice_offset + slice_size]
    if not add_inputs:
        _zero_unserved(output, groups)
    for rows, values in _products(inputs, lora_b_weights, groups, output_tensor.dtype):
        _write(output, rows, values[:, :slice_size], add=add_inputs)


def _expand(inputs, lora_b_weights, output_tensor, groups, add_inputs) -> None:
    # The adapter and the model may pad their output widths differently: the common columns are written.
    width = min(lora_b_weights.shape[-2], output_tensor.shape[1])
    _expand_slice(inputs, lora_b_weights[..., :width, :], output_tensor, groups, 0, width, add_inputs)


def _token_groups(indices: torch.Tensor):
    return _groups((indices,), lambda: indices)


def _sequence_groups(lora_indices: torch.Tensor, seq_lens: torch.Tensor):
    return _groups((lora_indices, seq_lens), lambda: torch.repeat_interleave(lora_indices, seq_lens))


# vLLM's op signatures (vllm/lora/ops/torch_ops): bgmv_* take one adapter index per token, sgmv_* one per sequence.


def bgmv_shrink(inputs, lora_a_weights, output_tensor, lora_indices_tensor, scaling=1.0):
    _shrink(inputs, lora_a_weights, output_tensor, _token_groups(lora_indices_tensor), scaling)


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs=True):
    _expand(inputs, lora_b_weights, output_tensor, _token_groups(lora_indices_tensor), add_inputs)


def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset, slice_size,
                      add_inputs=True):
    _expand_slice(inputs, lora_b_weights, output_tensor, _token_groups(lora_indices_tensor), slice_offset,
                  slice_size, add_inputs)


def sgmv_shrink(inputs, lora_a_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
                batches, max_seq_length, token_nums, scaling):
    _shrink(inputs, lora_a_weights, output_tensor, _sequence_groups(lora_indices_tensor, seq_len_tensor), scaling)


def sgmv_expand(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
                batches, max_seq_length, token_nums, add_inputs=False):
    _expand(inputs, lora_b_weights, output_tensor, _sequence_groups(lora_indices_tensor, seq_len_tensor),
            add_inputs)


def sgmv_expand_slice(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
                      batches, max_seq_length, token_nums, slice_offset, slice_size, add_inputs=False):
    _expand_slice(inputs, lora_b_weights, output_tensor, _sequence_groups(lora_indices_tensor, seq_len_tensor),
                  slice_offset, slice_size, add_inputs)


GROUPED_OPS = {op.__name__: op for op in (bgmv_shrink, bgmv_expand, bgmv_expand_slice,
                                          sgmv_shrink, sgmv_expand, sgmv_expand_slice)}


def register() -> None:
    """vLLM general plugin: on the CPU platform, vLLM's CPU punica wrapper calls the grouped ops."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.lora.punica_wrapper import punica_cpu

    for name, op in GROUPED_OPS.items():
        setattr(punica_cpu, name, op)
    update_metadata = punica_cpu.PunicaWrapperCPU.update_metadata

    def update_metadata_and_forget_groups(self, *args, **kwargs):
        forget_groups()
        update_metadata(self, *args, **kwargs)

    punica_cpu.PunicaWrapperCPU.update_metadata = update_metadata_and_forget_groups
    log.info("flywheel: grouped CPU LoRA ops in use")
