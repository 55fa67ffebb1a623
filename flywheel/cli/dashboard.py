"""`flywheel dashboard`: the Streamlit dashboard on settings.dashboard_host:dashboard_port."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from flywheel.cli.common import console, settings

# The dashboard package sits beside `flywheel` (in the checkout and in site-packages alike).
APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


def streamlit_argv(host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", host, "--server.port", str(port), "--server.headless", "true",
        "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal", "--theme.primaryColor", "#4f46e5",
    ]


def run_dashboard() -> None:
    """Serve the dashboard (review queue, runs, models, playground); sign in with a `flywheel init` account."""
    config = settings()
    console.print(f"dashboard on http://{config.dashboard_host}:{config.dashboard_port}")
    argv = streamlit_argv(config.dashboard_host, config.dashboard_port)
    os.execv(argv[0], argv)  # streamlit takes this process: signals from `flywheel up` reach it directly


def register(app: typer.Typer) -> None:
    app.command("dashboard")(run_dashboard)
