"""`timeline dead-letters` and each of its commands say what they do, and each is documented in
docs/dead-letters.md (the top-level commands are checked by test_cli_help.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from test_cli_help import ARTEFACT, help_of

from timeline.deadletters_cli import app

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_the_commands() -> None:
    assert COMMANDS == ["drop", "export", "list", "replay", "resubmit"]


@pytest.mark.parametrize("command", COMMANDS)
def test_each_says_what_it_does_and_is_documented(command: str) -> None:
    cmd = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    assert (cmd.help or "").split("\n\n")[0].count("\n") == 0, cmd.help
    for param in cmd.params:
        assert getattr(param, "help", None), f"{command}: {param.name} has no help"
    assert not ARTEFACT.findall(help_of("dead-letters", command))
    assert f"`timeline dead-letters {command}" in (ROOT / "docs" / "dead-letters.md").read_text(encoding="utf-8")
