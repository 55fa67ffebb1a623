"""`flywheel demo`'s parts: its scenario, its own home (never a user's data), and the team's feedback
recorded through the bot's storage functions with answers from the real vLLM.

The demo's training round and promotion go through the same launcher, registry and sync as the
end-to-end test (tests/test_end_to_end.py), which covers them; a whole demo takes minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import select

from storage.db import make_engine, session_scope
from storage.errors import InvalidInput
from storage.models import Alternative, Feedback, Interaction, PairStatus, PreferencePair, Vote
from training.demo import MARKER, REVIEWER, Item, approve_pending, collect_feedback, demo_settings, fresh_home, load_scenario


def differing_words(a: str, b: str) -> int:
    words_a, words_b = a.split(), b.split()
    return sum(x != y for x, y in zip(words_a, words_b)) + abs(len(words_a) - len(words_b))


def test_scenario_holds_out_questions_never_asked_but_learnable_from_asked_ones():
    scenario = load_scenario()
    asked = [i for i in scenario if not i.held_out]
    held_out = [i for i in scenario if i.held_out]
    assert len(asked) >= 24 and len(held_out) >= 5
    questions = [i.question for i in scenario]
    assert len(set(questions)) == len(scenario)  # no question twice, none both asked and held out
    assert all(i.better_answer == f"Run `{i.command}`." for i in scenario)
    # Each held-out command is taught (up to a name or a number) by at least 3 asked questions, so that
    # 2 remain to train on when the snapshot holds one out for evaluation.
    for item in held_out:
        siblings = [i for i in asked if differing_words(i.command, item.command) <= 2]
        assert len(siblings) >= 3, (item.question, siblings)


def test_demo_uses_its_own_home_and_database(settings, tmp_path):
    demo = demo_settings(settings, tmp_path / "demo")
    assert demo.home == tmp_path / "demo" and demo.database_url == f"sqlite:///{(tmp_path / 'demo' / 'flywheel.db').as_posix()}"
    assert demo.database_url != settings.database_url and demo.base_model_dir == settings.base_model_dir
    assert not demo.auto_promote and demo.max_length <= 128
    assert demo.sft_weight > 0  # the likelihood term is what makes the greedy answers change


def test_fresh_home_wipes_only_a_demo_folder(tmp_path):
    users = tmp_path / "users-data"
    users.mkdir()
    (users / "flywheel.db").write_text("precious")
    with pytest.raises(InvalidInput, match="not a demo folder"):
        fresh_home(users)
    assert (users / "flywheel.db").read_text() == "precious"

    demo = tmp_path / "demo"
    fresh_home(demo)
    (demo / "flywheel.db").write_text("last demo")
    fresh_home(demo)
    assert sorted(p.name for p in demo.iterdir()) == [MARKER]


@pytest.mark.vllm
def test_team_feedback_is_recorded_like_the_bot_records_it_and_approved(vllm_settings):
    settings = demo_settings(vllm_settings, vllm_settings.home).model_copy(
        update={"database_url": vllm_settings.database_url, "max_answer_tokens": 24})
    engine = make_engine(settings.database_url)
    vague = [Item("How do I restart the api service on the prod box?", "sudo systemctl restart api"),
             Item("How can I see the pods in the staging namespace?", "kubectl get pods -n staging")]
    answered = Item("What is the capital of France?", "Paris")  # the model says it: a thumbs up, no pair
    stages = []
    feedback = collect_feedback(settings, engine, [*vague, answered], lambda *args: stages.append(args))
    assert (feedback.asked, feedback.up, feedback.down, feedback.better, feedback.pairs) == (3, 1, 2, 2, 2)
    assert stages[-1][1:] == (3, 3)
    assert approve_pending(engine) == 2
    with session_scope(engine) as session:
        interactions = list(session.scalars(select(Interaction).order_by(Interaction.id)))
        assert sorted(i.prompt_messages[0]["content"] for i in interactions) == sorted(i.question for i in (*vague, answered))
        assert all(i.served_model == "base" and i.answer for i in interactions)
        assert sorted(f.vote.value for f in session.scalars(select(Feedback))) == [Vote.down.value, Vote.down.value, Vote.up.value]
        assert {a.text for a in session.scalars(select(Alternative))} == {i.better_answer for i in vague}
        pairs = list(session.scalars(select(PreferencePair)))
        assert all(p.status is PairStatus.approved and p.reviewer == REVIEWER.name for p in pairs)
    engine.dispose()


def test_demo_takes_another_base_model_folder_and_names_a_wrong_one(tmp_path):
    env = {**os.environ, "FLYWHEEL_HOME": str(tmp_path / "home"), "FLYWHEEL_VLLM_PORT": "9"}  # nothing listens on 9
    done = subprocess.run([sys.executable, "-m", "flywheel", "demo", "--base-model", str(tmp_path / "no-model"),
                           "--home", str(tmp_path / "demo")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"{tmp_path / 'no-model'} has no config.json" in " ".join(done.stderr.split())
