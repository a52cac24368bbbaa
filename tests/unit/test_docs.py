"""The documentation's examples and links against the real code.

An event example in the docs is a fenced ``json`` block right after a marker comment:
``<!-- event: valid -->`` (the service's validator must accept it) or
``<!-- event: rejected REASON -->`` (it must reject it with that reason). Every relative link of
the README and the docs must point at a file of the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from events.models import EventRejected, parse_event_bytes

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
EXAMPLE = re.compile(r"<!-- event: (valid|rejected (\w+)) -->\s*\n```json\n(.*?)\n```", re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _examples() -> list[tuple[str, str, str | None, str]]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for i, m in enumerate(EXAMPLE.finditer(text)):
            outcome = "valid" if m.group(1) == "valid" else "rejected"
            found.append((f"{page.name}#{i}", outcome, m.group(2), m.group(3)))
    return found


EXAMPLES = _examples()


def test_the_docs_have_event_examples() -> None:
    assert len(EXAMPLES) >= 5, "the contract page's examples went missing (marker or fence changed?)"


@pytest.mark.parametrize(("where", "outcome", "reason", "text"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_event_example(where: str, outcome: str, reason: str | None, text: str) -> None:
    if outcome == "valid":
        parsed = parse_event_bytes(text.encode("utf-8"))
        assert parsed.id
    else:
        with pytest.raises(EventRejected) as caught:
            parse_event_bytes(text.encode("utf-8"))
        assert caught.value.reason == reason, caught.value.error


def _links() -> list[tuple[str, str]]:
    out = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # code is not prose
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            out.append((str(page.relative_to(ROOT)), target))
    return out


@pytest.mark.parametrize(("page", "target"), _links())
def test_relative_link_resolves(page: str, target: str) -> None:
    path = target.split("#", 1)[0]
    assert (ROOT / page).parent.joinpath(path).exists(), f"{page}: link to {target} points at nothing"
    assert "shared/" not in path, f"{page}: {target} is outside the repository: a clone does not have it"
