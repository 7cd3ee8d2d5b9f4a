"""Where a process's settings come from: the environment, a .env file (the environment wins),
and a warning that names a VCENTER_* variable that is no setting, with the closest one."""

from __future__ import annotations

import logging
from importlib.metadata import version

import pytest
from typer.testing import CliRunner

from vcenter.cli import app
from vcenter.core import settings as settings_module
from vcenter.core.settings import get_settings, reset_settings_cache, unknown_variables


@pytest.fixture
def fresh_settings(monkeypatch):
    """get_settings() read anew in the test, and again afterwards for the next test."""
    reset_settings_cache()
    monkeypatch.setattr(settings_module, "_warned", set())
    yield
    reset_settings_cache()


def test_a_misspelt_setting_is_named_with_the_closest_one():
    assert unknown_variables(["VCENTER_HEARTBEAT_TTLL", "VCENTER_HEARTBEAT_TTL", "PATH", "VCENTER_NOTHING_LIKE_IT"]) == [
        ("VCENTER_HEARTBEAT_TTLL", "VCENTER_HEARTBEAT_TTL"),
        ("VCENTER_NOTHING_LIKE_IT", None),
    ]


def test_variables_of_compose_the_lab_and_the_tests_are_not_reported():
    assert unknown_variables(["VCENTER_DB_PASSWORD", "VCENTER_TEST_PG_URL", "VCENTER_ENV_FILE", "vcenter_redis_url"]) == []


def test_the_env_file_is_read_and_the_environment_wins(tmp_path, monkeypatch, fresh_settings, caplog):
    env_file = tmp_path / "site.env"
    env_file.write_text("VCENTER_HEARTBEAT_TTL=7.5\nVCENTER_TASK_LEASE=42\nVCENTER_REAPER_PERIDO=1\n")
    monkeypatch.setenv("VCENTER_ENV_FILE", str(env_file))
    monkeypatch.setenv("VCENTER_TASK_LEASE", "43")
    monkeypatch.setenv("VCENTER_LOG_LEVLE", "DEBUG")
    with caplog.at_level(logging.WARNING, logger="vcenter.core.settings"):
        settings = get_settings()
    assert settings.heartbeat_ttl == 7.5 and settings.task_lease == 43.0
    warnings = [r.getMessage() for r in caplog.records]
    assert f"{env_file} sets VCENTER_REAPER_PERIDO, which is no setting: ignored (did you mean VCENTER_REAPER_PERIOD?)" in warnings
    assert "the environment sets VCENTER_LOG_LEVLE, which is no setting: ignored (did you mean VCENTER_LOG_LEVEL?)" in warnings


def test_without_an_env_file_only_the_environment_counts(tmp_path, monkeypatch, fresh_settings):
    monkeypatch.setenv("VCENTER_ENV_FILE", str(tmp_path / "absent.env"))
    monkeypatch.setenv("VCENTER_HEARTBEAT_TTL", "9")
    assert get_settings().heartbeat_ttl == 9.0


def test_version_option_prints_the_installed_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"virtcenter {version('virtcenter')}"
