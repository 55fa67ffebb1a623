"""`flywheel serve`: the vLLM server with runtime LoRA adapters that follow the model registry."""

from __future__ import annotations

import typer

from flywheel.cli.common import console, fail, settings
from flywheel.metrics_server import serve_metrics
from serving.base_model import ModelPrepareError
from serving.errors import EngineStartError
from serving.metrics import VllmProbe
from serving.service import serve as serve_forever
from storage.db import DatabaseNotMigrated, get_engine, require_migrated


def serve(sync_every: float = typer.Option(5.0, help="Seconds between adapter syncs with the registry.")) -> None:
    """Start vLLM (CPU or CUDA build, whichever is here), load the active/canary adapters, keep them in sync."""
    config = settings()
    try:
        require_migrated(get_engine(config.database_url))
        if serve_metrics(config, config.serve_metrics_port, VllmProbe(config.vllm_url)):
            console.print(f"metrics at http://{config.metrics_host}:{config.serve_metrics_port}/metrics")
        status = console.status("starting vLLM…")
        status.start()
        try:
            serve_forever(config, report=console.print, progress=status.update, on_ready=status.stop,
                          sync_every_s=sync_every)
        finally:
            status.stop()
    except (DatabaseNotMigrated, ModelPrepareError, EngineStartError) as exc:
        raise fail(str(exc)) from None


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
