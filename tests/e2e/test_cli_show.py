"""`timeline show` as a user runs it, on a real store (issue 15, point 6): it says how many
entries it shows of how many match its filters (--since, --until, --kind, --as-of), and how to
see the rest (--all, or the --cursor it prints); it never cuts silently."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from helpers import append_batches, news  # noqa: E402
from test_cli import run  # noqa: E402

pytestmark = pytest.mark.e2e

ROW = re.compile(r"China story \d+")


def rows(out: str) -> list[str]:
    return ROW.findall(out)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """621 entries about China over 2025 (a tenth of them outages), then 30 more a moment later."""
    folder = tmp_path_factory.mktemp("show")
    db = folder / "data" / "timeline.db"
    db.parent.mkdir()
    first = [
        news(f"c{i}", f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}", ("china",), headline=f"China story {i}",
             kind="outage" if i % 10 == 0 else "report")
        for i in range(621)
    ]
    later = [news(f"d{i}", "2026-01-01", ("china",), headline=f"China story {1000 + i}") for i in range(30)]
    (batch, _) = append_batches(db, first, later)
    from events.store import EventStore

    with EventStore(db) as s:
        recorded = s.get(batch[-1].event_id).recorded_at
    return folder, recorded


def test_show_says_how_many_it_shows_of_how_many_match(store: tuple[Path, str]) -> None:
    folder, first_batch = store
    shown = run(["show", "china"], folder)
    assert shown.returncode == 0, shown.stderr
    assert "China [china]: 651 entries" in shown.stdout
    assert len(rows(shown.stdout)) == 500
    assert "showing 500 of 651; 151 more: add --all" in shown.stdout
    cursor = re.search(r"--cursor (\S+) for the next page", shown.stdout).group(1)

    rest = run(["show", "china", "--cursor", cursor], folder)
    assert rest.returncode == 0, rest.stderr
    assert len(rows(rest.stdout)) == 151 and "showing the last 151 of 651" in rest.stdout
    assert not set(rows(rest.stdout)) & set(rows(shown.stdout))

    every = run(["show", "china", "--all"], folder)
    assert len(rows(every.stdout)) == 651 and "showing" not in every.stdout

    june = run(["show", "china", "--since", "2025-06", "--until", "2025-06"], folder)
    in_june = sum(1 for i in range(621) if i % 12 == 5)
    assert f"China [china]: {in_june} entries (since 2025-06; until 2025-06)" in june.stdout
    assert len(rows(june.stdout)) == in_june and "showing" not in june.stdout

    outages = run(["show", "china", "--kind", "outage", "--limit", "10"], folder)
    assert "China [china]: 63 entries (kind outage)" in outages.stdout
    assert len(rows(outages.stdout)) == 10 and "showing 10 of 63; 53 more" in outages.stdout

    then = run(["show", "china", "--as-of", first_batch, "--all"], folder)
    assert f"China [china]: 621 entries (as of {first_batch})" in then.stdout
    assert len(rows(then.stdout)) == 621

    as_json = json.loads(run(["show", "china", "--json", "--limit", "5", "--since", "2026"], folder).stdout)
    assert as_json["total"] == 30 and len(as_json["entries"]) == 5 and as_json["next_cursor"]

    mismatch = run(["show", "china", "--cursor", cursor, "--kind", "outage"], folder)
    assert mismatch.returncode == 2 and "cursor" in mismatch.stderr and "kind" in mismatch.stderr
    unknown_kind = run(["show", "china", "--kind", "rumour"], folder)
    assert unknown_kind.returncode == 2 and "kind" in unknown_kind.stderr
