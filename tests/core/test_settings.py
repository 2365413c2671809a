"""OPENRFT_ENV=production refuses the compose file's default database password and a missing or weak
bootstrap key, with one clear line at start-up."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from core.settings import Settings
from tests.support import REPO

STRONG_KEY = "sk-openrft-" + "0123456789abcdefghijklmnopqrstuvwxyzABCD"
GOOD_DB = "postgresql://openrft:s3cret-from-env@postgres:5432/openrft"


def _production(**env: str | None) -> Settings:
    values = {"OPENRFT_ENV": "production", "DATABASE_URL": GOOD_DB, "OPENRFT_BOOTSTRAP_API_KEY": STRONG_KEY}
    values.update(env)
    # Validation aliases are the environment names; None leaves a value out.
    return Settings(**{k: v for k, v in values.items() if v is not None})  # type: ignore[arg-type]


def test_production_accepts_a_real_password_and_a_strong_key():
    settings = _production()
    assert settings.environment == "production" and settings.bootstrap_api_key == STRONG_KEY


def test_development_refuses_nothing():
    Settings(OPENRFT_ENV="development", DATABASE_URL="postgresql://openrft:openrft@db/openrft")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_URL": None}, "needs DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://openrft:openrft@postgres:5432/openrft"}, "set POSTGRES_PASSWORD"),
        ({"DATABASE_URL": "postgresql+psycopg://u:postgres@db/x"}, "default password"),
        ({"OPENRFT_BOOTSTRAP_API_KEY": None}, "OPENRFT_BOOTSTRAP_API_KEY is not set"),
        ({"OPENRFT_BOOTSTRAP_API_KEY": ""}, "OPENRFT_BOOTSTRAP_API_KEY is not set"),  # compose's default
        ({"OPENRFT_BOOTSTRAP_API_KEY": "sk-short"}, "OPENRFT_BOOTSTRAP_API_KEY is weak"),
        ({"OPENRFT_BOOTSTRAP_API_KEY": "ab" * 30}, "OPENRFT_BOOTSTRAP_API_KEY is weak"),
    ],
)
def test_production_refuses(env: dict[str, str | None], message: str):
    with pytest.raises(ValidationError, match="OPENRFT_ENV=production refuses to start") as info:
        _production(**env)
    assert message in str(info.value)


def test_every_problem_is_named_at_once():
    with pytest.raises(ValidationError) as info:
        _production(
            DATABASE_URL="postgresql://openrft:openrft@postgres/openrft", OPENRFT_BOOTSTRAP_API_KEY=None
        )
    assert "default password" in str(info.value) and "is not set" in str(info.value)


@pytest.mark.parametrize(
    "command", [["migrate"], ["serve", "--no-worker"], ["worker", "--queues", "default"]]
)
def test_start_up_error_is_one_line(tmp_path, command: list[str]):
    """What `docker compose up` without POSTGRES_PASSWORD and OPENRFT_BOOTSTRAP_API_KEY gets: exit 1 and
    one line naming both remedies, before anything connects or spawns."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "OPENRFT_BOOTSTRAP_API_KEY")}
    env.update(
        OPENRFT_HOME=str(tmp_path),
        OPENRFT_ENV="production",
        DATABASE_URL="postgresql://openrft:openrft@127.0.0.1:1/openrft",
        OPENRFT_BOOTSTRAP_API_KEY="",
    )
    result = subprocess.run(
        [sys.executable, "-m", "openrft.cli", *command],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("openrft: error: OPENRFT_ENV=production refuses to start:")
    assert "POSTGRES_PASSWORD" in result.stderr and "OPENRFT_BOOTSTRAP_API_KEY" in result.stderr


def test_private_url_hosts_are_a_comma_list_from_the_environment(monkeypatch):
    from core.settings import grader_settings

    monkeypatch.setenv("OPENRFT_PRIVATE_URL_HOSTS", "vllm.internal:8000, 10.0.0.5 ,Judge.Local")
    settings = Settings()
    assert settings.private_url_hosts == ["vllm.internal:8000", "10.0.0.5", "judge.local"]
    assert (
        grader_settings(settings)["private_url_hosts"] == settings.private_url_hosts
    )  # graders and jobs alike
