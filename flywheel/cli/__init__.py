"""The `flywheel` command: thin commands over the functions in storage/, serving/, training/, bot/.

Each area's commands live in their own module here; this file only assembles them.
"""

from __future__ import annotations

import typer

from flywheel.cli import (
    bot, config, dashboard, db, demo, init, model, pairs, runs, serve, status, train, up, users, versions,
)

app = typer.Typer(help="Flywheel: make your team's LLM better every week from what its users say.", no_args_is_help=True)
for module in (init, up, status, demo, serve, bot, dashboard, versions, runs, train, users, db, model, pairs, config):
    module.register(app)


def main() -> None:
    app()
