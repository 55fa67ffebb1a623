"""`flywheel serve` as a process (the real console script, settings from FLYWHEEL_* variables): it
starts its own vLLM, loads the adapter an admin promotes within a few sync periods, and SIGTERM ends
it and its vLLM cleanly; a database that was never migrated stops it before vLLM starts.

One vLLM start for the whole file (about 40 s on 2 cores, beside the session's server)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from slack_support import SECRETS, leaked_secrets
from test_serving_adapters import promote, register

from flywheel.settings import load_settings
from serving.adapters import loaded_adapters
from serving.engine import is_ready
from serving.testing import free_port, random_lora_adapter

FLYWHEEL = Path(sys.executable).with_name("flywheel")
SYNC_EVERY_S = 1
STOP_TIMEOUT_S = 60  # vLLM gets 30 s for SIGTERM, then SIGKILL: a hang fails the test instead of blocking it


def serve_process(home: Path, output: Path, env: dict[str, str]) -> subprocess.Popen:
    """`flywheel serve` in its own process group, its output in a file (nothing blocks on a full pipe)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    with output.open("w") as out:
        return subprocess.Popen(
            [str(FLYWHEEL), "serve", "--sync-every", str(SYNC_EVERY_S)], cwd=home.parent,
            env={**clean, "FLYWHEEL_HOME": str(home), **env}, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )


def wait_until(condition, process: subprocess.Popen, output: Path, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, f"flywheel serve exited ({process.returncode}):\n{output.read_text()}"
        assert time.monotonic() < deadline, f"{what} not within {timeout_s:.0f} s:\n{output.read_text()}"
        time.sleep(0.5)


def living_members(groups: set[int]) -> list[psutil.Process]:
    """Processes (zombies aside: already ended, only not yet reaped) in any of these process groups."""
    found = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) in groups and process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return found


def terminate(process: subprocess.Popen) -> tuple[int | None, set[int], list[psutil.Process]]:
    """SIGTERM, as a service manager stops it; returns its exit code (None: still running after
    STOP_TIMEOUT_S), its process group and vLLM's, and what was left in them (then killed either way)."""
    groups = {process.pid}
    with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
        groups |= {os.getpgid(child.pid) for child in psutil.Process(process.pid).children()}  # vLLM's own
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        code = None
    leftovers = living_members(groups)
    for leftover in leftovers:  # never leave a vLLM behind, even when the test fails
        leftover.kill()
    return code, groups, leftovers


@pytest.mark.vllm
def test_serve_loads_the_promoted_adapter_and_stops_cleanly_on_sigterm(tmp_path, sqlite_url, base_model_dir):
    settings = load_settings(home=tmp_path / "home", database_url=sqlite_url, base_model_path=base_model_dir,
                             vllm_port=free_port())
    output = tmp_path / "serve.out"
    process = serve_process(settings.home, output, {
        "FLYWHEEL_DATABASE_URL": sqlite_url, "FLYWHEEL_BASE_MODEL_PATH": str(base_model_dir),
        "FLYWHEEL_VLLM_PORT": str(settings.vllm_port), **SECRETS,
    })
    try:
        wait_until(lambda: is_ready(settings.vllm_url), process, output, settings.vllm_startup_timeout_s,
                   "/v1/models answering")
        adapter = random_lora_adapter(base_model_dir, tmp_path / "adapter", seed=7)
        version_id, name = register(settings, adapter)
        promote(settings, version_id)
        # vLLM lists the adapter a moment before the sync loop reports it: wait for the report
        wait_until(lambda: f"adapters: loaded ['{name}']" in output.read_text(), process, output,
                   10 * SYNC_EVERY_S + 20, f"{name} loaded and reported by the sync loop")
        assert loaded_adapters(settings)[name] == str(adapter.resolve())
    finally:
        code, groups, leftovers = terminate(process)
    text = output.read_text()
    assert code == 0, text
    assert "stopping vLLM" in text
    assert len(groups) == 2  # vLLM ran in a group of its own: both groups were checked
    assert leftovers == [], f"still running after flywheel serve exited: {leftovers}"
    assert not is_ready(settings.vllm_url)
    assert leaked_secrets(text, settings.logs_dir) == []  # its output, and vLLM's log


def test_an_unmigrated_database_stops_serve_before_vllm_starts(tmp_path):
    home, output = tmp_path / "home", tmp_path / "serve.out"
    process = serve_process(home, output, {"FLYWHEEL_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}",
                                           "FLYWHEEL_VLLM_PORT": str(free_port())})
    code = process.wait(STOP_TIMEOUT_S)
    text = output.read_text()
    assert code == 1, text
    assert "is at revision none (empty)" in text and "run `flywheel db upgrade`" in text
    assert not (home / "logs" / "vllm.log").exists() and "starting vLLM" not in text
