"""DPO throughput, model-FLOPs utilisation, peak memory and learning, measured side by side in one run.

    python -m bench.training --device cpu --pairs 32
    PYTHONPATH=/tmp/site:. python -m bench.training --device cuda --variants lora,qlora --pairs 256 \\
        --model-dir /tmp/models/SmolLM2-135M-Instruct.Q4_1.gguf --out /tmp/bench-training.json
    ... --variants lora,qlora,lora-liger --fixed-length --max-length 1024 --max-steps 10   # MFU, 8B-class

Needs only torch, transformers, peft, trl, datasets (bitsandbytes for QLoRA, liger-kernel for the -liger
variants): no database, no vLLM. Pairs are synthesized (the exact command in backticks preferred over a
vague answer) and split by prompt; held-out likelihood accuracy is measured before and after training,
with the implicit-reward accuracy after. Each variant trains the same pairs from the base model, on CUDA
in a fresh process of its own (a model left resident by the previous variant would inflate the next
one's peak); ratios are against the first variant. --fixed-length makes every sequence exactly
--max-length tokens, so tokens/s and model-FLOPs utilisation (MFU) are those of that length.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from datasets import Dataset

from serving.gpu_memory import ModelShape, run_need
from training.config import TrainConfig
from training.dpo import train_dpo
from training.evaluation import score_versions
from training.launcher import ALLOCATOR_CONF
from training.snapshots import split_records, with_system_prompt
from training.synthetic import synthetic_pairs

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "var" / "models" / "SmolLM2-135M-Instruct"
SYSTEM_PROMPT = "You are a helpful assistant for an engineering team. Answer concisely."
VARIANTS = {"lora": {}, "qlora": {"qlora": True}, "lora-fp32": {"bf16": False},
            "lora-liger": {"liger_kernels": True}, "qlora-liger": {"qlora": True, "liger_kernels": True},
            # the same 4 pairs a step as 2 micro-batches of 2 (half the activations at once)
            "qlora-micro2": {"qlora": True, "batch_size": 2, "gradient_accumulation_steps": 2},
            "qlora-cached-blocks": {"qlora": True}}
# Environment of a variant's fresh process beyond the run's own (training/launcher.py: expandable segments).
VARIANT_ENV = {"qlora-cached-blocks": {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:False"}}
H200_BF16_TFLOPS = 989.4  # dense bf16 peak of an H100/H200 SXM (datasheet)
FILLER = ("The service writes its logs to the usual place and the team reads them during the incident review. "
          "Each step of the runbook names the command, the expected output and who to call when it differs. ")


def model_folder(path: Path) -> Path:
    """A model folder as it is, or a GGUF converted once into a folder beside it."""
    if path.suffix != ".gguf":
        return path
    from serving.base_model import prepare_bundled_model

    return prepare_bundled_model(path.with_suffix(""), gguf=path, progress=lambda msg: print(msg, file=sys.stderr))


def fixed_length_pairs(count: int, max_length: int) -> list[dict]:
    """Synthetic pairs whose prompt + answer is longer than `max_length` tokens for both answers, so that
    truncation makes every sequence exactly `max_length` long (the prompt stays under a quarter of it)."""
    words = max_length  # about 1.3 tokens a word: the answers always overflow, the prompt (a quarter) never
    filler = (FILLER * (words // 20 + 1)).split()
    records = synthetic_pairs(count)
    for record in records:
        record["prompt"][0]["content"] += " Context: " + " ".join(filler[: words // 6])
        for key in ("chosen", "rejected"):
            record[key][0]["content"] += " " + " ".join(filler[:words])
    return records


def model_flops_per_token(shape: ModelShape, seq_len: int) -> float:
    """Model FLOPs of one trained token of LoRA DPO: the reference forward (adapter off), the policy forward
    and its backward to the activations (2x the forward for attention; the frozen weights get no gradient).
    Recomputation by gradient checkpointing is not counted (that would be hardware FLOPs)."""
    matmul_params = shape.linear_params + shape.vocab * shape.hidden  # layers + LM head
    attention_forward = 2 * shape.layers * shape.hidden * seq_len  # causal: QK^T and AV over seq_len / 2 on average
    return 3 * 2 * matmul_params + 4 * attention_forward


def peak_memory_mb(device: str) -> dict:
    if device == "cuda":
        return {"allocated": torch.cuda.max_memory_allocated() / 2**20, "reserved": torch.cuda.max_memory_reserved() / 2**20}
    return {"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # process peak RSS (KiB on Linux)


def estimate(cfg: TrainConfig, model_dir: Path) -> float:
    """serving.gpu_memory's estimate for this run, to set beside the measured peak."""
    need = run_need(ModelShape.read(model_dir), qlora=cfg.use_qlora, batch_size=cfg.batch_size,
                    max_length=cfg.max_length, lora_r=cfg.lora_r, target_modules=cfg.target_modules)
    return round(need.total / 2**20, 1)


def run_variant(name: str, cfg: TrainConfig, model_dir: Path, train: list[dict], held_out: list[dict],
                args: argparse.Namespace) -> dict:
    if cfg.resolved_device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    row = {"variant": name, "config": cfg.as_dict()}
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = train_dpo(cfg, model_dir, Dataset.from_list(train), Path(out))
        seconds = time.perf_counter() - start
        row.update(steps=result.steps, train_s=round(seconds, 2), tokens_per_s=result.tokens_per_s,
                   pairs_per_s=round(result.steps * cfg.batch_size * cfg.gradient_accumulation_steps / seconds, 3),
                   peak_memory_mb=peak_memory_mb(cfg.resolved_device))
        if args.fixed_length and result.tokens_per_s and cfg.resolved_device == "cuda":
            flops = model_flops_per_token(ModelShape.read(model_dir), cfg.max_length) * result.tokens_per_s
            row.update(model_tflops=round(flops / 1e12, 1), mfu=round(flops / (args.peak_tflops * 1e12), 3),
                       peak_tflops=args.peak_tflops)
        if cfg.resolved_device == "cuda":
            row["estimated_need_mb"] = estimate(cfg, model_dir)
        if not args.skip_eval:
            scores = score_versions(model_dir, {"before": None, "after": result.adapter_path}, held_out, cfg)
            row.update(likelihood_accuracy_before=scores["before"]["likelihood_accuracy"],
                       likelihood_accuracy_after=scores["after"]["likelihood_accuracy"],
                       reward_accuracy_after=scores["after"]["reward_accuracy"],
                       reward_margin_after=scores["after"]["reward_margin"],
                       peak_memory_with_eval_mb=peak_memory_mb(cfg.resolved_device))
    return row


def gpu_processes() -> dict[int, int]:
    """MiB of GPU memory per process, as the driver counts it (CUDA context and allocator cache included)."""
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=True).stdout
    return {int(pid): int(mib) for pid, mib in (line.split(",") for line in out.strip().splitlines() if line.strip())}


class MemorySampler(threading.Thread):
    """Peak GPU memory of every process, sampled every `every_s` until stopped; `phase`, set by the caller,
    says what was going on (peaks are also kept per process and phase)."""

    def __init__(self, every_s: float = 0.25):
        super().__init__(daemon=True)
        self.every_s, self.phase, self._stop_event = every_s, "", threading.Event()
        self.peaks: dict[int, int] = {}
        self.phase_peaks: dict[int, dict[str, int]] = {}

    def run(self) -> None:
        while not self._stop_event.wait(self.every_s):
            for pid, mib in gpu_processes().items():
                self.peaks[pid] = max(self.peaks.get(pid, 0), mib)
                by_phase = self.phase_peaks.setdefault(pid, {})
                by_phase[self.phase] = max(by_phase.get(self.phase, 0), mib)

    def stop(self) -> dict[int, int]:
        self._stop_event.set()
        self.join()
        return self.peaks


def in_fresh_process(name: str, argv: list[str]) -> dict:
    """One variant in a child process (same arguments), so its peak memory is its own; the driver's count of
    the whole process (CUDA context included) is sampled from outside."""
    env = {**os.environ, "PYTORCH_CUDA_ALLOC_CONF": ALLOCATOR_CONF, **VARIANT_ENV.get(name, {})}
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        child = [sys.executable, "-m", "bench.training", *without(argv, "--variants", "--out"),
                 "--variants", name, "--out", out.name, "--same-process"]
        sampler = MemorySampler()
        sampler.start()
        process = subprocess.Popen(child, cwd=REPO, env=env)
        returncode = process.wait()
        process_peak = sampler.stop().get(process.pid)
        if returncode != 0:
            return {"variant": name, "error": f"exit code {returncode} (output above)"}
        return {**json.loads(Path(out.name).read_text())[0], "process_peak_mib": process_peak,
                "allocator": env["PYTORCH_CUDA_ALLOC_CONF"]}


def without(argv: list[str], *options: str) -> list[str]:
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item in options:
            skip = True
        elif not item.startswith(tuple(f"{o}=" for o in options)):
            kept.append(item)
    return kept


def print_table(rows: list[dict]) -> None:
    first = next(r for r in rows if "error" not in r)
    mem = lambda r: r["peak_memory_mb"].get("reserved", r["peak_memory_mb"].get("rss"))  # noqa: E731
    print(f"{'variant':<20} {'steps':>5} {'train s':>8} {'tok/s':>9} {'x tok/s':>8} {'MFU':>6} {'peak MB':>9} "
          f"{'process':>8} {'with eval':>9} {'lik before':>10} {'lik after':>9} {'reward acc':>10}")
    for row in rows:
        if "error" in row:
            print(f"{row['variant']:<20} {row['error']}")
            continue
        speed = (row["tokens_per_s"] or 0) / (first["tokens_per_s"] or 1)
        with_eval = row.get("peak_memory_with_eval_mb", {})
        print(f"{row['variant']:<20} {row['steps']:>5} {row['train_s']:>8.1f} {row['tokens_per_s'] or 0:>9.1f} "
              f"{speed:>8.2f} {row.get('mfu', float('nan')):>6.3f} {mem(row):>9.0f} {row.get('process_peak_mib') or 0:>8} "
              f"{with_eval.get('reserved', with_eval.get('rss', float('nan'))):>9.0f} "
              f"{row.get('likelihood_accuracy_before', float('nan')):>10.3f} "
              f"{row.get('likelihood_accuracy_after', float('nan')):>9.3f} {row.get('reward_accuracy_after', float('nan')):>10.3f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", default="", help=f"comma-separated, of {sorted(VARIANTS)}; overrides --qlora/--bf16")
    parser.add_argument("--qlora", action="store_true", help="4-bit NF4 QLoRA (CUDA)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="default: on CUDA only")
    parser.add_argument("--pairs", type=int, default=32, help="synthetic pairs (about 1/4 held out)")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL, help="model folder or .gguf file")
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--fixed-length", action="store_true", help="every sequence exactly --max-length tokens; MFU")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--skip-eval", action="store_true", help="train only (no held-out scores)")
    parser.add_argument("--peak-tflops", type=float, default=H200_BF16_TFLOPS, help="the GPU's dense bf16 peak, for MFU")
    parser.add_argument("--same-process", action="store_true", help="run every variant in this process")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    base = TrainConfig(device=args.device, qlora=args.qlora, bf16=args.bf16, epochs=args.epochs,
                       batch_size=args.batch_size, max_length=args.max_length, learning_rate=args.learning_rate,
                       max_steps=args.max_steps)
    variants = {name: VARIANTS[name] for name in args.variants.split(",") if name} or {"configured": {}}
    records = fixed_length_pairs(args.pairs, args.max_length) if args.fixed_length else synthetic_pairs(args.pairs)
    for record in records:
        record["prompt"] = with_system_prompt(record["prompt"], SYSTEM_PROMPT)
    split = split_records(records, 0.25)
    model_dir = model_folder(args.model_dir)
    print(f"{len(split['train'])} train / {len(split['eval'])} held-out pairs, device {base.resolved_device}, "
          f"torch {torch.__version__}" + (f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ""))
    fresh = base.resolved_device == "cuda" and len(variants) > 1 and not args.same_process
    rows = [in_fresh_process(name, argv) if fresh else
            run_variant(name, TrainConfig(**{**base.__dict__, **change}), model_dir, split["train"], split["eval"], args)
            for name, change in variants.items()]
    print_table(rows)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
