"""No command writes over the embedded Redis' folder beside the store (`data/redis`: its
append-only file holds the stream's entries not yet stored and the dead letters, `redis.port`
tells the other commands where it listens). `timeline backup --force data/redis/appendonly.aof`
used to replace the AOF with a SQLite copy: Redis then refused to start on it ("Bad file format
reading the append only file"), and with it `publish`, `serve` and `demo`, and what it held was
gone. The same for `export --output`, `import --rejected` and `dead-letters export`."""

from __future__ import annotations

import json

import pytest

from test_cli import run

pytestmark = pytest.mark.e2e


def test_no_command_writes_over_the_embedded_redis_folder(tmp_path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(
        json.dumps({"id": f"r-{i}", "kind": "report", "occurred_at": "2025-05", "headline": f"Report {i}",
                    "entities": [{"id": "acme", "name": "Acme"}]})
        for i in range(3)
    ) + "\n")
    assert run(["import", str(events), "-q"], tmp_path).returncode == 0
    published = run(["publish", str(events)], tmp_path)  # the embedded Redis for ./data: its AOF
    assert published.returncode == 0, published.stderr
    folder = tmp_path / "data" / "redis"
    aof = folder / "appendonly.aof"
    before = aof.read_bytes()
    assert b"XADD" in before

    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    for target in (aof, folder / "redis.port", folder / "anything.csv"):
        for args in (
            ("backup", str(target), "--force"),
            ("export", "acme", "--format", "csv", "--output", str(target)),
            ("import", str(bad), "--rejected", str(target)),
            ("dead-letters", "export", str(target)),
        ):
            done = run(list(args), tmp_path)
            message = " ".join(done.stderr.split())
            assert done.returncode == 2, (args, done.returncode, done.stdout, message)
            assert "belongs to the store" in message and "embedded Redis" in message, (args, message)
    assert aof.read_bytes() == before
    assert not (folder / "redis.port").exists() and not (folder / "anything.csv").exists()

    again = run(["publish", str(events)], tmp_path)  # the embedded Redis still starts on its AOF
    assert again.returncode == 0, again.stderr
