"""The model card (Hugging Face format) each run writes into its adapter folder, shown on the Models page; the
Training page's link to the run in MLflow (the real Streamlit app, AppTest, on a seeded database); and the
`flywheel dashboard` process counting the pages a real Chromium opens on its /metrics."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from dashboard_support import ADMIN, CLOSED_PORT_URL, app_env, seed, signed_in, stored  # noqa: F401 - a fixture
from huggingface_hub import ModelCard
from test_browser_dashboard import browser, wait_healthy, wait_text  # noqa: F401 - browser is a fixture
from training_support import wait_for

from serving.testing import free_port
from storage.runs import get_run
from training.model_card import read_model_card, write_model_card
from training.run_summary import RunSummary

SUMMARY = RunSummary(
    run_id=7, kind="dpo", base_model="HuggingFaceTB/SmolLM2-135M-Instruct", parent="v1",
    hyperparameters={"lora_r": 16, "beta": 0.1, "learning_rate": 5e-4}, overrides={},
    snapshot_hash="ab" * 32, snapshot_id=3, train_pairs=24, eval_pairs=6,
    pairs_by_source={"alternative": 20, "vote_contrast": 10},
    eval_metrics={"reward_accuracy": 0.83, "reward_margin": 0.9, "compared_with": "v1", "pairs": 6,
                  "gate": "beats v1: held-out preference accuracy 0.833 vs v1 0.500",
                  "incumbent": {"reward_accuracy": 0.5, "reward_margin": 0.2}},
    passed_gate=True, version="v2",
    regression_answers=[{"prompt": "How do I roll back?", "answer": "Run `deploy rollback --to previous`."}],
)


def test_the_model_card_is_a_hugging_face_card_with_what_a_reviewer_needs(tmp_path):
    path = write_model_card(tmp_path, SUMMARY, "apache-2.0")
    card = ModelCard.load(path)
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.library_name == "peft"
    assert card.data.tags == ["trl", "dpo", "lora"] and card.data.license == "apache-2.0"
    text = read_model_card(tmp_path)
    assert text.startswith("\n# Flywheel v2") or text.lstrip().startswith("# Flywheel v2")
    for expected in ("Snapshot `abababababab` (#3): 24 training pairs and 6 held-out pairs",
                     "alternative 20, vote_contrast 10", "| lora_r | 16 |",
                     "| reward_accuracy | 0.5000 | 0.8300 | +0.3300 |", "Passed: beats v1",
                     "**How do I roll back?**", "> Run `deploy rollback --to previous`."):
        assert expected in text, expected
    (tmp_path / "README.md").write_text("---\n: [not yaml\n---\nbody")
    assert read_model_card(tmp_path) is None and read_model_card(tmp_path / "missing") is None


@pytest.fixture
def seeded(app_env, sqlite_url, tmp_path):
    active, candidate = tmp_path / "active", tmp_path / "candidate"
    active.mkdir(), candidate.mkdir()
    write_model_card(candidate, SUMMARY, "apache-2.0")
    app_env(sqlite_url, MLFLOW_TRACKING_URI="http://mlflow.example:5000")
    return seed(sqlite_url, adapters=(str(active), str(candidate)))


def test_the_models_page_shows_the_chosen_versions_card(seeded):
    at = signed_in(ADMIN, "models")
    [card] = [e for e in at.expander if e.label == f"Model card of {seeded.candidate}"]
    assert any("Flywheel v2" in m.value and "Registration gate" in m.value for m in card.markdown)


def test_the_training_page_links_the_run_to_mlflow(seeded, sqlite_url):
    def track(session):
        get_run(session, seeded.run_id).mlflow_run = {"experiment_id": "3", "run_id": "abc123"}

    stored(sqlite_url, track)
    at = signed_in(ADMIN, "training")
    captions = [c.value for c in at.caption]
    assert "MLflow run [abc123](http://mlflow.example:5000/#/experiments/3/runs/abc123)" in captions, captions


def test_the_training_page_says_how_many_approved_pairs_the_snapshot_left_out_and_why(seeded, sqlite_url):
    def cleaned(session):
        get_run(session, seeded.run_id).snapshot.dropped = {"near-duplicate": 3, "chosen equals rejected": 1}

    stored(sqlite_url, cleaned)
    at = signed_in(ADMIN, "training")
    captions = " ".join(c.value for c in at.caption)
    assert ("24 train / 6 held-out pairs, approved pairs left out: 1 chosen equals rejected, 3 near-duplicate"
            in captions), captions


@pytest.mark.browser
def test_the_dashboard_process_counts_the_pages_people_open(sqlite_url, tmp_path, browser):  # noqa: F811
    ui, metrics = free_port(), free_port()
    env = {**os.environ, "FLYWHEEL_DATABASE_URL": sqlite_url, "FLYWHEEL_HOME": str(tmp_path / "home"),
           "FLYWHEEL_VLLM_URL": CLOSED_PORT_URL, "FLYWHEEL_DASHBOARD_PORT": str(ui),
           "FLYWHEEL_DASHBOARD_METRICS_PORT": str(metrics)}
    with (tmp_path / "dashboard.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "flywheel", "dashboard"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{ui}", process)
        browser.get(f"http://127.0.0.1:{ui}")
        wait_text(browser, "Sign in")
        def counted() -> str | None:
            text = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=10).text
            return text if 'flywheel_dashboard_page_render_seconds_count{page="Sign in"}' in text else None

        exposed = wait_for(counted, 30, "the sign-in page's render to be counted")
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert 'flywheel_dashboard_page_views_total{page="Sign in"}' in exposed
