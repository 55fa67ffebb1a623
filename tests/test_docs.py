"""The README tells the truth about configuration, and `flywheel config` never shows a secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flywheel.cli.config import env_name
from flywheel.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_documented_in_the_readme():
    missing = [env_name(n, f) for n, f in Settings.model_fields.items() if f"`{env_name(n, f)}`" not in README]
    assert missing == []
    undescribed = [name for name, field in Settings.model_fields.items() if not field.description]
    assert undescribed == []


def test_readme_names_the_test_command_that_ci_runs():
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "make test" in README and "make test" in ci


def test_config_command_masks_secrets(tmp_path):
    env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-very-secret", "FLYWHEEL_HOME": str(tmp_path),
           "FLYWHEEL_DATABASE_URL": "postgresql+psycopg://fw:hunter2pass@db.example/flywheel"}
    out = subprocess.run([sys.executable, "-m", "flywheel", "config"], env=env, capture_output=True, text=True, check=True)
    assert "SLACK_BOT_TOKEN=**********" in out.stdout
    assert "xoxb-very-secret" not in out.stdout and "hunter2pass" not in out.stdout
    assert f"FLYWHEEL_HOME={tmp_path}" in out.stdout
