"""`flywheel config`: the settings in effect, or the reference of every setting."""

from __future__ import annotations

import typer
from pydantic import SecretStr

from flywheel.cli.common import settings
from flywheel.settings import Settings, masked_url


def env_name(name: str, field) -> str:
    aliases = getattr(field.validation_alias, "choices", None)
    return aliases[-1] if aliases else f"FLYWHEEL_{name.upper()}"


def reference_markdown() -> str:
    """One row per setting: variable, default, meaning (the README's configuration table)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = "" if field.default is None else str(field.default)
        rows.append(f"| `{env_name(name, field)}` | `{default}` | {field.description or ''} |".replace("``", ""))
    return "\n".join(rows)


def shown(name: str, value) -> str:
    if isinstance(value, SecretStr):
        return "**********"
    return masked_url(value) if name == "database_url" else str(value)


def config(reference: bool = typer.Option(False, "--reference", help="Print every setting's variable, default and meaning.")) -> None:
    """Print the settings in effect (secrets masked)."""
    if reference:
        typer.echo(reference_markdown())
        return
    current = settings()
    for name, field in Settings.model_fields.items():
        typer.echo(f"{env_name(name, field)}={shown(name, getattr(current, name))}")


def register(app: typer.Typer) -> None:
    app.command("config")(config)
