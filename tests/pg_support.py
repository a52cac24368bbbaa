"""PostgreSQL for the tests, found like Redis: ``POSTGRES_URL`` when it is set, else a server
started for the session from the ``pgserver`` package (PostgreSQL's binaries on PyPI), so that a
fresh machine with only Python runs the PostgreSQL tests too.

Tests isolate themselves by schema, not by database: ``fresh_schema`` creates one and returns
the URL whose ``search_path`` names it (events.pg.connect.with_schema); dropping it removes
everything a test made. Creating a schema takes milliseconds; a database, far more.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psutil  # pgserver's own dependency
import psycopg

from events.pg.connect import with_schema


@contextmanager
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL for the session: ``POSTGRES_URL`` when set (and not empty), else
    a pgserver-started one in a temporary folder, stopped and removed afterwards."""
    url = os.environ.get("POSTGRES_URL", "").strip()
    if url:
        yield url
        return
    import pgserver  # the test extra: a PostgreSQL server from PyPI

    folder = tempfile.mkdtemp(prefix="timeline-pg-")
    # pgserver runs the server as the unprivileged user "pgserver" when it is started by root:
    # the folder (mkdtemp makes it 0700) must be reachable by it
    os.chmod(folder, 0o755)
    server = pgserver.get_server(os.path.join(folder, "data"), cleanup_mode="stop")
    watchdog = _watchdog(folder)
    try:
        yield server.get_uri()
    finally:
        try:
            server.cleanup()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            watchdog.kill()
            watchdog.wait()


#: run by a process of its own: once the pytest that started the server (argv[1], with its start
#: time argv[2]) is gone, stop the server whose data is in argv[3]/data and remove argv[3]
WATCHDOG = """
import os, shutil, signal, sys, time
import psutil
parent, started, folder = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
def alive():
    try:
        process = psutil.Process(parent)
        return process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
while alive():
    time.sleep(0.5)
try:
    with open(os.path.join(folder, "data", "postmaster.pid")) as f:
        postmaster = psutil.Process(int(f.readline()))
    if folder in " ".join(postmaster.cmdline()):
        postmaster.send_signal(signal.SIGINT)  # a fast shutdown: its clients died with pytest
        try:
            postmaster.wait(20)
        except psutil.TimeoutExpired:
            postmaster.send_signal(signal.SIGQUIT)  # immediate
            postmaster.wait(10)
except (OSError, ValueError, psutil.Error):
    pass  # no server (stopped by pytest's own cleanup), or already gone
shutil.rmtree(folder, ignore_errors=True)
"""


def _watchdog(folder: str) -> subprocess.Popen[bytes]:
    """A process of its own that stops the server, and removes ``folder``, when this pytest dies
    without its cleanup (SIGKILL, an OOM kill: no ``atexit`` hook runs, and pgserver's cleanup is
    one). In a session of its own, so a signal to pytest's process group does not reach it."""
    started = psutil.Process().create_time()
    return subprocess.Popen(
        [sys.executable, "-c", WATCHDOG, str(os.getpid()), repr(started), folder],
        start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def fresh_schema(url: str, prefix: str = "t") -> str:
    """Create a schema of its own and return ``url`` with that schema as its search_path."""
    schema = f"{prefix}_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return with_schema(url, schema)


def drop_schema(url: str) -> None:
    """Drop the schema that ``url``'s search_path names, and everything in it."""
    with psycopg.connect(url, autocommit=True) as conn:
        (schema,) = conn.execute("SELECT current_schema()").fetchone() or (None,)
        if schema is not None and schema != "public":
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
