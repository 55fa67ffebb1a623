"""`flywheel model`: prepare the base model."""

from __future__ import annotations

import typer

from flywheel.cli.common import console, fail, settings
from serving.base_model import ModelPrepareError, ensure_base_model, prepare_bundled_model

model_app = typer.Typer(help="Prepare the base model (the bundled SmolLM2-135M-Instruct as safetensors).", no_args_is_help=True)


@model_app.command("prepare")
def prepare(force: bool = typer.Option(False, help="Convert again even if already prepared.")) -> None:
    """Turn the bundled SmolLM2-135M-Instruct GGUF into a safetensors folder (idempotent)."""
    try:
        if force and settings().base_model_path is None:
            prepare_bundled_model(settings().base_model_dir, force=True, progress=console.print)
        else:
            path = ensure_base_model(settings(), progress=console.print)
            console.print(f"base model: {path}")
    except ModelPrepareError as exc:
        raise fail(str(exc)) from None


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
