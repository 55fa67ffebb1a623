"""Settings from the environment, `flywheel --help`, `flywheel init`, and `flywheel pairs export/import`."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from flywheel.cli import app
from flywheel.settings import SettingsError, load_settings
from storage.db import make_engine, session_scope
from storage.models import Role, User
from storage.pairs import PairFilter, count_pairs
from storage.signin import sign_in


def test_settings_from_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("FLYWHEEL_VLLM_PORT", "8123")
    monkeypatch.setenv("FLYWHEEL_QLORA", "true")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret-bot")
    monkeypatch.setenv("FLYWHEEL_SLACK_SIGNING_SECRET", "signing-secret")
    settings = load_settings()
    assert settings.database_url == f"sqlite:///{(tmp_path / 'h' / 'flywheel.db').as_posix()}"
    assert (settings.vllm_url, settings.qlora) == ("http://127.0.0.1:8123", True)
    assert settings.slack_bot_token.get_secret_value() == "xoxb-secret-bot"
    assert settings.slack_signing_secret.get_secret_value() == "signing-secret"
    assert settings.base_model_dir == tmp_path / "h" / "models" / "SmolLM2-135M-Instruct"


def test_dotenv_file_is_read(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("FLYWHEEL_MIN_NEW_PAIRS=7\nSLACK_APP_TOKEN=xapp-1\n")
    settings = load_settings()
    assert settings.min_new_pairs == 7 and settings.slack_app_token.get_secret_value() == "xapp-1"


def test_bad_values_name_the_variable(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_VLLM_PORT", "abc")
    monkeypatch.setenv("FLYWHEEL_BOT_MODE", "carrier-pigeon")
    monkeypatch.setenv("FLYWHEEL_CANARY_SHARE", "2")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert "FLYWHEEL_VLLM_PORT: Input should be a valid integer" in message
    assert "FLYWHEEL_BOT_MODE: Input should be 'socket' or 'http'" in message
    assert "FLYWHEEL_CANARY_SHARE: Input should be less than or equal to 1" in message


def test_cli_reports_bad_settings_cleanly(cli):
    result = cli(["pairs", "export"], FLYWHEEL_VLLM_PORT="abc")
    assert result.exit_code == 2 and "FLYWHEEL_VLLM_PORT" in result.stderr and "Traceback" not in result.output


def test_cli_reports_an_unreachable_database_without_its_password(cli):
    result = cli(["pairs", "export"], FLYWHEEL_DATABASE_URL="postgresql+psycopg://fw:pg-password@127.0.0.1:1/fw")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot use the database postgresql+psycopg://fw:***@127.0.0.1:1/fw" in result.stderr
    assert "pg-password" not in result.output


def test_secrets_are_masked(monkeypatch):
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-very-secret")
    settings = load_settings(database_url="postgresql+psycopg://flywheel:pg-password@db/flywheel",
                             admin_password="admin-password")
    shown = repr(settings) + str(settings)
    for secret in ("xoxb-very-secret", "pg-password", "admin-password"):
        assert secret not in shown
    assert "postgresql+psycopg://flywheel:***@db/flywheel" in repr(settings)


def command_name(command) -> str:
    return command.name or command.callback.__name__.replace("_", "-")  # typer's own naming rule


def test_help_lists_every_command(cli):
    result = cli(["--help"])
    assert result.exit_code == 0
    names = [command_name(c) for c in app.registered_commands]
    names += [g.name for g in app.registered_groups]
    assert {"init", "db", "model", "pairs"} <= set(names)
    for name in names:
        assert f" {name} " in result.stdout, name
    for group in app.registered_groups:  # and each group lists its own commands
        listed = cli([group.name, "--help"]).stdout
        for command in group.typer_instance.registered_commands:
            assert f" {command_name(command)} " in listed, (group.name, command_name(command))


def test_init_creates_a_hashed_admin_once(cli, tmp_path, base_model_dir):
    env = dict(FLYWHEEL_ADMIN_PASSWORD="s3cret-admin-pw", FLYWHEEL_BASE_MODEL_PATH=str(base_model_dir))
    first = cli(["init"], **env)
    assert first.exit_code == 0, first.output
    assert "admin account 'admin' created" in first.stderr and "s3cret-admin-pw" not in first.output
    again = cli(["init"], **env)
    assert again.exit_code == 0 and "accounts exist already" in again.stderr
    engine = make_engine(f"sqlite:///{tmp_path / 'home' / 'flywheel.db'}")
    with session_scope(engine) as session:
        users = session.scalars(select(User)).all()
        assert [(u.username, u.role) for u in users] == [("admin", Role.admin)]
        assert "s3cret-admin-pw" not in users[0].password_hash
        assert sign_in(session, "admin", "s3cret-admin-pw").actor is not None
    engine.dispose()


def test_init_asks_for_the_password_and_refuses_a_short_one(cli):
    refused = cli(["init", "--skip-model"], input="short\nshort\n")
    assert refused.exit_code == 1 and "at least 8 characters" in refused.stderr
    result = cli(["init", "--skip-model"], input="pw-from-prompt\npw-from-prompt\n")
    assert result.exit_code == 0 and "admin account 'admin' created" in result.stderr


def test_db_commands_report_an_unreachable_database(cli):
    result = cli(["db", "upgrade"], FLYWHEEL_DATABASE_URL="postgresql+psycopg://fw:pg-password@127.0.0.1:1/fw")
    assert result.exit_code == 1 and "cannot use the database" in result.stderr and "pg-password" not in result.output


RECORDS = [
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Deploy?"}],
     "chosen": [{"role": "assistant", "content": "make deploy"}],
     "rejected": [{"role": "assistant", "content": "No idea."}]},
    {"prompt": [{"role": "user", "content": "Où sont les logs ?"}],
     "chosen": [{"role": "assistant", "content": "Dans /var/log/ingest."}],
     "rejected": [{"role": "assistant", "content": "Quelque part."}]},
]


def test_pairs_export_import_round_trip(cli, tmp_path, database_url):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS), encoding="utf-8")
    env = {"FLYWHEEL_DATABASE_URL": database_url}
    imported = cli(["pairs", "import", str(source), "--approve"], **env)
    assert imported.exit_code == 0, imported.output
    assert "imported 2 pair(s), 0 duplicate(s)" in imported.stderr
    assert "imported 0 pair(s), 2 duplicate(s)" in cli(["pairs", "import", str(source)], **env).stderr
    exported = cli(["pairs", "export", "-o", str(tmp_path / "out.jsonl")], **env)
    assert exported.exit_code == 0 and "exported 2 approved pair(s)" in exported.stderr
    assert [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()] == RECORDS
    to_stdout = cli(["pairs", "export", "--status", "pending"], **env)
    assert to_stdout.exit_code == 0 and to_stdout.stdout == ""


BAD_LINES = [
    (json.dumps(RECORDS[0]), None),
    ('{"prompt": [', "line 2: not valid JSON"),
    (json.dumps({"prompt": "q", "chosen": "a"}), "line 3: missing field(s): rejected"),
    (json.dumps({**RECORDS[1], "chosen": "  "}), "line 4: chosen must be a non-empty string"),
    (json.dumps({**RECORDS[1], "chosen": "Quelque part."}), "line 5: chosen and rejected are the same text"),
    (json.dumps({**RECORDS[1], "prompt": [{"role": "[robot]", "content": "x"}]}), "line 6: prompt message role"),
]


def test_malformed_import_is_refused_with_line_numbers(cli, tmp_path, database_url):
    source = tmp_path / "bad.jsonl"
    source.write_text("\n".join(line for line, _ in BAD_LINES) + "\n", encoding="utf-8")
    result = cli(["pairs", "import", str(source)], FLYWHEEL_DATABASE_URL=database_url)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "5 bad line(s), nothing imported" in result.stderr
    for _, expected in BAD_LINES[1:]:
        assert expected in result.stderr
    assert "'[robot]'" in result.stderr  # user text is printed as it is, not taken for markup
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        assert count_pairs(session, PairFilter(status=None)) == 0
    engine.dispose()
