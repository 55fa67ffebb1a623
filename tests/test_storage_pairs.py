"""Preference pairs: dedupe, review transitions, the queue's filters and keyset pagination, JSONL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.exc import StatementError

from storage.audit import list_events
from storage.db import session_scope
from storage.errors import InvalidInput, InvalidTransition
from storage.models import PairSource, PairStatus, PreferencePair, Role, utcnow
from storage.pairs import (
    PairFilter,
    approve_pair,
    approved_pairs,
    count_approved_since,
    count_pairs,
    create_pair,
    export_jsonl,
    import_jsonl,
    list_pairs,
    reject_pair,
)
from storage.users import Actor

REVIEWER = Actor("rita", Role.reviewer)


def prompt(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def add_pair(engine, text="How do I deploy?", chosen="Run `make deploy`.", rejected="Ask someone.", **kw) -> int:
    with session_scope(engine) as session:
        return create_pair(session, prompt(text), chosen, rejected, kw.pop("source", PairSource.alternative), **kw).id


def test_same_pair_twice_is_stored_once(engine):
    add_pair(engine)
    with session_scope(engine) as session:
        assert create_pair(session, prompt("How do I deploy?"), "Run `make deploy`.", "Ask someone.",
                           PairSource.vote_contrast) is None
        # The rest of the transaction is unaffected by the refused duplicate.
        assert create_pair(session, prompt("How do I deploy?"), "Other.", "Ask someone.", PairSource.arena)
    with session_scope(engine) as session:
        assert count_pairs(session, PairFilter(status=None)) == 2


@pytest.mark.parametrize("bad, message", [
    (dict(p=[], c="a b", r="c d"), "non-empty list"),
    (dict(p=[{"role": "robot", "content": "x"}], c="a b", r="c d"), "role must be"),
    (dict(p=prompt("q"), c=" ", r="c d"), "chosen must be a non-empty"),
    (dict(p=prompt("q"), c="same", r=" same "), "the same text"),
])
def test_unusable_pair_is_refused(sqlite_url, bad, message):
    from storage.db import make_engine

    with session_scope(make_engine(sqlite_url)) as session, pytest.raises(InvalidInput, match=message):
        create_pair(session, bad["p"], bad["c"], bad["r"], PairSource.arena)


def test_review_transitions(engine):
    approved, rejected, edited = add_pair(engine, "a"), add_pair(engine, "b"), add_pair(engine, "c")
    with session_scope(engine) as session:
        approve_pair(session, approved, REVIEWER)
        reject_pair(session, rejected, REVIEWER, reason="off topic")
        pair = approve_pair(session, edited, REVIEWER, chosen="Run `make deploy ENV=prod`.")
        assert (pair.chosen, pair.original_chosen) == ("Run `make deploy ENV=prod`.", "Run `make deploy`.")
    with session_scope(engine) as session:
        with pytest.raises(InvalidTransition, match=f"pair {rejected} is rejected; it cannot become approved"):
            approve_pair(session, rejected, REVIEWER)
        with pytest.raises(InvalidTransition, match="is approved; it cannot become rejected"):
            reject_pair(session, approved, REVIEWER)
    with session_scope(engine) as session:
        stored = session.get(PreferencePair, edited)
        assert stored.original_chosen == "Run `make deploy`." and stored.reviewer == "rita"
        assert stored.reviewed_at.tzinfo is not None
        assert session.get(PreferencePair, approved).original_chosen is None  # not edited
        assert [p.id for p in approved_pairs(session)] == [approved, edited]
        assert count_approved_since(session, None) == 2
        assert count_approved_since(session, utcnow() + timedelta(seconds=1)) == 0
        actions = [(e.action, e.target_id, e.actor) for e in list_events(session, target_type="preference_pair")]
    assert sorted(actions) == sorted([("approve", approved, "rita"), ("reject", rejected, "rita"),
                                      ("approve", edited, "rita")])


def test_an_edit_to_nothing_is_refused_and_the_pair_stays_pending(engine):
    pair_id = add_pair(engine)
    with pytest.raises(InvalidInput, match="chosen must be a non-empty"), session_scope(engine) as session:
        approve_pair(session, pair_id, REVIEWER, chosen="  ")
    with session_scope(engine) as session:
        assert session.get(PreferencePair, pair_id).status is PairStatus.pending


def test_queue_filters_and_keyset_pagination(engine):
    ids = [add_pair(engine, f"question {i}", channel_id="C1" if i % 2 else "C2",
                    source=PairSource.vote_contrast if i % 3 == 0 else PairSource.alternative) for i in range(12)]
    add_pair(engine, "Ünïcode question about Zürich")
    with session_scope(engine) as session:
        reject_pair(session, ids[0], REVIEWER)
        seen, before = [], None
        while page := list_pairs(session, PairFilter(), limit=5, before_id=before):
            seen += [p.id for p in page]
            before = page[-1].id
        assert len(seen) == 12 and seen == sorted(seen, reverse=True) and ids[0] not in seen
        assert count_pairs(session, PairFilter(channel_id="C1")) == 6
        assert count_pairs(session, PairFilter(source=PairSource.vote_contrast)) == 3  # 3, 6, 9 (0 is rejected)
        assert [p.id for p in list_pairs(session, PairFilter(status=PairStatus.rejected))] == [ids[0]]
        assert [p.id for p in list_pairs(session, PairFilter(text="QUESTION 11"))] == [ids[11]]
        assert len(list_pairs(session, PairFilter(text="zürich"))) == 1  # searched in the prompt's JSON
        now = utcnow()
        assert count_pairs(session, PairFilter(since=now - timedelta(minutes=5), until=now + timedelta(1))) == 12
        assert count_pairs(session, PairFilter(since=now + timedelta(minutes=5))) == 0
        # An aware time in another zone is compared as the same instant.
        assert count_pairs(session, PairFilter(since=(now - timedelta(minutes=5)).astimezone(
            timezone(timedelta(hours=-7))))) == 12


def test_naive_datetime_is_refused(engine):
    with session_scope(engine) as session, pytest.raises(StatementError, match="naive datetime"):
        count_pairs(session, PairFilter(since=datetime(2026, 1, 1)))


def test_jsonl_round_trip_in_trl_format(engine, sqlite_url):
    from storage.db import make_engine

    first = add_pair(engine, "Wie starte ich den Dienst neu?", "`systemctl restart ingest`", "Keine Ahnung.")
    add_pair(engine, "pending one")
    with session_scope(engine) as session:
        approve_pair(session, first, REVIEWER)
        lines = list(export_jsonl(session))
    assert [json.loads(line) for line in lines] == [{
        "prompt": [{"role": "user", "content": "Wie starte ich den Dienst neu?"}],
        "chosen": [{"role": "assistant", "content": "`systemctl restart ingest`"}],
        "rejected": [{"role": "assistant", "content": "Keine Ahnung."}],
    }]
    other = make_engine(sqlite_url)
    standard = json.dumps({"prompt": "plain prompt", "chosen": "good answer", "rejected": "bad answer"})
    with session_scope(other) as session:
        result = import_jsonl(session, [*lines, "", standard, lines[0]], REVIEWER, approve=True)
    assert (result.created, result.duplicates) == (2, 1)
    with session_scope(other) as session:
        assert list(export_jsonl(session))[0] == lines[0]
        assert approved_pairs(session)[1].prompt == [{"role": "user", "content": "plain prompt"}]


def test_malformed_import_names_lines_and_writes_nothing(engine):
    good = json.dumps({"prompt": prompt("q"), "chosen": "yes", "rejected": "no"})
    lines = [good, "{not json", json.dumps({"prompt": prompt("q"), "chosen": "yes"}), good]
    with session_scope(engine) as session, pytest.raises(InvalidInput) as refused:
        import_jsonl(session, lines, REVIEWER)
    assert "2 bad line(s), nothing imported" in str(refused.value)
    assert "line 2: not valid JSON" in str(refused.value) and "line 3: missing field(s): rejected" in str(refused.value)
    with session_scope(engine) as session:
        assert count_pairs(session, PairFilter(status=None)) == 0
