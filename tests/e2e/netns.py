"""Network namespaces for the many-node tests: a node that shares no network with the test or
with the other nodes, as on another machine.

A :class:`Namespace` is a Linux network namespace joined to the host by a veth pair on a /30 of
its own: inside it there is a loopback and one interface, ``address``; the host's end is
``gateway``. Nothing of the host's 127.0.0.1 is reachable from inside (no Redis, no PostgreSQL, no
other node's port), so what a node there reaches, it reaches through :meth:`Namespace.forward`: a
TCP forwarder bound to the gateway address that relays each connection to one server of the host
(a TCP port or a Unix socket, as an embedded server may listen on). The test reaches the node at
``address``.

Creating namespaces needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and ``ip`` (iproute2):
:func:`available` says whether this machine allows it; where it does not, the many-node tests
run their nodes on the host's loopback instead and say so.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import psycopg.conninfo

SUBNET = ipaddress.ip_network("10.231.0.0/16")  # the namespaces' /30s are drawn from this


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)  # noqa: S603,S607


@cache
def available() -> bool:
    """Can this process create network namespaces and veth pairs (root, iproute2)?"""
    if shutil.which("ip") is None or os.geteuid() != 0:
        return False
    try:
        with Namespace() as ns:
            return ns.run("ip", "-o", "addr", "show", "dev", ns.inner).returncode == 0
    except (OSError, subprocess.CalledProcessError):
        return False


def _used_networks() -> set[ipaddress.IPv4Network]:
    out = _ip("-o", "-4", "addr", "show", check=False).stdout
    used = set()
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            used.add(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    return used


@dataclass
class Namespace:
    """One network namespace and its veth pair; a context manager (deleted on exit)."""

    name: str = field(default_factory=lambda: f"tl-{uuid.uuid4().hex[:10]}")
    forwarders: list["Forwarder"] = field(default_factory=list)

    def __post_init__(self) -> None:
        tag = self.name[-10:]
        self.outer = f"th{tag}"[:15]  # interface names: 15 characters at most
        self.inner = f"tn{tag}"[:15]
        self.network: ipaddress.IPv4Network | None = None

    @property
    def gateway(self) -> str:
        assert self.network is not None
        return str(self.network.network_address + 1)

    @property
    def address(self) -> str:
        assert self.network is not None
        return str(self.network.network_address + 2)

    def __enter__(self) -> "Namespace":
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
            _ip("link", "set", self.inner, "netns", self.name)
            used = _used_networks()
            # a /30 no interface of the host uses (parallel test workers draw theirs too)
            seed = int(uuid.uuid4().hex[:8], 16)
            for i in range(16384):
                index = (seed + i) % 16384
                candidate = ipaddress.ip_network((int(SUBNET.network_address) + 4 * index, 30))
                if not any(candidate.overlaps(u) for u in used):
                    self.network = candidate
                    break
            assert self.network is not None, "no free /30 in 10.231.0.0/16"
            _ip("addr", "add", f"{self.gateway}/30", "dev", self.outer)
            _ip("link", "set", self.outer, "up")
            _ip("-n", self.name, "addr", "add", f"{self.address}/30", "dev", self.inner)
            _ip("-n", self.name, "link", "set", self.inner, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for forwarder in self.forwarders:
            forwarder.close()
        self.forwarders.clear()
        _ip("link", "del", self.outer, check=False)  # its peer goes with it
        _ip("netns", "del", self.name, check=False)

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: the pid is argv's)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(list(argv)), capture_output=True, text=True, check=False)  # noqa: S603

    def cut(self) -> None:
        """Cut the namespace off from the host's servers: every connection through its
        forwarders reset, new ones reset at once (a network failure that both ends see), until
        :meth:`restore`. The test still reaches the node at ``address``."""
        for forwarder in self.forwarders:
            forwarder.cut()

    def restore(self) -> None:
        for forwarder in self.forwarders:
            forwarder.restore()

    # --- reaching the host's servers --------------------------------------------------------

    def forward(self, target: tuple[str, int] | str) -> int:
        """A port on ``gateway`` that relays to ``target`` ((host, port), or a Unix socket's path)."""
        forwarder = Forwarder(self.gateway, target)
        self.forwarders.append(forwarder)
        return forwarder.port

    def redis_url(self, url: str) -> str:
        """``url`` as a node inside the namespace reaches it."""
        parts = urlsplit(url)
        if parts.scheme == "unix":
            port = self.forward(parts.path)
            query = dict(parse_qsl(parts.query))
            db = query.pop("db", "0")
            return urlunsplit(("redis", f"{self.gateway}:{port}", f"/{db}", urlencode(query), ""))
        port = self.forward((parts.hostname or "127.0.0.1", parts.port or 6379))
        netloc = f"{self.gateway}:{port}"
        if parts.username or parts.password:
            netloc = f"{parts.username or ''}:{parts.password or ''}@{netloc}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def postgres_url(self, url: str) -> str:
        """A libpq URL or conninfo as a node inside the namespace reaches it."""
        info = psycopg.conninfo.conninfo_to_dict(url)
        host = str(info.get("host") or "/var/run/postgresql")
        port = int(info.get("port") or 5432)
        if host.startswith("/"):  # a Unix socket's folder
            target: tuple[str, int] | str = os.path.join(host, f".s.PGSQL.{port}")
        else:
            target = (host, port)
        info.update(host=self.gateway, port=str(self.forward(target)))
        info.pop("hostaddr", None)
        user = unquote(str(info.pop("user", "")))
        password = unquote(str(info.pop("password", "")))
        dbname = str(info.pop("dbname", ""))
        query = urlencode({k: str(v) for k, v in info.items() if k not in ("host", "port")})
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        return f"postgresql://{auth}{info['host']}:{info['port']}/{dbname}" + (f"?{query}" if query else "")


class Forwarder:
    """Relays each TCP connection accepted on ``(bind, port)`` to ``target``, on a thread of its
    own (an asyncio loop); :meth:`close` stops it and drops every relayed connection."""

    def __init__(self, bind: str, target: tuple[str, int] | str) -> None:
        self.target = target
        self.open = True  # False while cut: every connection reset, new ones reset at once
        self.loop = asyncio.new_event_loop()
        self.connections: set[asyncio.StreamWriter] = set()
        ready = threading.Event()
        self.server: asyncio.base_events.Server | None = None

        async def start() -> None:
            self.server = await asyncio.start_server(self._relay, bind, 0)
            ready.set()

        self.thread = threading.Thread(target=self._run, args=(start,), daemon=True, name=f"forward-{target}")
        self.thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"forwarder to {target} did not start")
        assert self.server is not None
        self.port = int(self.server.sockets[0].getsockname()[1])

    def _run(self, start: object) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(start())  # type: ignore[operator]
        self.loop.run_forever()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        try:
            if isinstance(self.target, str):
                up_reader, up_writer = await asyncio.open_unix_connection(self.target)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        for w in (writer, up_writer):
            self.connections.add(w)
            sock = w.get_extra_info("socket")
            if sock is not None and sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except asyncio.CancelledError:  # the forwarder closing
            pass
        finally:
            self.connections.discard(writer)
            self.connections.discard(up_writer)

    def _call(self, coro: object) -> None:
        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    async def _reset_all(self) -> None:
        for w in list(self.connections):
            w.transport.abort()

    def cut(self) -> None:
        """Reset every relayed connection, and each new one at once, until :meth:`restore`."""
        self.open = False
        self._call(self._reset_all())

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        async def stop() -> None:
            if self.server is not None:
                self.server.close()
            await self._reset_all()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.open = False
        self._call(stop())
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


@contextmanager
def namespaces(count: int) -> Iterator[list[Namespace]]:
    """``count`` namespaces, deleted on exit."""
    made: list[Namespace] = []
    try:
        for _ in range(count):
            made.append(Namespace().__enter__())
        yield made
    finally:
        for ns in made:
            ns.close()
