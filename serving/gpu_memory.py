"""One GPU shared by vLLM and training runs: what a run needs, and the share of the GPU vLLM takes beside it.

vLLM takes its share when it starts (weights, CUDA graphs, then KV cache up to the share) and keeps it;
a run started later gets what is left. So unless FLYWHEEL_VLLM_GPU_MEMORY_UTILIZATION is set, vLLM's share
is the GPU minus what a run with the current training settings needs (`run_need`), and every run checks
before it loads the model that it fits (`check_room`), refusing with a message instead of running out of
memory halfway. Both serving and training keep running: Slack is answered while a run trains.

`run_need` is an estimate from the model's config.json, not a measurement; README ("GPU") compares it
with peaks measured on an H200.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

GIB = 2**30
NF4_BYTES = 4.127 / 8  # NF4 with double quantization: 4 bits + 8-bit absmax per 64 + fp32 per 256 blocks
ADAPTER_BYTES = 16  # per LoRA parameter: fp32 weight, gradient and Adam's two moments
EVAL_ROWS = 8  # sequences evaluation scores at once (training.evaluation's batch)
FRAGMENTATION = 1.1  # PyTorch's caching allocator holds more than the live tensors
# Outside PyTorch's tensors: CUDA context, cuBLAS workspaces, kernel modules. Measured on an H200 (torch 2.11,
# CUDA 13): a QLoRA run's process peaked at 11,142 MiB by nvidia-smi against 9,328 MiB reserved by PyTorch.
PROCESS_OVERHEAD = 2 * GIB
# What vLLM holds beyond its share, plus what the driver keeps: measured on the H200, vLLM's process took
# 2.2 GiB more than --gpu-memory-utilization (1.3 GiB of CUDA graphs, its context), and nvidia-smi's
# total is 0.6 GiB above what CUDA can allocate.
BEYOND_VLLM_SHARE = 3 * GIB
MAX_VLLM_SHARE = 0.9  # vLLM's own default: room for the driver and other processes


class InsufficientGPUMemory(RuntimeError):
    """A run would not fit in the GPU memory that is free now."""


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only transformer, from its config.json."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool

    @classmethod
    def read(cls, model_dir: Path) -> ModelShape:
        config = json.loads((Path(model_dir) / "config.json").read_text())
        config = config.get("text_config", config)
        hidden, heads = config["hidden_size"], config["num_attention_heads"]
        return cls(hidden, config["num_hidden_layers"], heads, config.get("num_key_value_heads") or heads,
                   config.get("head_dim") or hidden // heads, config["intermediate_size"], config["vocab_size"],
                   bool(config.get("tie_word_embeddings", False)))

    def module_dims(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear module of one layer."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {"q_proj": (self.hidden, q), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv),
                "o_proj": (q, self.hidden), "gate_proj": (self.hidden, self.intermediate),
                "up_proj": (self.hidden, self.intermediate), "down_proj": (self.intermediate, self.hidden)}

    @property
    def linear_params(self) -> int:
        return self.layers * sum(i * o for i, o in self.module_dims().values())

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    def lora_params(self, rank: int, modules: list[str]) -> int:
        dims = self.module_dims()
        return self.layers * rank * sum(sum(dims[m]) for m in modules if m in dims)


@dataclass(frozen=True)
class RunNeed:
    """Estimated peak GPU memory of one training run's process (training, then evaluation), in bytes."""

    weights: int
    adapter: int
    activations: int
    evaluation: int

    @property
    def total(self) -> int:
        peak = max(self.weights + self.adapter + self.activations, self.weights + self.evaluation)
        return int(peak * FRAGMENTATION) + PROCESS_OVERHEAD

    def describe(self) -> str:
        return (f"{gib(self.total)} GiB: weights {gib(self.weights)}, activations {gib(self.activations)}, "
                f"adapter and optimizer {gib(self.adapter)}, evaluation {gib(self.evaluation)}")


def run_need(shape: ModelShape, *, qlora: bool, batch_size: int, max_length: int, lora_r: int,
             target_modules: list[str]) -> RunNeed:
    """A DPO run on CUDA: bf16 (or NF4) base, gradient checkpointing, chosen and rejected in one batch,
    TRL's fused LM head (no full logits in training); evaluation scores with full logits in fp32."""
    weights = shape.linear_params * (NF4_BYTES if qlora else 2) + shape.embedding_params * 2
    tokens = 2 * batch_size * max_length
    checkpoints = shape.layers * tokens * shape.hidden * 2  # each layer's input, kept for the backward pass
    one_layer = tokens * (16 * shape.hidden + 6 * shape.intermediate) * 2  # recomputed layer + its gradients
    evaluation = EVAL_ROWS * max_length * shape.vocab * (2 + 4 + 4)  # bf16 logits, fp32 copy, log-softmax
    adapter = shape.lora_params(lora_r, target_modules) * ADAPTER_BYTES
    return RunNeed(int(weights), adapter, checkpoints + one_layer, evaluation)


def settings_run_need(settings, model_dir: Path) -> RunNeed:
    """What a run with these settings needs (runs may override them: the runner checks its own config)."""
    return run_need(ModelShape.read(model_dir), qlora=settings.qlora, batch_size=settings.batch_size,
                    max_length=settings.max_length, lora_r=settings.lora_r, target_modules=settings.target_modules)


def check_room(need: RunNeed, free_bytes: int, total_bytes: int, what: str) -> None:
    """Raise InsufficientGPUMemory, saying what to change, when `need` does not fit in `free_bytes`."""
    if need.total <= free_bytes:
        return
    raise InsufficientGPUMemory(
        f"{what} needs about {need.describe()}; only {gib(free_bytes)} of {gib(total_bytes)} GiB of GPU memory "
        f"are free (vLLM and other processes hold the rest). Set FLYWHEEL_QLORA=true, lower FLYWHEEL_BATCH_SIZE "
        f"or FLYWHEEL_MAX_LENGTH, or give vLLM less (FLYWHEEL_VLLM_GPU_MEMORY_UTILIZATION) and restart it."
    )


@dataclass(frozen=True)
class SharePlan:
    share: float  # --gpu-memory-utilization
    note: str  # one line for the log: where the number comes from


def vllm_share(settings, model_dir: Path, total_bytes: int | None = None) -> SharePlan:
    """vLLM's GPU memory share: the setting when given, else what leaves room for a training run."""
    if settings.vllm_gpu_memory_utilization:
        return SharePlan(settings.vllm_gpu_memory_utilization, "set by FLYWHEEL_VLLM_GPU_MEMORY_UTILIZATION")
    total = total_bytes or gpu_total_bytes()
    need = settings_run_need(settings, model_dir)
    share = round(min(MAX_VLLM_SHARE, max(0.05, (total - need.total - BEYOND_VLLM_SHARE) / total)), 3)
    return SharePlan(share, f"vLLM takes {share} of {gib(total)} GiB; {gib(total * (1 - share))} GiB stay for a "
                            f"training run, estimated at {need.describe()}")


def gpu_total_bytes() -> int:
    """Total memory of the first GPU this process may use, read through nvidia-smi: asking CUDA would
    create a context that `flywheel serve` would hold, on the GPU it is sharing out, for its whole life."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    query = ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(query + (["-i", visible] if visible else []), capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):  # a container without nvidia-smi: CUDA's own figure
        import torch

        return torch.cuda.get_device_properties(0).total_memory
    return int(out.stdout.split()[0]) * 2**20


def gib(value: float) -> str:
    return f"{value / GIB:.1f}"
