"""A run whose disk fills while it writes its adapter: the real `flywheel train run` process, with the file
size limit of a nearly full disk. It fails with the reason, nothing is registered, and no secret of the
deployment reaches its output or its files."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest
from conftest import create_database
from slack_support import SECRETS, leaked_secrets
from test_training_runs import TRAINING, closed_port_url
from training_support import add_command_pairs

from flywheel.settings import load_settings
from storage.db import make_engine, session_scope
from storage.models import RunKind, RunStatus
from storage.registry import list_versions
from storage.runs import get_run
from storage.users import SYSTEM
from training.launcher import queue, settings_env

pytestmark = [pytest.mark.training]
DB_PASSWORD = "db-password-never-logged-31"
DISK_LEFT_BYTES = 5_000_000  # enough for the snapshot and the logs, not for a rank-16 adapter (7.4 MB)


def nearly_full_disk() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (DISK_LEFT_BYTES, DISK_LEFT_BYTES))  # writes past it: EFBIG


def test_a_run_that_cannot_write_its_adapter_fails_with_the_reason_and_registers_nothing(
    tmp_path, migrated_template, base_model_dir
):
    url, drop = create_database("postgresql", tmp_path, migrated_template("postgresql"))  # the server writes the DB
    url = url.replace("postgres@", f"postgres:{DB_PASSWORD}@")  # trust auth ignores it; no log may show it
    settings = load_settings(home=tmp_path / "home", database_url=url, base_model_path=base_model_dir,
                             vllm_url=closed_port_url(), **{**TRAINING, "lora_r": 16, "lora_alpha": 32})
    engine = make_engine(url)
    try:
        add_command_pairs(engine, 12)
        run_id = queue(engine, settings, SYSTEM, RunKind.sft, {"max_steps": 1})
        done = subprocess.run([sys.executable, "-m", "flywheel", "train", "run", str(run_id)],
                              env={**os.environ, **settings_env(settings), **SECRETS}, preexec_fn=nearly_full_disk,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 1, done.stdout + done.stderr
        with session_scope(engine) as session:
            run = get_run(session, run_id)
            assert run.status is RunStatus.failed and run.current_step == 1  # it trained, then could not save
            assert "AdapterSaveError: could not write the adapter" in run.error and "too large" in run.error
            assert list_versions(session) == []  # nothing half-registered
        assert "could not write the adapter" in done.stderr
        assert leaked_secrets(done.stdout + done.stderr, settings.home) == []
        assert DB_PASSWORD not in done.stdout + done.stderr + run.error
    finally:
        engine.dispose()
        drop()
