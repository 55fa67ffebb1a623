"""The model card of a trained adapter: README.md in its folder, in the Hugging Face format (YAML metadata
the Hub reads, then the data, hyperparameters, evaluation against the incumbent, the gate's decision and
sample answers). Written when the run ends; shown on the dashboard's Models page and logged to MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import ModelCard, ModelCardData

from training.gate import REPORTED
from training.run_summary import RunSummary

CARD_FILE = "README.md"
SAMPLE_ANSWERS = 3


def table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def evaluation_section(summary: RunSummary) -> str:
    metrics = summary.eval_metrics
    if not metrics:
        return "Not evaluated."
    incumbent, name = metrics.get("incumbent", {}), metrics.get("compared_with", "incumbent")
    rows = []
    for key in REPORTED:
        if key in metrics:
            before, after = incumbent.get(key), metrics[key]
            change = f"{after - before:+.4f}" if isinstance(before, (int, float)) else ""
            rows.append((key, number(before), number(after), change))
    pairs = metrics.get("pairs", summary.eval_pairs)
    header = ("metric", name, "this adapter", "change")
    return f"On {pairs} held-out pairs, against the incumbent `{name}`:\n\n" + table(header, rows)


def answers_section(summary: RunSummary) -> str:
    answers = [a for a in summary.regression_answers if isinstance(a, dict) and "answer" in a][:SAMPLE_ANSWERS]
    if not answers:
        return "No regression answers were recorded."
    return "\n\n".join(f"**{a.get('prompt', '')}**\n\n> {a['answer'].strip() or '(empty)'}" for a in answers)


def card_text(summary: RunSummary, license_id: str) -> str:
    method = "DPO (+ SFT on the chosen answers)" if summary.kind == "dpo" else summary.kind.upper()
    name = summary.version or f"run {summary.run_id} (not registered)"
    data = ModelCardData(base_model=summary.base_model, library_name="peft", license=license_id,
                         tags=["trl", summary.kind, "lora"], pipeline_tag="text-generation")
    sources = ", ".join(f"{source} {n}" for source, n in summary.pairs_by_source.items()) or "none recorded"
    gate = summary.eval_metrics.get("gate", "not evaluated")
    hyperparameters = table(("name", "value"), sorted(summary.hyperparameters.items()))
    return f"""---
{data.to_yaml()}
---

# Flywheel {name}

A LoRA adapter for `{summary.base_model}`, trained by Flywheel run {summary.run_id} with {method} on
preference pairs from its users' feedback, starting from `{summary.parent}`.

## Data

Snapshot `{summary.snapshot_hash[:12] or '-'}` (#{summary.snapshot_id}): {summary.train_pairs} training pairs and \
{summary.eval_pairs} held-out pairs. Pairs by source: {sources}.

## Training hyperparameters

{hyperparameters}

## Evaluation

{evaluation_section(summary)}

## Registration gate

{"Passed" if summary.passed_gate else "Not passed"}: {gate}

## Sample answers to the regression prompts

{answers_section(summary)}

## Use

Served by vLLM with `--enable-lora` (`POST /v1/load_lora_adapter`), or loaded with PEFT:
`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{summary.base_model}"), "<this folder>")`.
"""


def write_model_card(adapter_dir: Path, summary: RunSummary, license_id: str) -> Path:
    """Write (or replace PEFT's generic) README.md in the adapter folder."""
    path = adapter_dir / CARD_FILE
    ModelCard(card_text(summary, license_id)).save(path)
    return path


def read_model_card(adapter_dir: str | Path) -> str | None:
    """The card's text without its YAML metadata, or None when the folder has none."""
    path = Path(adapter_dir) / CARD_FILE
    try:
        return ModelCard(path.read_text(encoding="utf-8")).text
    except (OSError, ValueError, yaml.YAMLError):  # no card, or one whose metadata is not YAML
        return None
