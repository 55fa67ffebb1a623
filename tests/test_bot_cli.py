"""`flywheel bot` as a process: HTTP mode serves signed Slack requests on FLYWHEEL_BOT_PORT; missing
credentials end it with a message naming them; tokens never reach its output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
from slack_stub import SlackStub, signed_headers
from test_bot import SECRET, TOKEN
from vllm_fixture import free_port


def bot_process(tmp_path, env: dict[str, str]) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "SLACK_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "flywheel", "bot"], cwd=tmp_path, env={**clean, **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait_until_listening(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("the bot did not start listening")


def test_http_mode_serves_signed_requests_and_keeps_tokens_out_of_its_output(tmp_path, sqlite_url):
    port = free_port()
    url = f"http://127.0.0.1:{port}/slack/events"
    with SlackStub(TOKEN) as slack:
        process = bot_process(tmp_path, {
            "FLYWHEEL_BOT_MODE": "http", "FLYWHEEL_BOT_PORT": str(port), "FLYWHEEL_DATABASE_URL": sqlite_url,
            "FLYWHEEL_SLACK_API_URL": slack.url, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET,
            "FLYWHEEL_HOME": str(tmp_path / "home"),
        })
        try:
            wait_until_listening(url, process)
            body = json.dumps({"token": "legacy", "challenge": "c-123", "type": "url_verification"})
            signed = httpx.post(url, content=body, headers=signed_headers(SECRET, body, "application/json"))
            assert signed.status_code == 200 and signed.json() == {"challenge": "c-123"}
            forged = signed_headers("not-the-secret", body, "application/json")
            assert httpx.post(url, content=body, headers=forged).status_code == 401
            assert {call.method for call in slack.calls} == {"auth.test"}  # the token was checked at start, no more
        finally:
            process.terminate()
            output = process.communicate(timeout=30)[0]
    assert process.returncode == 0 and "listening on port" in output and "stopped" in output  # SIGTERM: a clean stop
    assert TOKEN not in output and SECRET not in output


def test_missing_credentials_end_it_with_a_clear_message(tmp_path, sqlite_url):
    process = bot_process(tmp_path, {"FLYWHEEL_BOT_MODE": "http", "FLYWHEEL_DATABASE_URL": sqlite_url,
                                     "SLACK_BOT_TOKEN": TOKEN})
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 1 and "SLACK_SIGNING_SECRET is not set" in output and TOKEN not in output


def test_a_second_bot_of_the_same_home_stops_at_once_and_the_first_keeps_serving(tmp_path, sqlite_url):
    """Two bots on one database would answer every question twice."""
    with SlackStub(TOKEN) as slack:
        settings = {"FLYWHEEL_BOT_MODE": "http", "FLYWHEEL_DATABASE_URL": sqlite_url, "FLYWHEEL_HOME": str(tmp_path),
                    "FLYWHEEL_SLACK_API_URL": slack.url, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET}
        first_port, second_port = free_port(), free_port()
        first = bot_process(tmp_path, {**settings, "FLYWHEEL_BOT_PORT": str(first_port)})
        try:
            wait_until_listening(f"http://127.0.0.1:{first_port}/healthz", first)
            second = bot_process(tmp_path, {**settings, "FLYWHEEL_BOT_PORT": str(second_port),
                                            "FLYWHEEL_BOT_PROCESSES": "2"})
            output = second.communicate(timeout=60)[0]
            assert second.returncode == 1 and "another bot of this FLYWHEEL_HOME is running" in output
            assert httpx.get(f"http://127.0.0.1:{first_port}/healthz").status_code == 200
        finally:
            first.terminate()
            first.communicate(timeout=30)
    assert first.returncode == 0
