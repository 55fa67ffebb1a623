"""Alembic migrations: upgrade from empty, downgrade to base, upgrade again; an un-migrated DB is refused."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from storage.db import DatabaseNotMigrated, current_revision, downgrade, head_revision, make_engine, require_migrated
from storage.db import upgrade as upgrade_db
from storage.models import Base


def tables(engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade(empty_database_url):
    engine = make_engine(empty_database_url)
    assert current_revision(engine) is None
    with pytest.raises(DatabaseNotMigrated, match="revision none .*run `flywheel db upgrade`"):
        require_migrated(engine)
    upgrade_db(empty_database_url)
    assert tables(engine) == set(Base.metadata.tables) and current_revision(engine) == head_revision()
    require_migrated(engine)
    downgrade(empty_database_url, "base")
    assert tables(engine) == set() and current_revision(engine) is None
    upgrade_db(empty_database_url)
    assert tables(engine) == set(Base.metadata.tables)
    require_migrated(engine)
    engine.dispose()


def test_migrated_schema_matches_the_models(database_url):
    """Alembic finds nothing to add or change: no column, index or constraint of the models is missing."""
    engine = make_engine(database_url)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()


def test_cli_refuses_an_unmigrated_database(cli, tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    result = cli(["pairs", "export"], FLYWHEEL_DATABASE_URL=url)
    assert result.exit_code == 1
    assert "is at revision none (empty)" in result.stderr and "run `flywheel db upgrade`" in result.stderr
    upgraded = cli(["db", "upgrade"], FLYWHEEL_DATABASE_URL=url)
    assert upgraded.exit_code == 0, upgraded.output
    current = cli(["db", "current"], FLYWHEEL_DATABASE_URL=url)
    assert f"database: {head_revision()}  code: {head_revision()}" in current.stdout
    assert cli(["pairs", "export"], FLYWHEEL_DATABASE_URL=url).exit_code == 0
