"""A real PostgreSQL streaming replica for the tests: a private primary and a hot standby made
from it with ``pg_basebackup -R``, both from the ``pgserver`` package's binaries (PostgreSQL 16
on PyPI), so the tests run on a fresh machine with only Python, whether ``POSTGRES_URL`` is set
or not (the shared server is not used: a replica needs a primary of its own).

Both servers listen on no TCP address, only on a Unix socket in a short temporary folder (a
socket's path has a limit of about 100 bytes). Run by root, they run as the unprivileged user
``pgserver`` (``initdb`` and ``postgres`` refuse root), as ``pgserver`` itself does for its own
server: the user made and the binaries opened to it by ``pgserver.utils``' functions, each
command run with ``subprocess``'s ``user=``.

``private_server()`` is one such server alone, which a test may stop and start again (a
PostgreSQL restart, or an outage, that the shared server cannot be put through).

``streaming_replica()`` stops both servers (``pg_ctl stop -m immediate``, then a kill of the
postmaster if that fails) and removes their folders when the block ends, also on failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg


@dataclass(frozen=True)
class Replica:
    """The URLs of a primary and of its hot standby (database ``postgres``, user ``postgres``)."""

    primary: str
    standby: str

    def replayed(self, timeout: float = 30.0) -> float:
        """Wait until the standby has replayed everything the primary has written so far; the
        seconds it took (the replication lag seen)."""
        started = time.monotonic()
        with psycopg.connect(self.primary, autocommit=True) as p:
            (target,) = p.execute("SELECT pg_current_wal_insert_lsn()").fetchone()  # type: ignore[misc]
        with psycopg.connect(self.standby, autocommit=True) as s:
            while True:
                (done,) = s.execute(
                    "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), %s::pg_lsn) >= 0", (target,)
                ).fetchone()  # type: ignore[misc]
                if done:
                    return time.monotonic() - started
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"the standby has not replayed {target} in {timeout} s")
                time.sleep(0.01)

    @contextmanager
    def replay_paused(self) -> Iterator[None]:
        """The standby's replay paused (``pg_wal_replay_pause``): it receives the primary's WAL
        but applies none of it, a replication lag as long as the block; resumed afterwards."""
        with psycopg.connect(self.standby, autocommit=True) as s:
            s.execute("SELECT pg_wal_replay_pause()")
            while s.execute("SELECT pg_get_wal_replay_pause_state()").fetchone() != ("paused",):
                time.sleep(0.01)
            try:
                yield
            finally:
                s.execute("SELECT pg_wal_replay_resume()")


def _bin() -> Path:
    from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _user() -> str | None:
    """The system user the servers run as: ``pgserver``'s own when run by root, else ourselves."""
    if os.geteuid() != 0:
        return None
    from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists("pgserver")
    # what pgserver does before its own initdb as root: the binaries readable by that user
    ensure_prefix_permissions(_bin())
    read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(_bin(), read | execute)
    ensure_folder_permissions(_bin().parent / "lib", read)
    return "pgserver"


def _run(user: str | None, *args: str) -> None:
    result = subprocess.run([str(_bin() / args[0]), *args[1:]], user=user, capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")


def _url(socket_dir: Path, port: int) -> str:
    return f"postgresql://postgres@/postgres?host={quote(str(socket_dir), safe='')}&port={port}"


@contextmanager
def _server(user: str | None, data: Path, socket_dir: Path, port: int) -> Iterator[str]:
    """``postgres`` on ``data``, listening on ``socket_dir`` only; stopped when the block ends."""
    _start(user, data, socket_dir, port)
    try:
        yield _url(socket_dir, port)
    finally:
        _stop(user, data)


def _start(user: str | None, data: Path, socket_dir: Path, port: int) -> None:
    log = data.parent / f"{data.name}.log"
    try:
        _run(user, "pg_ctl", "-D", str(data), "-w", "-t", "60", "-l", str(log), "-o",
             f"-c listen_addresses='' -k {socket_dir} -p {port}", "start")
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{log.read_text() if log.exists() else ''}") from None


def _stop(user: str | None, data: Path) -> None:
    try:
        _run(user, "pg_ctl", "-D", str(data), "-w", "-t", "30", "-m", "immediate", "stop")
    except (RuntimeError, subprocess.TimeoutExpired):
        pid_file = data / "postmaster.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


def _folder(stack: ExitStack, user: str | None, prefix: str) -> Path:
    """A folder under /tmp (short: socket paths are limited) for ``user``'s servers, removed
    when ``stack`` closes."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    stack.callback(shutil.rmtree, folder, True)
    if user is not None:
        shutil.chown(folder, user)
        folder.chmod(0o755)
    return folder


@contextmanager
def streaming_replica() -> Iterator[Replica]:
    """A primary and a hot standby streaming from it, both private to the caller."""
    user = _user()
    with ExitStack() as stack:
        folder = _folder(stack, user, "tlr-")
        primary_data, standby_data = folder / "p", folder / "s"
        primary_socket, standby_socket = folder / "ps", folder / "ss"
        for socket_dir in (primary_socket, standby_socket):
            socket_dir.mkdir()
            if user is not None:
                shutil.chown(socket_dir, user)
        _run(user, "initdb", "-D", str(primary_data), "--auth=trust", "--encoding=utf8", "-U", "postgres")
        with open(primary_data / "postgresql.conf", "a") as conf:
            conf.write("\nwal_level = replica\nmax_wal_senders = 4\nfsync = off\n"
                       "full_page_writes = off\n")
        primary = stack.enter_context(_server(user, primary_data, primary_socket, 5433))
        _run(user, "pg_basebackup", "-D", str(standby_data), "-R", "-X", "stream", "-c", "fast",
             "-h", str(primary_socket), "-p", "5433", "-U", "postgres")
        with open(standby_data / "postgresql.conf", "a") as conf:
            conf.write("\nhot_standby = on\nhot_standby_feedback = on\n")
        standby = stack.enter_context(_server(user, standby_data, standby_socket, 5434))
        replica = Replica(primary, standby)
        with psycopg.connect(standby, autocommit=True) as s:
            assert s.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        replica.replayed()
        yield replica


@dataclass
class PrivateServer:
    """One server of the caller's own (database ``postgres``, user ``postgres``) that it may stop
    (``pg_ctl stop -m immediate``: as a crash or a cut-off machine) and start again."""

    url: str
    user: str | None
    data: Path
    socket_dir: Path
    port: int

    def stop(self) -> None:
        _stop(self.user, self.data)

    def start(self) -> None:
        _start(self.user, self.data, self.socket_dir, self.port)


@contextmanager
def private_server(port: int = 5435) -> Iterator[PrivateServer]:
    """A server private to the caller, stopped and removed when the block ends."""
    user = _user()
    with ExitStack() as stack:
        folder = _folder(stack, user, "tls-")
        data, socket_dir = folder / "d", folder / "s"
        socket_dir.mkdir()
        if user is not None:
            shutil.chown(socket_dir, user)
        _run(user, "initdb", "-D", str(data), "--auth=trust", "--encoding=utf8", "-U", "postgres")
        with open(data / "postgresql.conf", "a") as conf:
            conf.write("\nfsync = off\nfull_page_writes = off\n")
        url = stack.enter_context(_server(user, data, socket_dir, port))
        yield PrivateServer(url, user, data, socket_dir, port)
