"""DPO throughput, peak memory and learning, measured side by side in one run.

    python -m bench.training --device cpu --pairs 32
    PYTHONPATH=/tmp/site:. python -m bench.training --device cuda --variants lora,qlora --pairs 256 \
        --model-dir /tmp/models/SmolLM2-135M-Instruct.Q4_1.gguf --out /tmp/bench-training.json

Needs only torch, transformers, peft, trl, datasets (bitsandbytes for QLoRA): no database, no vLLM.
Pairs are synthesized (the exact command in backticks preferred over a vague answer) and split by
prompt; held-out likelihood accuracy (is the chosen answer more likely than the rejected one?) is
measured before and after training, with the implicit-reward accuracy after. Each variant trains
the same pairs from the base model; ratios are against the first variant.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset

from training.config import TrainConfig
from training.dpo import train_dpo
from training.evaluation import score_versions
from training.snapshots import split_records, with_system_prompt
from training.synthetic import synthetic_pairs

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "var" / "models" / "SmolLM2-135M-Instruct"
SYSTEM_PROMPT = "You are a helpful assistant for an engineering team. Answer concisely."
VARIANTS = {"lora": {}, "qlora": {"qlora": True}, "lora-fp32": {"bf16": False}}


def model_folder(path: Path) -> Path:
    """A model folder as it is, or a GGUF converted once into a folder beside it."""
    if path.suffix != ".gguf":
        return path
    from serving.base_model import prepare_bundled_model

    return prepare_bundled_model(path.with_suffix(""), gguf=path, progress=lambda msg: print(msg, file=sys.stderr))


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (KiB on Linux)


def run_variant(name: str, cfg: TrainConfig, model_dir: Path, train: list[dict], held_out: list[dict]) -> dict:
    if cfg.resolved_device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = train_dpo(cfg, model_dir, Dataset.from_list(train), Path(out))
        seconds = time.perf_counter() - start
        peak = peak_memory_mb(cfg.resolved_device)
        scores = score_versions(model_dir, {"before": None, "after": result.adapter_path}, held_out, cfg)
    return {
        "variant": name, "config": cfg.as_dict(), "steps": result.steps, "train_s": round(seconds, 2),
        "pairs_per_s": round(result.steps * cfg.batch_size * cfg.gradient_accumulation_steps / seconds, 3), "tokens_per_s": result.tokens_per_s,
        "peak_memory_mb": round(peak, 1), "likelihood_accuracy_before": scores["before"]["likelihood_accuracy"],
        "likelihood_accuracy_after": scores["after"]["likelihood_accuracy"],
        "reward_accuracy_after": scores["after"]["reward_accuracy"], "reward_margin_after": scores["after"]["reward_margin"],
    }


def print_table(rows: list[dict]) -> None:
    first = rows[0]
    print(f"{'variant':<10} {'steps':>5} {'train s':>8} {'tok/s':>9} {'x tok/s':>8} {'peak MB':>9} {'x mem':>6} "
          f"{'lik before':>10} {'lik after':>9} {'reward acc':>10}")
    for row in rows:
        speed = (row["tokens_per_s"] or 0) / (first["tokens_per_s"] or 1)
        memory = row["peak_memory_mb"] / first["peak_memory_mb"]
        print(f"{row['variant']:<10} {row['steps']:>5} {row['train_s']:>8.1f} {row['tokens_per_s'] or 0:>9.1f} "
              f"{speed:>8.2f} {row['peak_memory_mb']:>9.0f} {memory:>6.2f} {row['likelihood_accuracy_before']:>10.3f} "
              f"{row['likelihood_accuracy_after']:>9.3f} {row['reward_accuracy_after']:>10.3f}")


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
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    base = TrainConfig(device=args.device, qlora=args.qlora, bf16=args.bf16, epochs=args.epochs,
                       batch_size=args.batch_size, max_length=args.max_length, learning_rate=args.learning_rate,
                       max_steps=args.max_steps)
    variants = {name: VARIANTS[name] for name in args.variants.split(",") if name} or {"configured": {}}
    records = synthetic_pairs(args.pairs)
    for record in records:
        record["prompt"] = with_system_prompt(record["prompt"], SYSTEM_PROMPT)
    split = split_records(records, 0.25)
    model_dir = model_folder(args.model_dir)
    print(f"{len(split['train'])} train / {len(split['eval'])} held-out pairs, device {base.resolved_device}, "
          f"torch {torch.__version__}" + (f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ""))
    rows = [run_variant(name, TrainConfig(**{**base.__dict__, **change}), model_dir, split["train"], split["eval"])
            for name, change in variants.items()]
    print_table(rows)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
