"""Held-out evaluation of adapters from log-probabilities: preference accuracy, DPO reward margin, perplexity
(for a KTO run's held-out examples, their counterparts: example_metrics).

- reward_accuracy / reward_margin: DPO's implicit reward beta * (log p_model - log p_base), chosen minus
  rejected, with the base model as the common reference, so the active version and a candidate trained
  from it are scored on one scale (the base model itself scores 0 on both). reward_accuracy is the
  preference accuracy the gate compares: the share of pairs where the version moved towards the chosen
  answer more than towards the rejected one.
- likelihood_accuracy: share of pairs whose chosen answer the model finds more likely than the rejected
  one outright (mean log-prob per token). Shown beside it, not gated on: when the rejected answer is the
  model's own greedy output (as with Slack feedback), it stays near 0 even after real learning.
- chosen_perplexity: perplexity of the chosen answers.

And from what each version says: greedy answers to the held-out prompts (at most GENERATED_PROMPTS of them),
scored against the chosen answers by training/answer_metrics.py (key_content_share, rouge_l,
mean_answer_chars), answered through vLLM when it runs the run's base model, else with transformers
(answered_by says which); the answers themselves are kept beside the metrics for the Models page. And
general_knowledge: the share of the short questions shipped in general_knowledge.jsonl (capitals, numbers,
planets) a version still answers right, so that the gate can refuse a candidate that forgot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel

from serving.errors import ServingError
from storage.models import last_user_message
from training.answer_metrics import answer_metrics
from training.config import TrainConfig
from training.modeling import load_base_model, load_tokenizer
from training.served_answers import Generate

log = logging.getLogger(__name__)

BASE = "base"
KNOWLEDGE_FILE = Path(__file__).with_name("general_knowledge.jsonl")
KNOWLEDGE_TOKENS = 32  # a short answer names the fact early
GENERATED_PROMPTS = 32  # held-out prompts answered by each version: bounds the evaluation's time on a CPU
ANSWER_TOKENS = 96  # enough for a command and a sentence around it


@dataclass
class LogProbs:
    """Summed completion log-probs and token counts, one entry per pair."""

    chosen: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected: torch.Tensor
    rejected_tokens: torch.Tensor


def completion_text(value: Any) -> str:
    return value if isinstance(value, str) else value[0]["content"]


def encode(tokenizer, prompt: list[dict], completion: str, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + completion through the chat template, and where the completion starts."""
    prompt_text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template(
        prompt + [{"role": "assistant", "content": completion}], tokenize=False
    )
    if not full_text.startswith(prompt_text):  # templates that rewrite earlier turns: score the plain continuation
        full_text = prompt_text + completion + (tokenizer.eos_token or "")
    prompt_len = len(tokenizer(prompt_text, add_special_tokens=False).input_ids)
    ids = tokenizer(full_text, add_special_tokens=False).input_ids[:max_length]
    return ids, min(prompt_len, len(ids))


def token_log_probs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log p(ids[t+1] | ids[..t]) for one sequence, in fp32 one row at a time: the whole batch's fp32
    log-softmax over the vocabulary would take 8 x 1,024 x 49,152 x 4 bytes twice (3 GiB) on an 8B model."""
    logits = logits[:-1].float()
    return logits.gather(-1, ids[1:].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


@torch.no_grad()
def sequence_logps(model, tokenizer, items: list[tuple[list[int], int]], batch_size: int, progress) -> tuple:
    sums, counts = [], []
    device = next(model.parameters()).device
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        completion = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, (ids, prompt_len) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
            completion[row, prompt_len : len(ids)] = True
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
        token_logps = torch.stack([token_log_probs(row_logits, row_ids) for row_logits, row_ids
                                   in zip(logits, input_ids.to(device))]).cpu()
        scored = completion[:, 1:]
        sums.append((token_logps * scored).sum(dim=1))
        counts.append(scored.sum(dim=1))
        progress()
    return torch.cat(sums), torch.cat(counts)


def pair_logps(model, tokenizer, records: list[dict], max_length: int, progress, batch_size: int = 8) -> LogProbs:
    chosen = [encode(tokenizer, r["prompt"], completion_text(r["chosen"]), max_length) for r in records]
    rejected = [encode(tokenizer, r["prompt"], completion_text(r["rejected"]), max_length) for r in records]
    c_sum, c_n = sequence_logps(model, tokenizer, chosen, batch_size, progress)
    r_sum, r_n = sequence_logps(model, tokenizer, rejected, batch_size, progress)
    return LogProbs(c_sum, c_n, r_sum, r_n)


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts: list[list[dict]], progress, batch_size: int,
                   max_new_tokens: int) -> list[str]:
    """What the model answers to each prompt, greedy (as the gate should judge it: no sampling luck)."""
    answers, device = [], next(model.parameters()).device
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"  # generation continues on the right
    try:
        for start in range(0, len(prompts), batch_size):
            texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
                     for p in prompts[start : start + batch_size]]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
            answers += tokenizer.batch_decode(output[:, batch.input_ids.shape[1]:], skip_special_tokens=True)
            progress()
    finally:
        tokenizer.padding_side = padding_side
    return [answer.strip() for answer in answers]


def preferred_answers(records: list[dict]) -> list[tuple[list[dict], str]]:
    """(prompt, the answer people preferred): a pair's chosen answer, or a desirable KTO example's completion."""
    return [(r["prompt"], completion_text(r["chosen"] if "chosen" in r else r["completion"]))
            for r in records if r.get("label", True)]


class Answerer:
    """One version's greedy answers: through vLLM when it was given one (training/served_answers.py), else
    with transformers on the loaded model, as also when vLLM fails midway (`engine` says which answered)."""

    def __init__(self, model, tokenizer, progress, served: Generate | None = None):
        self.model, self.tokenizer, self.progress, self.served = model, tokenizer, progress, served
        self.engine = "vllm" if served is not None else "transformers"

    def __call__(self, prompts: list[list[dict]], max_new_tokens: int, batch_size: int = 8) -> list[str]:
        if self.served is not None:
            try:
                answers = self.served(prompts, max_new_tokens)
                self.progress()
                return answers
            except ServingError as exc:
                log.warning("vLLM failed during the evaluation (%s): answering with transformers", exc)
                self.served, self.engine = None, f"transformers (vLLM failed: {exc})"
        return greedy_answers(self.model, self.tokenizer, prompts, self.progress, batch_size, max_new_tokens)


def generation_metrics(generate: Answerer, records: list[dict]) -> dict[str, Any]:
    """answer_metrics of the version's greedy answers, and the answers (with prompt and chosen answer)."""
    preferred = preferred_answers(records)[:GENERATED_PROMPTS]
    knowledge = {"general_knowledge": general_knowledge(generate)}
    if not preferred:  # only undesirable KTO examples held out: nothing to compare answers with, so no figures
        return {**knowledge, "answered_by": generate.engine, "held_out_answers": []}
    answers = generate([prompt for prompt, _ in preferred], ANSWER_TOKENS)
    chosen = [answer for _, answer in preferred]
    held_out = [{"prompt": last_user_message(p), "chosen": c, "answer": a}
                for (p, c), a in zip(preferred, answers)]
    return {**answer_metrics(answers, chosen), **knowledge, "answered_by": generate.engine, "held_out_answers": held_out}


@lru_cache(maxsize=1)
def knowledge_questions() -> tuple[dict[str, Any], ...]:
    return tuple(json.loads(line) for line in KNOWLEDGE_FILE.read_text(encoding="utf-8").splitlines() if line.strip())


def general_knowledge(generate: Answerer) -> float:
    """Share of the shipped general-knowledge questions whose greedy answer names a right answer."""
    items = knowledge_questions()
    prompts = [[{"role": "user", "content": item["question"]}] for item in items]
    answers = generate(prompts, KNOWLEDGE_TOKENS, batch_size=len(items))
    right = [any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", answer, re.IGNORECASE) for a in item["answers"])
             for item, answer in zip(items, answers)]
    return sum(right) / len(items)


def side_by_side(candidate: list[dict], incumbent: list[dict]) -> list[dict]:
    """The held-out answers of two versions to the same prompts, one row per prompt."""
    return [{**new, "incumbent_answer": old["answer"]} for new, old in zip(candidate, incumbent, strict=True)]


def preference_metrics(policy: LogProbs, reference: LogProbs, beta: float) -> dict[str, float]:
    per_token_c = policy.chosen / policy.chosen_tokens.clamp(min=1)
    per_token_r = policy.rejected / policy.rejected_tokens.clamp(min=1)
    margins = beta * ((policy.chosen - reference.chosen) - (policy.rejected - reference.rejected))
    return {
        "likelihood_accuracy": float((per_token_c > per_token_r).float().mean()),
        "reward_accuracy": float((margins > 0).float().mean()),
        "reward_margin": float(margins.mean()),
        "chosen_perplexity": math.exp(-float(policy.chosen.sum()) / max(int(policy.chosen_tokens.sum()), 1)),
        "pairs": len(margins),
    }


def example_logps(model, tokenizer, records: list[dict], max_length: int, progress, batch_size: int = 8) -> tuple:
    """(summed completion log-probs, token counts) of KTO examples."""
    items = [encode(tokenizer, r["prompt"], completion_text(r["completion"]), max_length) for r in records]
    return sequence_logps(model, tokenizer, items, batch_size, progress)


def mean_or_zero(values: torch.Tensor) -> float:
    return float(values.mean()) if len(values) else 0.0


def example_metrics(policy: tuple, reference: tuple, labels: torch.Tensor, beta: float) -> dict[str, float]:
    """KTO's counterpart of the preference metrics on held-out examples, from the implicit reward
    beta * (log p_model - log p_base) of each: reward_accuracy is the share whose reward has its label's sign
    (up for a desirable answer, down for an undesirable one), reward_margin the desirable examples' mean
    reward minus the undesirable ones', chosen_perplexity that of the desirable answers."""
    rewards = beta * (policy[0] - reference[0])
    right = torch.where(labels, rewards > 0, rewards < 0)
    margin = mean_or_zero(rewards[labels]) - mean_or_zero(rewards[~labels])
    metrics = {"reward_accuracy": float(right.float().mean()), "reward_margin": margin, "pairs": len(rewards),
               "desirable": int(labels.sum())}
    if labels.any():
        metrics["chosen_perplexity"] = math.exp(-float(policy[0][labels].sum()) / max(int(policy[1][labels].sum()), 1))
    return metrics


def scorer(records: list[dict]) -> tuple[Callable, Callable]:
    """(log-probs of a version, its metrics against the base's) for held-out pairs, or for KTO's examples."""
    if "label" not in records[0]:
        return pair_logps, preference_metrics
    labels = torch.tensor([bool(r["label"]) for r in records])
    return example_logps, lambda policy, reference, beta: example_metrics(policy, reference, labels, beta)


def score_versions(
    model_dir: Path, adapters: dict[str, Path | None], records: Iterable[dict], cfg: TrainConfig,
    progress: Callable[[], Any] = lambda: None, served: dict[str, Generate] | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics for each named adapter (None = the base model) on the same pairs, loading the base once;
    the held-out answers of each version through `served[name]` (vLLM) where given."""
    served = served or {}
    records = list(records)
    if not records:
        raise ValueError("no pairs to evaluate")
    # The base as the run trained it (4-bit for QLoRA): every version is scored on it, so the numbers stay
    # comparable, and a QLoRA run's process never holds the model in bf16 (8B: 16 GB instead of 5.5).
    model, tokenizer = load_base_model(model_dir, cfg).eval(), load_tokenizer(model_dir)
    logps, metrics = scorer(records)
    reference = logps(model, tokenizer, records, cfg.max_length, progress)
    results = {}
    for name, path in adapters.items():
        if path is None:  # the base model: its own reference
            version, policy = _adapters_off(model), reference
        else:
            model = _with_adapter(model, name, path)
            version, policy = contextlib.nullcontext(), logps(model, tokenizer, records, cfg.max_length, progress)
        with version:
            results[name] = {**metrics(policy, reference, cfg.beta),
                             **generation_metrics(Answerer(model, tokenizer, progress, served.get(name)), records)}
    return results


def _with_adapter(model, name: str, path: Path) -> PeftModel:
    """`model` answering with the adapter at `path` (loaded beside any loaded before)."""
    if isinstance(model, PeftModel):
        model.load_adapter(str(path), adapter_name=name)
    else:
        model = PeftModel.from_pretrained(model, str(path), adapter_name=name).eval()
    model.set_adapter(name)
    return model


def _adapters_off(model):
    """The base model's own answers, also after an adapter was loaded into it."""
    return model.disable_adapter() if isinstance(model, PeftModel) else contextlib.nullcontext()
