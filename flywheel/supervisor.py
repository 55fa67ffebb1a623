"""Process supervision for `flywheel up`: start children, restart crashed ones with backoff, stop all cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

STOP_GRACE_S = 15.0
BACKOFF_START_S, BACKOFF_MAX_S = 1.0, 60.0
STABLE_AFTER_S = 60.0  # a child that ran this long has its backoff reset
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass
class Child:
    name: str
    argv: list[str]
    where: str = ""  # what to tell the user: a URL or a port
    log_path: Path | None = None
    env: dict[str, str] | None = None  # None: this process's environment
    pass_fds: tuple[int, ...] = ()  # descriptors the child inherits (a listening socket)
    dies_with_parent: bool = False  # killed (SIGKILL) when the supervisor dies without stopping it (Linux)
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = BACKOFF_START_S
    restart_at: float | None = None
    _log: object = field(default=None, repr=False)

    def start(self) -> None:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        out = self._log or None
        self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT if out else None,
                                        env=self.env, pass_fds=self.pass_fds,
                                        preexec_fn=_die_with_parent if self.dies_with_parent else None)
        self.started_at, self.restart_at = time.monotonic(), None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
        if self._log:
            self._log.close()
            self._log = None


class Supervisor:
    def __init__(self, children: list[Child], report: Callable[[str], None] = print,
                 on_exit: Callable[[int], None] = lambda pid: None) -> None:
        self.children = children
        self.report = report
        self.on_exit = on_exit  # called with the pid of each child that exited
        self._stopping = False

    def request_stop(self, *_args) -> None:
        self._stopping = True

    def run(self, poll_s: float = 0.5) -> None:
        """Run until SIGINT/SIGTERM; every child crash is restarted after an exponential backoff."""
        previous = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for child in self.children:
                child.start()
                self.report(f"started {child.name} (pid {child.process.pid}){'  ' + child.where if child.where else ''}")
            while not self._stopping:
                self._tend(time.monotonic())
                time.sleep(poll_s)
        finally:
            self.stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _tend(self, now: float) -> None:
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restarts += 1
                    child.start()
                    self.report(f"restarted {child.name} (restart {child.restarts}, pid {child.process.pid})")
                continue
            code = child.process.poll()
            if code is None:
                continue
            self.on_exit(child.process.pid)
            if now - child.started_at >= STABLE_AFTER_S:
                child.backoff_s = BACKOFF_START_S
            child.restart_at = now + child.backoff_s
            self.report(f"{child.name} exited with code {code}; restarting in {child.backoff_s:.0f} s")
            child.backoff_s = min(child.backoff_s * 2, BACKOFF_MAX_S)

    def stop_all(self) -> None:
        for child in self.children:
            child.stop()
        deadline = time.monotonic() + STOP_GRACE_S
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        self.report("all stopped")


def _die_with_parent() -> None:
    """In the child, before it runs: the kernel kills it when its parent dies (a parent killed with SIGKILL
    cannot stop its children, and orphans would keep its socket and answer beside its successor)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def flywheel_argv(*args: str) -> list[str]:
    """Run a flywheel subcommand with this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "flywheel", *args]
