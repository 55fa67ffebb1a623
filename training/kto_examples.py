"""KTO's examples in TRL's unpaired preference format (prompt, completion, label): the votes that may teach and,
with `kto_pairs` on, the approved pairs (chosen answer desirable, rejected undesirable). Cleaned and snapshotted
like pairs (training/snapshots.py).

An answer's votes count as one example labelled by their net sign (several people may vote on one answer; a tie
teaches nothing). Pairs come first: a vote on an answer a pair already holds (the 👎 under a better answer, the
👍 of a vote contrast) is that pair's example already, so only votes that made no pair add examples.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from storage.interactions import teaching_votes
from storage.models import DatasetSnapshot, Feedback, Vote
from storage.pairs import approved_pairs
from storage.redaction import redact, redact_messages
from storage.runs import describe_drops
from training.snapshots import (
    SnapshotError, canonical, clean_pairs, comparable, length_reason, store_snapshot, with_system_prompt,
)


@dataclass
class Examples:
    records: list[dict] = field(default_factory=list)
    pair_ids: list[int] = field(default_factory=list)
    feedback_ids: list[int] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    def drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count

    def add(self, prompt: list[dict], completion: str, label: bool) -> bool:
        """False (and counted as dropped) when the same answer to the same prompt is in already."""
        key = canonical([[comparable(m["content"]) for m in prompt], comparable(completion)])
        if key in self.seen:
            self.drop("answer already in a pair or vote")
            return False
        self.seen.add(key)
        self.records.append({"prompt": prompt, "completion": [{"role": "assistant", "content": completion}],
                             "label": label})
        return True


def add_pairs(examples: Examples, session: Session, settings) -> None:
    clean = clean_pairs(approved_pairs(session), settings)  # prompts redacted and with the system prompt already
    for reason, count in clean.dropped.items():
        examples.drop(reason, count)
    for record, pair_id in zip(clean.records, clean.pair_ids):
        examples.add(record["prompt"], record["chosen"][0]["content"], True)
        examples.add(record["prompt"], record["rejected"][0]["content"], False)
        examples.pair_ids.append(pair_id)


def votes_by_answer(votes: list[Feedback]) -> dict[int, list[Feedback]]:
    answers = defaultdict(list)
    for vote in votes:
        answers[vote.interaction_id].append(vote)
    return answers


def add_votes(examples: Examples, session: Session, settings) -> None:
    text = redact if settings.pii_redaction else str
    for votes in votes_by_answer(teaching_votes(session, include_pending=settings.kto_pending_votes)).values():
        net = sum(1 if v.vote is Vote.up else -1 for v in votes)
        interaction, answer = votes[0].interaction, text(votes[0].interaction.answer.strip())
        reason = "votes cancel out" if net == 0 else length_reason((answer,), settings.min_pair_chars,
                                                                    settings.max_pair_chars)
        if reason:
            examples.drop(reason)
            continue
        prompt = redact_messages(interaction.prompt_messages) if settings.pii_redaction else interaction.prompt_messages
        if examples.add(with_system_prompt(prompt, settings.system_prompt), answer, net > 0):
            examples.feedback_ids += [v.id for v in votes]


def build_kto_snapshot(session: Session, settings) -> DatasetSnapshot:
    """Snapshot the KTO examples now; raises SnapshotError with the reason when they cannot train."""
    examples = Examples()
    if settings.kto_pairs:
        add_pairs(examples, session, settings)
    add_votes(examples, session, settings)
    if not examples.records:
        left_out = f" ({describe_drops(examples.dropped)} left out)" if examples.dropped else ""
        raise SnapshotError(f"no votes or pairs to learn from{left_out}: approve votes in the review queue first")
    return store_snapshot(session, settings, examples.records, examples.pair_ids, examples.dropped,
                          examples.feedback_ids)
