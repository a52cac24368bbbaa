"""What scrapers wrote never drives the operator's terminal: a headline, an entity name or a
dead letter holding control characters (ESC, as in `\\x1b[2J` "clear the screen" or
`\\x1b]0;…` "set the window title") is printed by `timeline show`, `timeline dead-letters list`
and `timeline publish` with those characters made visible, not sent to the terminal."""

from __future__ import annotations

import json

import pytest
import redis

from e2e_support import report_event, settle
from test_cli import run

pytestmark = pytest.mark.e2e

CLEAR = "\x1b[2J"
TITLE = "\x1b]0;owned\x07"


def test_control_characters_from_events_are_shown_not_sent_to_the_terminal(tmp_path, serve,
                                                                          redis_client: redis.Redis) -> None:
    server = serve()
    event = report_event(1, prefix="ctl", headline=f"Quiet{CLEAR}headline\x01",
                         entities=[{"id": "ctl-entity", "name": f"Ctl{TITLE}Name", "role": "subject"}])
    redis_client.xadd(server.stream, {"event": json.dumps(event)})
    redis_client.xadd(server.stream, {"event": f"{TITLE}{CLEAR}{{not json".encode()})
    settle(server, redis_client)
    env = {"TIMELINE_DB": str(server.db), "REDIS_URL": server.redis_url, "TIMELINE_STREAM": server.stream}

    shown = run(["show", "ctl-entity"], tmp_path, **env)
    assert shown.returncode == 0, shown.stderr
    assert "Quiet" in shown.stdout and "\\x1b[2Jheadline\\x01" in shown.stdout
    assert "Ctl\\x1b]0;owned\\x07Name" in shown.stdout

    listed = run(["dead-letters", "list"], tmp_path, **env)
    assert listed.returncode == 0, listed.stderr
    assert "bad_json" in listed.stdout and "\\x1b]0;owned" in listed.stdout

    published = run(["publish", "-"], tmp_path, stdin=f'{{"headline": "{CLEAR}"'.encode(), **env)
    assert published.returncode == 1 and "bad_json" in published.stderr

    for out in (shown.stdout, shown.stderr, listed.stdout, listed.stderr, published.stdout, published.stderr):
        assert "\x1b" not in out and "\x01" not in out, repr(out)
