"""An 8B-class model with random weights, built from a config: the Llama-3.1-8B shape (hidden 4096, 32 layers,
32 heads, 8 KV heads, MLP 14336, RoPE theta 500000) with the bundled tokenizer's vocabulary (49,152): 7.38 B
parameters, 14.8 GB in bf16. Right for speed and memory figures, not for answers.

    python -m bench.build_model --tokenizer var/models/SmolLM2-135M-Instruct --out /tmp/models/llama-8b-shape
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

LLAMA_31_8B = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
               "head_dim": 128, "intermediate_size": 14336, "tie_word_embeddings": False, "rms_norm_eps": 1e-5,
               "max_position_embeddings": 8192, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                   "generation_config.json")


def build(tokenizer_dir: Path, out: Path, shape: dict = LLAMA_31_8B, device: str = "cuda") -> Path:
    """Random bf16 weights (initialized on `device`), saved as safetensors with the tokenizer beside them."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if (out / "model.safetensors.index.json").exists() or (out / "model.safetensors").exists():
        return out
    config = AutoConfig.from_pretrained(tokenizer_dir)
    for key, value in shape.items():
        setattr(config, key, value)
    config.dtype = torch.bfloat16
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, max_shard_size="5GB")
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, tmp / name)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", type=Path, required=True, help="a model folder whose tokenizer (and config) to use")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    started = time.monotonic()
    path = build(args.tokenizer, args.out, device=args.device)
    params = json.loads((path / "config.json").read_text())
    print(f"{path}: {params['num_hidden_layers']} layers, hidden {params['hidden_size']} ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
