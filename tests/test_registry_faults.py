"""Crashes around a promotion: the process that promotes and syncs vLLM (as the dashboard, the CLI and an
auto-promoting run do) is killed at arbitrary moments, then two schedulers sync at once. The registry always
has exactly one active version, and vLLM ends up serving exactly it. Real vLLM, real database, real kills."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select
from test_serving_adapters import adapters, promote, register  # noqa: F401 - the module's adapters fixture

from serving.adapters import loaded_adapters, sync_adapters, unload_adapter
from storage.db import get_engine, session_scope
from storage.models import ModelVersion, VersionStatus
from training.launcher import settings_env

pytestmark = pytest.mark.vllm
ROLL_BACK_FOREVER = """
from flywheel.settings import get_settings
from serving.adapters import sync_adapters
from storage.db import get_engine, session_scope
from storage.registry import rollback
from storage.users import SYSTEM

settings = get_settings()
while True:  # each rollback swaps the two versions, and vLLM is synced after it, as an admin's click does
    with session_scope(get_engine(settings.database_url)) as session:
        name = rollback(session, SYSTEM).name
    sync_adapters(settings)
    print("promoted", name, flush=True)
"""


def active_names(settings) -> list[str]:
    with session_scope(get_engine(settings.database_url)) as session:
        return list(session.scalars(select(ModelVersion.name).where(ModelVersion.status == VersionStatus.active)))


def test_promotions_killed_at_any_moment_leave_one_active_version_that_vllm_serves(vllm_settings, adapters):
    versions = [register(vllm_settings, adapters[key]) for key in ("a", "b")]
    for version_id, _ in versions:
        promote(vllm_settings, version_id)
    env = {**os.environ, **settings_env(vllm_settings)}
    randomness = random.Random(7)
    try:
        for _ in range(5):
            promoter = subprocess.Popen([sys.executable, "-c", ROLL_BACK_FOREVER], env=env, stdout=subprocess.PIPE,
                                        text=True)
            assert promoter.stdout.readline().startswith("promoted"), "the promoter did not start"
            time.sleep(randomness.uniform(0.0, 1.5))  # mid-promotion, mid-sync or between the two
            promoter.send_signal(signal.SIGKILL)
            promoter.wait()
            assert len(active_names(vllm_settings)) == 1
        with ThreadPoolExecutor(2) as pool:  # two schedulers' sync jobs at the same moment
            list(pool.map(lambda _: sync_adapters(vllm_settings), range(2)))
        assert set(loaded_adapters(vllm_settings)) == set(active_names(vllm_settings))
    finally:
        for _, name in versions:
            unload_adapter(vllm_settings, name)
