"""Done means: after a few questions, votes and one run, the real Prometheus has data for every panel of the
Grafana dashboard and every alert rule, and MLflow shows the run with its metrics and artifacts.

The live processes, each a `flywheel` command with its settings in FLYWHEEL_* variables: `flywheel serve`
(its own vLLM), the bot in HTTP mode (Slack's Web API: the local stand-in, which refuses streaming here, so
the bot meets a real Slack error and falls back to edited messages), the scheduler and the dashboard; and
Debian's `prometheus` with deploy/prometheus's config and rules, scraping them all every second. Alice asks
in a channel (the base model answers) and Bob votes and writes better answers; a reviewer approves three
pairs; the scheduler starts a real DPO run (one step) that registers v1; an admin promotes it; `flywheel
serve` loads it; Alice asks again and Bob votes on v1's answers. Then every query is asked of Prometheus's
HTTP API, MLflow is read with MlflowClient, and the dashboard's main panels are plotted to test-artifacts/.

One vLLM start (about 40 s on 2 idle cores) and one training run of one step. Measured here while other suites
kept the 2 cores at a load average of 16-19: 20 minutes (vLLM's start 5, the run 4, each answer up to 2).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from prometheus_support import Prometheus, dashboard_queries, finite_values, plot_panels, rule_queries, scrape_config
from slack_stub import RunningBot, SlackStub
from slack_support import BOB, SECRET, TOKEN, ask_until_answered, vote, write_better_answer
from test_serve_cli import terminate
from training_support import wait_for

from serving.engine import is_ready
from serving.testing import free_port
from storage.db import make_engine, session_scope
from storage.models import PairStatus, RunStatus
from storage.pairs import PairFilter, approve_pair, list_pairs
from storage.registry import list_versions, promote_version
from storage.runs import list_runs
from storage.users import Actor, Role
from training.tracking import VERSION_TAG

pytestmark = [pytest.mark.vllm, pytest.mark.training, pytest.mark.timeout(1800)]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
BEFORE = ["How do I follow the logs of the worker service?", "How do I list the open ports?",
          "How do I restart nginx?", "How do I see the disk usage of a folder?"]
BETTER = ["Run `journalctl -u worker -f`.", "Run `ss -tlnp`.", "Run `sudo systemctl restart nginx`.",
          "Run `du -sh FOLDER`."]
AFTER = ["How do I check which process uses port 8080?", "How do I show the kernel version?"]
REVIEWER, ADMIN = Actor("rita", Role.reviewer), Actor("adam", Role.admin)
PLOTTED = ["Questions and answers per minute", "Slack ack latency", "Answer latency", "👍 share per version",
           "Pairs by status", "Review queue age and training backlog", "Runs by kind and status",
           "Generation throughput", "KV cache use and queue"]


class BotProcess:
    """Signed Slack requests to a bot process (RunningBot's, for a bot that runs elsewhere)."""

    post, send_event, send_interaction = RunningBot.post, RunningBot.send_event, RunningBot.send_interaction

    def __init__(self, port: int):
        self.url, self.secret = f"http://127.0.0.1:{port}/slack/events", SECRET


def start(command: str, env: dict[str, str], logs: Path) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "SLACK_"))}
    with (logs / f"{command}.out").open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "flywheel", command], env={**clean, **env}, cwd=logs,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def alive(process: subprocess.Popen, check) -> bool:
    assert process.poll() is None, f"{process.args} exited with {process.returncode}"
    return check()


def listening(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
        return True
    except httpx.TransportError:
        return False


def stop_runs(engine) -> None:
    """A run's process has a session of its own: it would outlive the scheduler that started it."""
    with session_scope(engine) as session:
        pids = [run.pid for run in list_runs(session) if run.pid and run.status is RunStatus.running]
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_prometheus_has_data_for_every_panel_and_alert_and_mlflow_shows_the_run(tmp_path, sqlite_url, base_model_dir):
    ports = {name: free_port() for name in ("vllm", "serve", "bot", "scheduler", "dashboard", "bot_http", "ui")}
    home, logs = tmp_path / "home", tmp_path / "logs"
    logs.mkdir()
    with SlackStub(TOKEN, streaming=False) as slack:
        settings = {
            "HOME": home, "DATABASE_URL": sqlite_url, "BASE_MODEL_PATH": base_model_dir, "VLLM_PORT": ports["vllm"],
            "SERVE_METRICS_PORT": ports["serve"], "BOT_METRICS_PORT": ports["bot"], "DASHBOARD_PORT": ports["ui"],
            "SCHEDULER_METRICS_PORT": ports["scheduler"], "DASHBOARD_METRICS_PORT": ports["dashboard"],
            "BOT_MODE": "http", "BOT_PORT": ports["bot_http"], "SLACK_API_URL": slack.url, "STREAM_INTERVAL_S": 0,
            "MAX_ANSWER_TOKENS": 24, "SCHEDULER_INTERVAL_S": 1, "MIN_NEW_PAIRS": 3, "MIN_INTERVAL_MINUTES": 0,
            "EVAL_FRACTION": 0.34, "EPOCHS": 1, "BATCH_SIZE": 2, "MAX_LENGTH": 64, "LORA_R": 8, "LORA_ALPHA": 16,
            "GATE_MARGIN": -1,  # the gate has tests of its own
        }
        env = {f"FLYWHEEL_{name}": str(value) for name, value in settings.items()}
        env |= {"SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET}
        targets = {"flywheel-serve": ports["serve"], "flywheel-bot": ports["bot"], "vllm": ports["vllm"],
                   "flywheel-scheduler": ports["scheduler"], "flywheel-dashboard": ports["dashboard"]}
        processes = {command: start(command, env, logs) for command in ("serve", "bot", "scheduler", "dashboard")}
        engine = make_engine(sqlite_url)
        try:
            with Prometheus(scrape_config(tmp_path, targets), tmp_path / "prometheus-data") as prometheus:
                started = time.time()
                vllm_url = f"http://127.0.0.1:{ports['vllm']}"
                wait_for(lambda: alive(processes["serve"], lambda: is_ready(vllm_url)), 600, "vLLM")
                wait_for(lambda: alive(processes["bot"], lambda: listening(f"http://127.0.0.1:{ports['bot_http']}")),
                         60, "the bot")
                bot = BotProcess(ports["bot_http"])

                # The base model answers; Bob votes each answer down and writes a better one.
                for question, better in zip(BEFORE, BETTER):
                    message = ask_until_answered(bot, slack, question)
                    assert vote(bot, BOB, message, "down").status_code == 200
                    assert write_better_answer(bot, slack, BOB, message, better).status_code == 200
                with session_scope(engine) as session:
                    pending = list_pairs(session, PairFilter(status=PairStatus.pending))
                    assert len(pending) == len(BEFORE)
                    for pair in pending[1:]:  # the newest stays in the review queue
                        approve_pair(session, pair.id, REVIEWER)

                # The scheduler starts a run on the three approved pairs; it registers v1 and ends (its MLflow run
                # finished); `flywheel serve` unloads the candidate its regression answers loaded; an admin promotes it.
                version = wait_for(lambda: registered(engine), 1200, "the run to register a version")
                tracking = MlflowClient(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")  # the default local store
                wait_for(lambda: run_finished(engine, tracking), 300, "the run's MLflow run to finish")
                wait_for(lambda: not v1_loaded(vllm_url), 60, "flywheel serve to unload the candidate")
                with session_scope(engine) as session:
                    promoted_at = promote_version(session, version, ADMIN).promoted_at.timestamp()
                wait_for(lambda: v1_loaded(vllm_url), 60, "flywheel serve to load v1")
                for question in AFTER:
                    message = ask_until_answered(bot, slack, question)
                    assert vote(bot, BOB, message, "up" if question == AFTER[0] else "down").status_code == 200
                wait_for(lambda: prometheus.query('flywheel_feedback_votes{version="v1", role="active"} > 0'),
                         60, "the scheduler's gauges to show the votes on v1")
                wait_for(lambda: production(tracking) == "v1", 60, "the scheduler to move MLflow's alias")

                missing = [(q.where, q.expr) for q in dashboard_queries() + rule_queries()
                           if not finite_values(prometheus.query(q.expr))]
                assert missing == []
                unhealthy = [r["name"] for g in prometheus.api("rules")["groups"] for r in g["rules"]
                             if r["health"] != "ok"]
                assert unhealthy == []
                assert {t["labels"]["job"]: t["health"] for t in prometheus.api("targets")["activeTargets"]} == {
                    job: "up" for job in targets}
                plot_panels(prometheus, PLOTTED, started, time.time(), ARTIFACTS / "grafana-panels.png", [promoted_at])
        finally:
            for process in processes.values():
                terminate(process)
            stop_runs(engine)

    # MLflow shows the run: its whole config, data, TRL's step metrics, evaluation, gate, adapter and model card.
    with session_scope(engine) as session:
        [run] = list_runs(session)
        mlflow_run, snapshot_hash = tracking.get_run(run.mlflow_run["run_id"]), run.snapshot.content_hash
    engine.dispose()
    params, metrics = mlflow_run.data.params, mlflow_run.data.metrics
    assert params["snapshot_hash"] == snapshot_hash and params["pairs_source.alternative"] == "3"
    assert params["parent_version"] == "base" and params["train.max_length"] == "64" and params["kind"] == "dpo"
    assert [m.step for m in tracking.get_metric_history(mlflow_run.info.run_id, "loss")] == [1]
    assert "rewards/chosen" not in metrics and "logps/chosen" in metrics  # TRL's own log, beside our names
    assert metrics["gate/passed"] == 1 and "eval/reward_accuracy" in metrics and "incumbent/reward_margin" in metrics
    artifacts = {f.path for f in tracking.list_artifacts(mlflow_run.info.run_id, "adapter")}
    assert {"adapter/README.md", "adapter/adapter_model.safetensors", "adapter/adapter_config.json"} <= artifacts
    assert tracking.get_model_version_by_alias("flywheel", "production").run_id == mlflow_run.info.run_id


def run_finished(engine, mlflow: MlflowClient) -> bool:
    with session_scope(engine) as session:
        [run] = list_runs(session)
        return bool(run.mlflow_run) and mlflow.get_run(run.mlflow_run["run_id"]).info.status == "FINISHED"


def production(tracking: MlflowClient) -> str | None:
    aliases = tracking.get_registered_model("flywheel").aliases
    return tracking.get_model_version("flywheel", aliases["production"]).tags[VERSION_TAG] if "production" in aliases \
        else None


def registered(engine) -> int | None:
    with session_scope(engine) as session:
        runs = list_runs(session)
        assert not [r for r in runs if r.status is RunStatus.failed], [r.error for r in runs]
        versions = list_versions(session)
        return versions[0].id if versions else None


def v1_loaded(vllm_url: str) -> bool:
    return "v1" in {card["id"] for card in httpx.get(f"{vllm_url}/v1/models", timeout=5).json()["data"]}
