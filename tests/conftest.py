"""Shared fixtures: real databases (SQLite and the local PostgreSQL), the prepared bundled model, settings."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from flywheel.settings import Settings, load_settings  # noqa: E402
from serving.base_model import prepare_bundled_model  # noqa: E402
from storage.db import make_engine, upgrade  # noqa: E402
from vllm_fixture import vllm_server, vllm_settings  # noqa: E402, F401

REPO = Path(__file__).resolve().parent.parent
BUNDLED_MODEL_DIR = REPO / "var" / "models" / "SmolLM2-135M-Instruct"  # where `make setup` prepares it
PG_ADMIN_DSN = os.environ.get("FLYWHEEL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def _main_module_kept():
    """Streamlit's AppTest runs the dashboard as `__main__` and leaves it there; a process started later with
    multiprocessing's spawn would then run dashboard/app.py first and die (test_storage_concurrency did)."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


def _pg_url(name: str) -> str:
    base = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    user, host, port = base.get("user", "postgres"), base.get("host", "127.0.0.1"), base.get("port", "5432")
    return f"postgresql+psycopg://{user}@{host}:{port}/{name}"


def create_database(kind: str, tmp_path: Path, template: str | None = None) -> tuple[str, callable]:
    """A new database of `kind` (empty, or a copy of `template`); returns its URL and a function that drops it."""
    if kind == "sqlite":
        path = tmp_path / "flywheel.db"
        if template:
            shutil.copyfile(template, path)
        return f"sqlite:///{path}", lambda: None
    name = f"fw_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))

    def drop() -> None:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return _pg_url(name), drop


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory):
    """Per backend, a database migrated once per session: tests get copies (much faster than migrating)."""
    made, drops = {}, []

    def get(kind: str) -> str:
        if kind not in made:
            url, drop = create_database(kind, tmp_path_factory.mktemp("template"))
            upgrade(url)  # Alembic disposes its engine: nobody stays connected to the template
            made[kind] = make_url(url).database
            drops.append(drop)
        return made[kind]

    yield get
    for drop in drops:
        drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request, tmp_path):
    url, drop = create_database(request.param, tmp_path)
    yield url
    drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path, migrated_template):
    """A migrated database, once on SQLite and once on PostgreSQL."""
    url, drop = create_database(request.param, tmp_path, migrated_template(request.param))
    yield url
    drop()


@pytest.fixture
def sqlite_url(tmp_path, migrated_template):
    """A migrated SQLite database of its own (not the one `database_url` gives on its SQLite run)."""
    path = tmp_path / "local.db"
    shutil.copyfile(migrated_template("sqlite"), path)
    return f"sqlite:///{path}"


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The bundled SmolLM2-135M-Instruct, prepared once (by `make setup`) and shared by every test run."""
    return prepare_bundled_model(BUNDLED_MODEL_DIR, progress=lambda _msg: None)


@pytest.fixture
def settings(tmp_path, sqlite_url, base_model_dir) -> Settings:
    """Settings for one test: its own home folder and SQLite database, the prepared base model."""
    return load_settings(home=tmp_path / "home", database_url=sqlite_url, base_model_path=base_model_dir)


@pytest.fixture
def cli(tmp_path):
    """Run `flywheel ARGS...` in this process with FLYWHEEL_* env vars (home: a fresh tmp folder)."""
    from typer.testing import CliRunner

    from flywheel.cli import app
    from flywheel.settings import get_settings

    def invoke(args: list[str], input: str | None = None, **env: str):
        env = {"FLYWHEEL_HOME": str(tmp_path / "home"), **env}
        get_settings.cache_clear()  # the CLI reads settings once per process; here once per call
        try:
            return CliRunner().invoke(app, args, input=input, env=env)
        finally:
            get_settings.cache_clear()

    return invoke
