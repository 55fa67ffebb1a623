"""`flywheel dashboard`: the Streamlit dashboard on settings.dashboard_host:dashboard_port."""

from __future__ import annotations

from pathlib import Path

import typer

from flywheel.cli.common import console, settings
from flywheel.metrics_server import serve_metrics

# The dashboard package sits beside `flywheel` (in the checkout and in site-packages alike).
APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


def streamlit_args(host: str, port: int) -> list[str]:
    return [
        "run", str(APP),
        "--server.address", host, "--server.port", str(port), "--server.headless", "true",
        "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal", "--theme.primaryColor", "#4f46e5",
    ]


def run_dashboard() -> None:
    """Serve the dashboard (review queue, runs, models, playground); sign in with a `flywheel init` account."""
    config = settings()
    console.print(f"dashboard on http://{config.dashboard_host}:{config.dashboard_port}")
    serve_metrics(config, config.dashboard_metrics_port)
    from streamlit.web.cli import main as streamlit

    # Streamlit runs in this process, beside /metrics (its pages count there); it handles SIGTERM itself.
    streamlit(streamlit_args(config.dashboard_host, config.dashboard_port), prog_name="streamlit")


def register(app: typer.Typer) -> None:
    app.command("dashboard")(run_dashboard)
