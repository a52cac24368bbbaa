"""`timeline --help` and each command's `--help` read well, and every command and every setting is
documented: the commands are read from the real app, the settings from ``Settings``' fields."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from timeline.cli import app
from timeline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
# A type in angle brackets (<bool>, <str>, <int range>), a required argument in braces ({entity}),
# a flag's off switch shown as its default ([default: no-force]), a Python repr.
ARTEFACT = re.compile(r"<[a-z][\w\[\] ]*>|\{\w+\}|\[default: no-|\bNone\b|\bFalse\b|\bTrue\b")


def help_of(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "120", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def test_the_commands_are_found() -> None:
    assert {"serve", "publish", "show", "rebuild", "verify", "info", "demo"} <= set(COMMANDS)


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_has_no_artefacts(command: str) -> None:
    text = help_of(*filter(None, [command]))
    assert not ARTEFACT.findall(text), text


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_and_option_says_what_it_does(command: str) -> None:
    cmd = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    summary = (cmd.help or "").split("\n\n")[0]
    assert summary and "\n" not in summary.strip(), f"{command}: the summary is not one line: {summary!r}"
    for param in cmd.params:
        assert getattr(param, "help", None), f"timeline {command}: {param.name} has no help"


def docs(*names: str) -> str:
    return "\n".join((ROOT / name).read_text(encoding="utf-8") for name in names)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_documented(command: str) -> None:
    assert f"`timeline {command}" in docs("README.md", "docs/contract.md"), f"timeline {command}"


@pytest.mark.parametrize("alias", sorted(f.alias for f in Settings.model_fields.values() if f.alias))
def test_every_setting_is_documented(alias: str) -> None:
    pages = ["docs/contract.md", *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "docs").glob("operations*.md")))]
    assert re.search(rf"^\| `{alias}` \|", docs(*pages), re.MULTILINE), f"{alias} is in no settings table of {pages}"


def test_every_setting_is_read() -> None:
    assert len([f for f in Settings.model_fields.values() if f.alias]) == len(Settings.model_fields)
