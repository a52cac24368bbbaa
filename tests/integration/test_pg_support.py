"""The tests' own PostgreSQL (tests/pg_support.py, when ``POSTGRES_URL`` is unset): a pytest
killed with SIGKILL runs no ``atexit`` hook and no fixture teardown, so pgserver's own cleanup
never runs; the server it started must stop all the same, not stay running for every killed run
of the suite. A real pytest in a subprocess, a real pgserver, a real SIGKILL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

TESTS = Path(__file__).resolve().parents[1]

INNER = """
import os, sys, time
sys.path.insert(0, {tests!r})
import psycopg, pytest
from pg_support import postgres_server


@pytest.fixture(scope="session")
def pg_url():
    with postgres_server() as url:
        yield url


def test_hold(pg_url):
    with psycopg.connect(pg_url) as conn:
        (data,) = conn.execute("SHOW data_directory").fetchone()
    pid = int(open(os.path.join(data, "postmaster.pid")).readline())
    with open({report!r} + ".tmp", "w") as out:
        out.write(f"{{pid}} {{data}}")
    os.replace({report!r} + ".tmp", {report!r})
    time.sleep(120)
"""


def _postmaster_alive(pid: int, data: str) -> bool:
    try:
        process = psutil.Process(pid)
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE and data in " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return False


def test_a_pytest_killed_with_sigkill_leaves_no_postgres_running(tmp_path: Path) -> None:
    report = tmp_path / "server"
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER.format(tests=str(TESTS), report=str(report))))
    env = {k: v for k, v in os.environ.items() if k != "POSTGRES_URL"}
    inner = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "--rootdir", str(tmp_path),
         str(tmp_path / "test_inner.py")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    pid = data = None
    try:
        deadline = time.monotonic() + 120
        while not report.exists():
            assert inner.poll() is None, inner.stdout.read().decode() if inner.stdout else ""
            assert time.monotonic() < deadline, "the inner pytest never started its server"
            time.sleep(0.2)
        pid_text, data = report.read_text().split(" ", 1)
        pid = int(pid_text)
        assert _postmaster_alive(pid, data)
        inner.send_signal(signal.SIGKILL)
        inner.wait(10)
        deadline = time.monotonic() + 30
        while (_postmaster_alive(pid, data) or Path(data).exists()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _postmaster_alive(pid, data), f"postgres {pid} of {data} still runs after its pytest was killed"
        assert not Path(data).exists(), f"{data} was left behind"
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
        if pid is not None and data is not None and _postmaster_alive(pid, data):
            os.kill(pid, signal.SIGQUIT)  # this test's own leftover server: immediate shutdown
            psutil.Process(pid).wait(10)
        if data is not None:
            shutil.rmtree(Path(data).parent, ignore_errors=True)
