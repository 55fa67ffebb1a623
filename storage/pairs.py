"""Preference pairs: creation (deduplicated), the review queue, review decisions, JSONL export/import."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, cast, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.audit import record_event
from storage.errors import InvalidInput, NotFound
from storage.models import PairSource, PairStatus, PreferencePair, utcnow
from storage.review import decide_review, newest_first
from storage.users import Actor, Role, require_role


def dedupe_key(prompt: list[dict[str, Any]], chosen: str, rejected: str) -> str:
    payload = json.dumps([prompt, chosen, rejected], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def validate_pair(prompt: Any, chosen: Any, rejected: Any) -> None:
    """Raise InvalidInput unless this is a usable conversational preference pair."""
    if not isinstance(prompt, list) or not prompt:
        raise InvalidInput("prompt must be a non-empty list of chat messages")
    for message in prompt:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise InvalidInput("each prompt message needs a string 'content'")
        if message.get("role") not in {"system", "user", "assistant"}:
            raise InvalidInput(f"prompt message role must be system, user or assistant, not {message.get('role')!r}")
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput(f"{name} must be a non-empty string")
    if chosen.strip() == rejected.strip():
        raise InvalidInput("chosen and rejected are the same text")


def create_pair(
    session: Session,
    prompt: list[dict[str, Any]],
    chosen: str,
    rejected: str,
    source: PairSource,
    *,
    interaction_id: int | None = None,
    alternative_id: int | None = None,
    channel_id: str = "",
) -> PreferencePair | None:
    """Store a pending pair; returns None if the same (prompt, chosen, rejected) exists already."""
    validate_pair(prompt, chosen, rejected)
    key = dedupe_key(prompt, chosen, rejected)
    pair = PreferencePair(
        prompt=prompt, chosen=chosen, rejected=rejected, source=source, dedupe_key=key,
        interaction_id=interaction_id, alternative_id=alternative_id, channel_id=channel_id,
    )
    try:
        with session.begin_nested():  # a concurrent duplicate loses here, not the whole transaction
            session.add(pair)
    except IntegrityError:
        return None
    return pair


def get_pair(session: Session, pair_id: int) -> PreferencePair:
    pair = session.get(PreferencePair, pair_id)
    if pair is None:
        raise NotFound(f"no preference pair {pair_id}")
    return pair


@dataclass(frozen=True)
class PairFilter:
    status: PairStatus | None = PairStatus.pending
    source: PairSource | None = None
    channel_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None

    def apply(self, query):
        P = PreferencePair
        if self.status is not None:
            query = query.where(P.status == self.status)
        if self.source is not None:
            query = query.where(P.source == self.source)
        if self.channel_id:
            query = query.where(P.channel_id == self.channel_id)
        if self.since is not None:
            query = query.where(P.created_at >= self.since)
        if self.until is not None:
            query = query.where(P.created_at < self.until)
        if self.text:
            like = f"%{self.text}%"
            # The prompt is JSON; searching its text form finds words in any message.
            prompt_text = cast(P.prompt, Text)
            query = query.where(or_(P.chosen.ilike(like), P.rejected.ilike(like), prompt_text.ilike(like)))
        return query


def list_pairs(
    session: Session, flt: PairFilter = PairFilter(), *, limit: int = 50, before_id: int | None = None
) -> list[PreferencePair]:
    """Newest first, keyset-paginated by id (pass the last id seen as `before_id`): fast at 100k+ rows."""
    return newest_first(session, flt.apply(select(PreferencePair)), PreferencePair.id, limit, before_id)


def count_pairs(session: Session, flt: PairFilter = PairFilter()) -> int:
    return session.scalar(flt.apply(select(func.count(PreferencePair.id)))) or 0


def approve_pair(session: Session, pair_id: int, actor: Actor, *, chosen: str | None = None) -> PreferencePair:
    """Approve a pending pair, optionally with the reviewer's edited chosen text."""
    require_role(actor, Role.reviewer)
    pair = get_pair(session, pair_id)
    edited = chosen is not None and chosen.strip() != pair.chosen.strip()
    if edited:
        validate_pair(pair.prompt, chosen, pair.rejected)
    decide_review(session, pair, PairStatus.approved, actor, "preference_pair", edited=edited)
    if edited:
        pair.original_chosen, pair.chosen = pair.chosen, chosen
    return pair


def reject_pair(session: Session, pair_id: int, actor: Actor, *, reason: str = "") -> PreferencePair:
    pair = get_pair(session, pair_id)
    decide_review(session, pair, PairStatus.rejected, actor, "preference_pair", reason=reason)
    return pair


def approved_pairs(session: Session, *, since: datetime | None = None) -> list[PreferencePair]:
    query = select(PreferencePair).where(PreferencePair.status == PairStatus.approved).order_by(PreferencePair.id)
    if since is not None:
        query = query.where(PreferencePair.reviewed_at > since)
    return list(session.scalars(query))


def count_approved_since(session: Session, since: datetime | None) -> int:
    query = select(func.count(PreferencePair.id)).where(PreferencePair.status == PairStatus.approved)
    if since is not None:
        query = query.where(PreferencePair.reviewed_at > since)
    return session.scalar(query) or 0


# --- JSONL in TRL's conversational preference format ----------------------------------------


def pair_to_record(pair: PreferencePair) -> dict[str, Any]:
    return {
        "prompt": pair.prompt,
        "chosen": [{"role": "assistant", "content": pair.chosen}],
        "rejected": [{"role": "assistant", "content": pair.rejected}],
    }


def export_jsonl(session: Session, status: PairStatus | None = PairStatus.approved) -> Iterator[str]:
    """One JSON line per pair, oldest first, streamed so that large stores export in constant memory."""
    query = select(PreferencePair).order_by(PreferencePair.id)
    if status is not None:
        query = query.where(PreferencePair.status == status)
    for pair in session.scalars(query.execution_options(yield_per=1000)):
        yield json.dumps(pair_to_record(pair), ensure_ascii=False)


def _completion_text(value: Any, field: str) -> str:
    """TRL accepts a completion as a string or as a list with one assistant message."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        if value[0].get("role") == "assistant" and isinstance(value[0].get("content"), str):
            return value[0]["content"]
    raise InvalidInput(f"'{field}' must be a string or a list with one assistant message")


def parse_record(line: str) -> tuple[list[dict[str, Any]], str, str]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise InvalidInput("a line must be a JSON object")
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in record]
    if missing:
        raise InvalidInput(f"missing field(s): {', '.join(missing)}")
    prompt = record["prompt"]
    if isinstance(prompt, str):  # TRL's standard (non-conversational) format
        prompt = [{"role": "user", "content": prompt}]
    chosen, rejected = _completion_text(record["chosen"], "chosen"), _completion_text(record["rejected"], "rejected")
    validate_pair(prompt, chosen, rejected)
    return prompt, chosen, rejected


@dataclass
class ImportResult:
    created: int
    duplicates: int


def import_jsonl(session: Session, lines: Iterable[str], actor: Actor, *, approve: bool = False) -> ImportResult:
    """Validate every line first; any bad line raises InvalidInput listing line numbers and nothing is written."""
    parsed, errors = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            parsed.append(parse_record(line))
        except InvalidInput as exc:
            errors.append(f"line {number}: {exc}")
    if errors:
        shown = "\n  ".join(errors[:50]) + (f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else "")
        raise InvalidInput(f"{len(errors)} bad line(s), nothing imported:\n  {shown}")
    if approve:
        require_role(actor, Role.reviewer)
    created = duplicates = 0
    for prompt, chosen, rejected in parsed:
        pair = create_pair(session, prompt, chosen, rejected, PairSource.imported)
        if pair is None:
            duplicates += 1
            continue
        created += 1
        if approve:
            pair.status, pair.reviewer, pair.reviewed_at = PairStatus.approved, actor.name, utcnow()
    record_event(session, actor.name, "import", "preference_pair", None, created=created, approved=approve)
    return ImportResult(created=created, duplicates=duplicates)
