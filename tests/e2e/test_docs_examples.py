"""Every shell example of the README and the docs, run against a real ``timeline serve`` that
holds the demo data: a ``curl`` that answers an error, a ``timeline`` command that fails or a
``redis-cli XADD`` whose event is dead-lettered fails this test.

Examples are the lines of ```` ```sh ```` blocks (a trailing ``\\`` continues a line). ``curl``
lines are sent with httpx to the test's server (``http://127.0.0.1:8000`` is replaced by its
address); ``timeline`` lines run the real command with the server's settings; ``redis-cli XADD``
adds the entry to the test's stream, on the Redis its ``-u URL`` names. A ``$(timeline …)`` in a
line is replaced by what that command prints when run with the server's settings. Lines that start or install something (``timeline serve``,
``timeline demo``, ``pip``, ``apt-get``, ``docker``, ``export``, the two commands, a ``timeline
serve`` with settings before it) are run elsewhere in the suite or not at all, and so are lines
that name a PostgreSQL server of the reader's (``postgresql://…``: the copy to and from
PostgreSQL is tested in tests/integration/test_copy_store.py); they are listed in ``NOT_RUN`` so
that a new kind of example is noticed.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from e2e_support import PROJECT_ROOT, settle

pytestmark = pytest.mark.e2e

PAGES = sorted([PROJECT_ROOT / "README.md", *(PROJECT_ROOT / "docs").glob("*.md")])
BLOCK = re.compile(r"```(?:sh|bash|shell)\n(.*?)```", re.DOTALL)
NOT_RUN = re.compile(
    r"^(python3 -m venv|\.venv/bin/pip|\.venv/bin/python|\.venv/bin/pytest|export |apt-get |timeline serve|"
    r"(TIMELINE_\w+=\S+ )+timeline serve|timeline demo|docker )|postgresql://"
)
DEMO = PROJECT_ROOT / "timeline" / "data" / "demo_events.jsonl"
TIMELINE = str(Path(sys.executable).parent / "timeline")


def _lines() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for block in BLOCK.findall(page.read_text(encoding="utf-8")):
            joined = re.sub(r"\\\n\s*", " ", block)
            for line in joined.splitlines():
                line = line.strip()
                if not line or line.startswith("#") or NOT_RUN.search(line):
                    continue
                found.append((page.name, line))
    return found


EXAMPLES = _lines()


SUBSTITUTION = re.compile(r"\$\((timeline [^)]*)\)")


def _substituted(server, line: str) -> str:
    """The line with each ``$(timeline …)`` replaced by the command's output (it must succeed)."""

    def run(match: re.Match[str]) -> str:
        done = subprocess.run(
            [TIMELINE, *shlex.split(match[1])[1:]], env=server.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{match[0]}: {done.stderr}"
        return done.stdout.strip()

    return SUBSTITUTION.sub(run, line)


def _words(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def test_examples_were_found() -> None:
    kinds = {line.split()[0] for _, line in EXAMPLES}
    assert {"curl", "timeline", "redis-cli"} <= kinds, kinds


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory, redis_url: str):
    from uuid import uuid4

    from e2e_support import Server

    tmp = tmp_path_factory.mktemp("docs-examples")
    stream = f"test:{uuid4().hex}:events"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMELINE_")}
    env.update(
        REDIS_URL=redis_url, TIMELINE_DB=str(tmp / "timeline.db"), TIMELINE_STREAM=stream,
        TIMELINE_CONSUMER=f"docs-{uuid4().hex[:8]}", TIMELINE_CLAIM_IDLE_SECONDS="1",
        PYTHONPATH=str(PROJECT_ROOT),
    )
    server = Server(env, tmp, "docs").start()
    client = redis.Redis.from_url(redis_url)
    try:
        published = subprocess.run([TIMELINE, "publish", str(DEMO)], env=env, capture_output=True, text=True, timeout=120)
        assert published.returncode == 0, published.stderr
        settle(server, client)
        yield server, client
    finally:
        server.close()
        client.delete(stream, f"{stream}:dead")
        client.close()


def _curl(server, words: list[str]) -> httpx.Response:
    method, headers, data, url = "GET", {}, None, None
    it = iter(words[1:])
    for word in it:
        if word in ("-X", "--request"):
            method = next(it)
        elif word in ("-H", "--header"):
            name, _, value = next(it).partition(":")
            headers[name.strip()] = value.strip()
        elif word in ("-d", "--data", "--data-binary"):
            data = next(it)
            method = "POST" if method == "GET" else method
        elif word.startswith("-"):
            continue  # -s and the like
        else:
            url = word
    assert url is not None, words
    url = url.replace("http://127.0.0.1:8000", server.base_url)
    return httpx.request(method, url, headers=headers, content=data, timeout=30)


@pytest.mark.parametrize(("page", "line"), EXAMPLES, ids=[f"{p}:{line[:60]}" for p, line in EXAMPLES])
def test_example_runs(demo_server, page: str, line: str) -> None:
    server, client = demo_server
    words = _words(_substituted(server, line))
    if words[0] == "curl":
        answer = _curl(server, words)
        assert answer.status_code < 400, f"{page}: {line}\n-> {answer.status_code} {answer.text[:500]}"
    elif words[0] == "timeline":
        args = words[1:]
        if args and args[0] == "publish":
            args = [args[0], *(str(PROJECT_ROOT / a) if (PROJECT_ROOT / a).exists() else a for a in args[1:])]
            if not (PROJECT_ROOT / words[2]).exists():
                pytest.fail(f"{page}: {line}: the file it publishes is not in the repository")
        done = subprocess.run(
            [TIMELINE, *args], env=server.env, capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT
        )
        assert done.returncode == 0, f"{page}: {line}\n{done.stdout[-800:]}\n{done.stderr[-800:]}"
    elif words[0] == "redis-cli":
        url = None
        if words[1] in ("-u", "--url"):
            url, words = words[2], [words[0], *words[3:]]
        assert url == server.redis_url, f"{page}: {line}: not sent to the service's Redis ({url})"
        assert [w.upper() for w in words[1:2]] == ["XADD"], line
        fields = words[4:]
        with redis.Redis.from_url(url) as named:
            entry = named.xadd(server.stream, dict(zip(fields[::2], fields[1::2])))
        settle(server, client)
        dead = [f for _, f in client.xrange(server.dead_stream) if f.get(b"source_id") == entry]
        assert not dead, f"{page}: {line}\n-> dead-lettered: {dead}"
    else:
        pytest.fail(f"{page}: an example this test cannot run: {line} (run it here, or list it in NOT_RUN)")
