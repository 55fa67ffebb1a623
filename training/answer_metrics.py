"""What an answer says, against the answer people preferred: key content and ROUGE-L.

A reviewer deciding on a promotion asks "does it now say the right thing?". The key content of a preferred
answer is what must be in any right answer: code spans and code blocks (a command), numbers, paths, file
and package names, and capitalised names. An answer says it when every key item of the preferred answer
appears in it (case and spacing aside). ROUGE-L (the longest common word subsequence, as an F-measure)
scores how close the wording is, for answers with no key content too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

FENCED = re.compile(r"```[^\n`]*\n?(.*?)```", re.S)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,:]\d+)*(?![\w])")
# paths, file and package names, flags: a word with / . - _ inside it (not at its end: "done." is no name)
SYMBOL = re.compile(r"(?<![\w/.-])(?:--?|/)?\w+(?:[/._-]\w+)+/?")
CAPITALISED = re.compile(r"(?<![.!?:]\s)(?<!^)(?<![\w'])[A-Z][a-zA-Z0-9]+")
WORD = re.compile(r"\w+")


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def key_content(text: str) -> set[str]:
    """The items of `text` a right answer must contain, normalised."""
    items = [block for block in FENCED.findall(text)]
    prose = FENCED.sub(" ", text)
    items += INLINE_CODE.findall(prose)
    prose = INLINE_CODE.sub(" ", prose)
    for line in prose.splitlines():
        items += NUMBER.findall(line) + SYMBOL.findall(line) + CAPITALISED.findall(line.strip())
    return {normalise(item) for item in items if item.strip()}


def says_key_content(answer: str, preferred: str) -> bool | None:
    """True when `answer` contains every key item of `preferred`; None when `preferred` has none."""
    items = key_content(preferred)
    if not items:
        return None
    said = normalise(answer)
    return all(item in said for item in items)


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased words."""
    a, r = WORD.findall(answer.lower()), WORD.findall(reference.lower())
    if not a or not r:
        return 0.0
    previous = [0] * (len(r) + 1)
    for word in a:
        current = [0]
        for j, ref_word in enumerate(r):
            current.append(previous[j] + 1 if word == ref_word else max(previous[j + 1], current[j]))
        previous = current
    common = previous[-1]
    if not common:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


def answer_metrics(answers: Iterable[str], preferred: Iterable[str]) -> dict[str, float]:
    """key_content_share (over the pairs whose preferred answer has key content, counted in key_content_pairs),
    mean rouge_l and mean_answer_chars."""
    answers, preferred = list(answers), list(preferred)
    verdicts = [says_key_content(a, p) for a, p in zip(answers, preferred, strict=True)]
    judged = [v for v in verdicts if v is not None]
    return {
        "key_content_share": sum(judged) / len(judged) if judged else 0.0,
        "key_content_pairs": len(judged),
        "rouge_l": sum(rouge_l(a, p) for a, p in zip(answers, preferred)) / max(len(answers), 1),
        "mean_answer_chars": sum(len(a) for a in answers) / max(len(answers), 1),
    }
