"""Dataset snapshots from approved pairs: cleaning, deterministic split, content hash, bad snapshots."""

from __future__ import annotations

import pytest
from datasets import load_from_disk
from training_support import add_approved_pairs, add_command_pairs, queue_dpo

from flywheel.settings import load_settings
from storage.db import make_engine, session_scope
from storage.runs import get_run, run_metrics
from training.runner import execute_run
from training.snapshots import SnapshotError, build_snapshot, canonical, split_records
from training.synthetic import synthetic_pairs


@pytest.fixture
def snap_settings(tmp_path, database_url, base_model_dir):
    return load_settings(home=tmp_path / "home", database_url=database_url, base_model_path=base_model_dir)


def test_same_pairs_same_hash_and_split(snap_settings, engine):
    add_command_pairs(engine, 20)
    with session_scope(engine) as session:
        first = build_snapshot(session, snap_settings)
        again = build_snapshot(session, snap_settings)
    assert again.id == first.id and again.content_hash == first.content_hash
    assert first.train_count + first.eval_count == 20 and first.eval_count >= 1 and first.train_count >= 1
    data = load_from_disk(first.path)
    assert len(data["train"]) == first.train_count and len(data["eval"]) == first.eval_count
    # Conversational format with the served system prompt first: TRL applies the chat template.
    row = data["train"][0]
    assert row["prompt"][0] == {"role": "system", "content": snap_settings.system_prompt}
    assert row["chosen"][0]["role"] == "assistant" and "`" in row["chosen"][0]["content"]
    train_prompts = {str(r["prompt"]) for r in data["train"]}
    assert not train_prompts & {str(r["prompt"]) for r in data["eval"]}  # no prompt on both sides

    add_command_pairs(engine, 24)  # 4 more pairs: a new snapshot, the old one untouched
    with session_scope(engine) as session:
        grown = build_snapshot(session, snap_settings)
    assert grown.content_hash != first.content_hash and grown.train_count + grown.eval_count == 24
    assert len(load_from_disk(first.path)["train"]) == first.train_count


def test_split_is_by_prompt_and_stable():
    records = synthetic_pairs(40)
    held_out = {canonical(r["prompt"]) for r in split_records(records, 0.25)["eval"]}
    assert held_out == {canonical(r["prompt"]) for r in split_records(records[::-1], 0.25)["eval"]}
    assert 0 < len(held_out) < 40


def record(question: str, chosen: str, rejected: str) -> dict:
    return {"prompt": [{"role": "user", "content": question}], "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def test_degenerate_and_near_duplicate_pairs_are_dropped_and_counted_on_the_snapshot(snap_settings, engine):
    add_approved_pairs(engine, [
        record("a?", "Run `ls -la`.", "No idea."),
        record("A? ", " run  `LS -la` ", "no idea!"),  # the same pair once case, spacing and end punctuation go
        record("b?", "Run `df -h`.", "Hmm."),  # "Hmm." is shorter than 5 characters
        record("c?", "Run `ps aux`.", "Ask someone."),
        record("d?", "Use `top`.", "use  `top`!"),  # chosen and rejected say the same
        record("e?", "Run `free -m`.", "x" * 81),  # a runaway answer
    ])
    strict = snap_settings.model_copy(update={"min_pair_chars": 5, "max_pair_chars": 80})
    with session_scope(engine) as session:
        snapshot = build_snapshot(session, strict)
        assert snapshot.train_count + snapshot.eval_count == 2 and len(snapshot.pair_ids) == 2
        assert snapshot.dropped == {"near-duplicate": 1, "answer shorter than 5 characters": 1,
                                    "chosen equals rejected": 1, "answer longer than 80 characters": 1}


def test_with_pii_redaction_on_snapshots_hold_no_emails_or_tokens(snap_settings, engine):
    add_approved_pairs(engine, [
        record("Mail ops@example.com about the outage?", "Send it to [EMAIL] via `mail`.", "I can't."),
        record("Is xoxb-1234567890-abcdefghij valid?", "Run `slack auth test`.", "Maybe."),
    ])
    with session_scope(engine) as session:
        snapshot = build_snapshot(session, snap_settings.model_copy(update={"pii_redaction": True}))
    text = str(load_from_disk(snapshot.path)["train"].to_list() + load_from_disk(snapshot.path)["eval"].to_list())
    assert "ops@example.com" not in text and "xoxb-1234567890" not in text
    assert "[EMAIL]" in text and "[TOKEN]" in text


def test_no_approved_pairs_fails_the_run_before_training(snap_settings, engine):
    run_id = queue_dpo(engine)
    with pytest.raises(SnapshotError, match="no approved preference pairs"):
        execute_run(snap_settings, run_id, engine=engine)
    with session_scope(engine) as session:
        run = get_run(session, run_id)
        assert run.status.value == "failed" and "no approved preference pairs" in run.error
        assert run.snapshot_id is None and run_metrics(session, run_id) == []


def test_all_degenerate_pairs_fail_the_run_with_the_reason(snap_settings, engine):
    add_command_pairs(engine, 6)
    strict = snap_settings.model_copy(update={"min_pair_chars": 500})
    run_id = queue_dpo(engine)
    with pytest.raises(SnapshotError, match=r"all 6 approved pairs are unusable \(6 answer shorter than 500"):
        execute_run(strict, run_id, engine=engine)
    with session_scope(engine) as session:
        run = get_run(session, run_id)
        assert run.status.value == "failed" and "unusable" in run.error and run_metrics(session, run_id) == []
