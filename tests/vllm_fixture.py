"""The session's one real vLLM server (CPU build here), shared by every test that needs a model.

Started on a random free port and stopped when the session ends. It is supervised like
`flywheel serve` does it: if its process dies it is restarted. FLYWHEEL_TEST_VLLM_URL points
the tests at an already running server instead (handy while iterating; that one is not supervised).

Also here: `vllm_settings`, one test's settings pointing at that server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from flywheel.settings import Settings, load_settings
from serving.engine import Supervisor, VLLMServer
from serving.testing import free_port


@dataclass
class RunningVLLM:
    url: str
    settings: Settings | None = None  # the settings it was started with
    supervisor: Supervisor | None = None  # None for an external server


@pytest.fixture(scope="session")
def vllm_server(base_model_dir, tmp_path_factory):
    external = os.environ.get("FLYWHEEL_TEST_VLLM_URL")
    if external:
        yield RunningVLLM(url=external.rstrip("/"))
        return
    home = tmp_path_factory.mktemp("vllm")
    settings = load_settings(home=home, base_model_path=base_model_dir, vllm_port=free_port())
    server = VLLMServer(settings, base_model_dir)
    server.start()
    supervisor = Supervisor(server)
    try:
        server.wait_ready()
        supervisor.start()
        yield RunningVLLM(url=server.url, settings=settings, supervisor=supervisor)
    finally:
        supervisor.stop()


@pytest.fixture
def vllm_settings(tmp_path, sqlite_url, base_model_dir, vllm_server) -> Settings:
    """One test's settings (own home, migrated SQLite) pointing at the session's vLLM server."""
    return load_settings(home=tmp_path / "home", database_url=sqlite_url, base_model_path=base_model_dir,
                         vllm_url=vllm_server.url)

