"""`flywheel serve` as a plain function: vLLM supervised, its adapters kept in step with the registry."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from flywheel.settings import Settings
from serving.adapters import sync_adapters
from serving.base_model import ensure_base_model
from serving.engine import Supervisor, VLLMServer
from serving.errors import ServingError


def _sync(settings: Settings, report: Callable[[str], None]) -> None:
    try:
        result = sync_adapters(settings)
    except (ServingError, SQLAlchemyError) as exc:  # what is served stays served; try again next round
        report(f"adapter sync failed: {exc}")
        return
    if result.loaded or result.unloaded:
        report(f"adapters: loaded {result.loaded or '-'}, unloaded {result.unloaded or '-'}")


def serve(settings: Settings, *, report: Callable[[str], None] = print,
          progress: Callable[[str], None] = lambda _msg: None, on_ready: Callable[[], None] = lambda: None,
          sync_every_s: float = 5.0,
          stop: threading.Event | None = None) -> None:
    """Start vLLM, then keep adapters synced (at start, after a restart, every `sync_every_s`)
    until `stop` is set or SIGTERM / Ctrl-C arrives; vLLM is stopped on the way out."""
    stop = stop or threading.Event()
    server = VLLMServer(settings, ensure_base_model(settings, progress=report))
    report(f"starting vLLM ({'CUDA' if server.cuda else 'CPU'}) on {server.url}; log {server.log_path}")
    if server.gpu_plan:
        report(f"GPU memory: {server.gpu_plan.note}")
    supervisor = Supervisor(server, after_restart=lambda: _sync(settings, report), log=report)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # like Ctrl-C, also mid-startup
    try:
        server.start()
        server.wait_ready(progress)
        on_ready()
        report(f"vLLM ready: OpenAI API at {server.url}/v1 (base model served as 'base')")
        supervisor.start()
        while True:
            _sync(settings, report)
            if stop.wait(sync_every_s):
                break
    except KeyboardInterrupt:
        pass
    finally:
        report("stopping vLLM")
        supervisor.stop()
