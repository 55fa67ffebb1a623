"""Dataset snapshots: approved pairs -> cleaned, deduplicated, split, content-hashed `datasets` on disk.

Cleaning drops a pair whose chosen and rejected answers are the same once normalised (case, spacing, end
punctuation), an answer shorter than `min_pair_chars` or longer than `max_pair_chars`, and a near-duplicate
(the same prompt and answers once normalised) of a pair kept; with `pii_redaction` on, the text is redacted
first. The snapshot records how many were dropped and why. The same approved pairs always give the same hash
and the same split; a snapshot is never rewritten.
Prompts are kept as chat messages (TRL's conversational format), so the trainer applies the base
model's chat template, with the system prompt the served model answers under.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_from_disk
from sqlalchemy.orm import Session

from storage.models import DatasetSnapshot, PreferencePair
from storage.pairs import approved_pairs, pair_to_record
from storage.redaction import redact, redact_messages
from storage.runs import describe_drops, get_or_create_snapshot
from training.answer_metrics import normalise

SPLITS = ("train", "eval")


class SnapshotError(ValueError):
    """The approved pairs cannot make a training set; the message says why."""


@dataclass
class CleanPairs:
    records: list[dict[str, Any]]
    pair_ids: list[int]
    dropped: dict[str, int]


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def with_system_prompt(prompt: list[dict], system_prompt: str) -> list[dict]:
    """Train on what is served: serving.client puts the system prompt first."""
    if not system_prompt or (prompt and prompt[0].get("role") == "system"):
        return prompt
    return [{"role": "system", "content": system_prompt}] + prompt


def comparable(text: str) -> str:
    """Text as two near-identical texts compare equal: lower case, one space, no end punctuation."""
    return normalise(text).strip(" .!?")


def length_reason(answers: tuple[str, ...], min_chars: int, max_chars: int) -> str | None:
    if any(len(answer) < min_chars for answer in answers):
        return f"answer shorter than {min_chars} characters"
    if any(len(answer) > max_chars for answer in answers):
        return f"answer longer than {max_chars} characters"
    return None


def degenerate_reason(chosen: str, rejected: str, min_chars: int, max_chars: int) -> str | None:
    if comparable(chosen) == comparable(rejected):
        return "chosen equals rejected"
    return length_reason((chosen, rejected), min_chars, max_chars)


def clean_pairs(pairs: list[PreferencePair], settings) -> CleanPairs:
    records, ids, seen, dropped = [], [], set(), {}
    text = redact if settings.pii_redaction else str
    for pair in pairs:
        record = pair_to_record(pair)
        if settings.pii_redaction:
            record["prompt"] = redact_messages(record["prompt"])
        chosen, rejected = text(pair.chosen.strip()), text(pair.rejected.strip())
        record["chosen"][0]["content"], record["rejected"][0]["content"] = chosen, rejected
        reason = degenerate_reason(chosen, rejected, settings.min_pair_chars, settings.max_pair_chars)
        key = canonical([[comparable(m["content"]) for m in record["prompt"]], comparable(chosen), comparable(rejected)])
        if reason is None and key in seen:
            reason = "near-duplicate"
        if reason:
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        seen.add(key)
        record["prompt"] = with_system_prompt(record["prompt"], settings.system_prompt)
        records.append(record)
        ids.append(pair.id)
    return CleanPairs(records, ids, dropped)


def prompt_bucket(record: dict) -> float:
    """A stable number in [0, 1) per prompt: the same prompt always lands in the same split."""
    return int(sha256(canonical(record["prompt"]))[:8], 16) / 16**8


def split_records(records: list[dict], eval_fraction: float) -> dict[str, list[dict]]:
    buckets = [prompt_bucket(r) for r in records]
    if len(set(buckets)) < 2:
        raise SnapshotError("need pairs for at least 2 different prompts (one to train on, one held out)")
    held_out = {b for b in buckets if b < eval_fraction} or {min(buckets)}
    if held_out == set(buckets):  # keep at least one prompt to train on
        held_out.discard(max(buckets))
    splits = {"train": [], "eval": []}
    for record, bucket in zip(records, buckets):
        splits["eval" if bucket in held_out else "train"].append(record)
    return splits


def write_dataset(splits: dict[str, list[dict]], path: Path) -> None:
    """Write once, atomically: an existing snapshot folder is never touched."""
    if path.exists():
        return
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    DatasetDict({name: Dataset.from_list(rows) for name, rows in splits.items()}).save_to_disk(str(partial))
    partial.rename(path)


def build_snapshot(session: Session, settings) -> DatasetSnapshot:
    """Snapshot the approved pairs now; raises SnapshotError with the reason when they cannot train."""
    pairs = approved_pairs(session)
    if not pairs:
        raise SnapshotError("no approved preference pairs: approve some in the review queue first")
    clean = clean_pairs(pairs, settings)
    if not clean.records:
        raise SnapshotError(f"all {len(pairs)} approved pairs are unusable ({describe_drops(clean.dropped)})")
    return store_snapshot(session, settings, clean.records, clean.pair_ids, clean.dropped)


def store_snapshot(session: Session, settings, records: list[dict], pair_ids: list[int], dropped: dict[str, int],
                   feedback_ids: list[int] | None = None) -> DatasetSnapshot:
    """Split the cleaned records, write them once under their content hash and record the snapshot."""
    splits = split_records(records, settings.eval_fraction)
    content_hash = sha256(canonical(splits))
    path = settings.home / "snapshots" / content_hash[:16]
    write_dataset(splits, path)
    return get_or_create_snapshot(
        session, content_hash, sorted(pair_ids), len(splits["train"]), len(splits["eval"]), str(path), dropped,
        sorted(feedback_ids or []),
    )


def load_snapshot(snapshot: DatasetSnapshot) -> DatasetDict:
    path = Path(snapshot.path)
    if not path.exists():
        raise SnapshotError(f"snapshot {snapshot.id} is missing on disk at {path}")
    return load_from_disk(str(path))
