"""An LLM judge: a model behind any OpenAI-compatible endpoint (FLYWHEEL_JUDGE_URL; a larger model on the GPU,
say) reads the candidate's and the incumbent's answers to each held-out question, with the answer a reviewer
preferred as the reference, and says which is better.

Judges favour a position (the first answer, often). Each question is therefore asked twice, the answers in
both orders: a judge that always picks the first gives each version one win, a tie. The candidate's win rate
is its share of the comparisons, a verdict that names neither answer counting half to each.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

import openai

log = logging.getLogger(__name__)

PROMPT = """You compare two answers to a question a member of an engineering team asked in Slack.

Question:
{question}

The answer a reviewer preferred, for reference:
{reference}

Answer 1:
{first}

Answer 2:
{second}

Which answer is more correct and more helpful? Reply with the number alone: 1 or 2."""
VERDICT = re.compile(r"\b([12])\b")


class JudgeUnavailable(RuntimeError):
    """The judge's endpoint did not answer."""


def verdict(client: openai.OpenAI, model: str, question: str, reference: str, first: str, second: str) -> int | None:
    """1 or 2: the answer the judge prefers; None when its reply names neither."""
    content = PROMPT.format(question=question, reference=reference, first=first, second=second)
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                           max_tokens=4, temperature=0.0)
    found = VERDICT.search(reply.choices[0].message.content or "")
    return int(found.group(1)) if found else None


def judge_model(client: openai.OpenAI, configured: str) -> str:
    """The configured model, or the only (first) one the endpoint serves."""
    return configured or client.models.list().data[0].id


def win_rate(settings, rows: Iterable[dict]) -> dict[str, float]:
    """rows: held-out answers side by side (training.evaluation.side_by_side). The candidate's win rate, how
    many comparisons were made and how many verdicts named neither answer."""
    key = settings.judge_api_key.get_secret_value() if settings.judge_api_key else "none"
    client = openai.OpenAI(base_url=settings.judge_url, api_key=key, timeout=settings.request_timeout_s, max_retries=2)
    points, comparisons, unclear = 0.0, 0, 0
    try:
        model = judge_model(client, settings.judge_model)
        for row in rows:
            for first, second, candidate_is in ((row["answer"], row["incumbent_answer"], 1),
                                                (row["incumbent_answer"], row["answer"], 2)):
                said = verdict(client, model, row["prompt"], row["chosen"], first, second)
                comparisons += 1
                unclear += said is None
                points += 0.5 if said is None else float(said == candidate_is)
    except openai.OpenAIError as exc:
        raise JudgeUnavailable(f"the judge at {settings.judge_url} did not answer: {exc}") from exc
    if not comparisons:
        raise ValueError("no held-out answers to judge")
    return {"judge_win_rate": points / comparisons, "judge_comparisons": comparisons, "judge_unclear": unclear}


def judge_versions(settings, rows: list[dict]) -> tuple[dict, dict]:
    """The judge's figures for the candidate and for the incumbent (whose win rate is 1 minus the candidate's);
    nothing without a judge; the reason when the judge did not answer (a gate that requires it then refuses)."""
    if not settings.judge_url:
        return {}, {}
    try:
        judged = win_rate(settings, rows)
    except JudgeUnavailable as exc:
        log.warning("%s", exc)
        return {"judge_error": str(exc)}, {}
    return judged, {"judge_win_rate": 1.0 - judged["judge_win_rate"]}
