"""Text from events and dead letters, made safe for a terminal before the CLI prints it.

Anyone who can publish chooses those bytes. Rich's markup ``escape`` keeps ``[`` from reading as
markup, and Rich drops a few controls (BEL, backspace, CR…), but ESC and the other control
characters reach the terminal as they are: a headline holding ``ESC [2J`` would clear the
operator's screen, ``ESC ]0;…`` set the window's title. ``escape`` here also writes each control
character (Unicode category Cc: C0, DEL and C1) but tab and newline as a visible escape
(``\\x1b``), as Python's ``repr`` does."""

from __future__ import annotations

from rich.markup import escape as escape_markup

_VISIBLE = {
    code: f"\\x{code:02x}"
    for code in (*range(0x00, 0x20), *range(0x7F, 0xA0))
    if chr(code) not in "\t\n"
}


def visible(text: str) -> str:
    """``text`` with its control characters (but tab and newline) written as ``\\xNN``."""
    return text.translate(_VISIBLE)


def escape(text: str) -> str:
    """``text`` for Rich's ``print``: markup escaped and control characters made visible."""
    return escape_markup(visible(text))
