"""Placeholder secrets (vcenter.core.placeholder_secrets): a URL whose password is an
example's placeholder is refused, naming the variable; real passwords, URLs without a password
and non-URLs pass; `vcenter` refuses to start a process with one."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from vcenter.core.placeholder_secrets import (
    PlaceholderSecretError,
    is_placeholder,
    placeholder_variables,
    refuse_placeholder_secrets,
    url_password,
)


@pytest.mark.parametrize("password", ["change-me", "changeme", "CHANGE_ME", "Change Me", "changeit", "replace-me"])
def test_placeholders_are_recognised_in_any_spelling(password):
    assert is_placeholder(password)


@pytest.mark.parametrize("password", ["vcenter", "change-me-x7Qp2", "s3cr3t-long-enough", "me-change"])
def test_real_passwords_are_not_placeholders(password):
    assert not is_placeholder(password)


def test_url_password_is_percent_decoded_and_absent_without_one():
    assert url_password("redis://:change%2Dme@redis:6379/0") == "change-me"
    assert url_password("postgresql+psycopg://vcenter:pw@db:5432/vcenter") == "pw"
    assert url_password("sqlite:///./vcenter.db") is None
    assert url_password("redis://127.0.0.1:6379/0") is None


def test_the_refusal_names_the_variable_whose_password_is_a_placeholder():
    urls = {"VCENTER_DATABASE_URL": "postgresql+psycopg://vcenter:Xk29-real@db/vcenter", "VCENTER_REDIS_URL": "redis://:change-me@redis:6379/0"}
    assert placeholder_variables(urls) == ["VCENTER_REDIS_URL"]
    with pytest.raises(PlaceholderSecretError) as refused:
        refuse_placeholder_secrets(urls)
    assert refused.value.variable == "VCENTER_REDIS_URL"
    assert "VCENTER_REDIS_URL" in str(refused.value)
    refuse_placeholder_secrets({"VCENTER_DATABASE_URL": "sqlite:///x.db", "VCENTER_REDIS_URL": "redis://:Xk29-real@r/0"})


def test_the_command_refuses_to_start_with_a_placeholder(monkeypatch, tmp_path):
    from vcenter.cli import app

    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    monkeypatch.setenv("VCENTER_DATABASE_URL", "postgresql+psycopg://vcenter:changeme@127.0.0.1:1/vcenter")
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 2
    assert "VCENTER_DATABASE_URL" in result.output and "placeholder" in result.output
