"""The agent's exit status, the same under its own supervisor and under systemd: a deliberate
end with a message (no credential, registration refused) is 78 (EX_CONFIG), which neither
restarts (the unit's RestartPreventExitStatus=78); a numbered exit keeps its number."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.agent.supervisor import DELIBERATE, exit_status

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "virtcenter-agent.service"


@pytest.mark.parametrize("code, status", [(None, 0), (0, 0), (3, 3), ("registration refused: 409", DELIBERATE)])
def test_exit_status(code, status, capsys):
    assert exit_status(SystemExit(code)) == status
    assert ("registration refused" in capsys.readouterr().err) == isinstance(code, str)


def test_the_unit_does_not_restart_a_deliberate_end():
    lines = UNIT.read_text().splitlines()
    assert f"RestartPreventExitStatus={DELIBERATE}" in lines and "Restart=on-failure" in lines
