"""`flywheel bot` as several processes: each receives Slack's requests and answers its share of the channels,
or (FLYWHEEL_BOT_ANSWER_PROCESSES) some only receive and the others only answer.

One Python process acks a burst one request at a time while it also streams answers: a hundred requests at
once waited hundreds of milliseconds for their ack on any number of cores. Here the parent binds the HTTP
socket and starts `count` bot processes that all accept from it (in Socket Mode each opens its own
connection, and Slack spreads envelopes over them); every process stores and acks what it receives and
answers the questions of its channels (bot/question_feed.py). An ack can still wait for its process's
interpreter while that writes answers; with answer processes apart, a receiving process does nothing but
store and ack (and the short Slack calls after an ack), and the answer processes read the questions from
the database. The parent restarts a process that dies and serves the processes' metrics together on
settings.bot_metrics_port (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import logging
import os
import shutil

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from bot.http_server import listening_socket
from bot.slack_client import secret, slack_client
from flywheel.metrics_server import serve_metrics
from flywheel.settings import Settings
from flywheel.supervisor import Child, Supervisor, flywheel_argv

log = logging.getLogger(__name__)


def check_credentials(settings: Settings) -> None:
    """What every process would find at its start, found once before any starts (a process that cannot start
    would be restarted forever): missing secrets raise MissingSlackCredentials, refused tokens SlackApiError."""
    client = slack_client(settings)
    if settings.bot_mode == "http":
        secret(settings, "slack_signing_secret", "HTTP mode verifies requests with it")
        client.auth_test()
    else:
        app_token = secret(settings, "slack_app_token", "Socket Mode connects with it, xapp-...")
        client.auth_test()
        client.apps_connections_open(app_token=app_token)


def run_processes(settings: Settings, count: int, answer_count: int = 0) -> None:
    """Run `count` bot processes until SIGINT/SIGTERM; then stop them (each finishes its answers). With
    `answer_count` answer processes beside them, the `count` only receive, store and ack."""
    check_credentials(settings)
    metrics_dir = settings.home / "run" / "bot-metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)  # a previous run's processes are gone
    metrics_dir.mkdir(parents=True)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    shared: list[str] = []
    fds: tuple[int, ...] = ()
    if settings.bot_mode == "http":
        sock = listening_socket("0.0.0.0", settings.bot_port)
        fds = (sock.fileno(),)
        shared = ["--listen-fd", str(sock.fileno())]
        log.info("listening on port %d, path /slack/events, in %d processes", settings.bot_port, count)
    if answer_count:  # receivers store and ack; answerers answer their share, with no socket or connection
        log.info("%d more processes answer, each its share of the channels", answer_count)
        answering = ["--shares", str(answer_count)]
        roles = [(["--role", "receive", *answering, *shared], fds)] * count
        roles += [(["--role", "answer", "--share", str(k), *answering], ()) for k in range(answer_count)]
    else:
        roles = [(["--share", str(k), "--shares", str(count), *shared], fds) for k in range(count)]
    children = [Child(f"bot {k + 1}/{len(roles)}", flywheel_argv("bot", *argv), env=env, pass_fds=pass_fds,
                      dies_with_parent=True) for k, (argv, pass_fds) in enumerate(roles)]
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    serve_metrics(settings, settings.bot_metrics_port, registry=registry)
    Supervisor(children, report=log.info, on_exit=lambda pid: mark_process_dead(pid, str(metrics_dir))).run()
