"""Limits at the edge, on a real ``timeline serve`` over raw sockets: request heads too large
(431), too many header fields (431), a request target too long (414), and clients too slow to
send a head (closed after TIMELINE_HTTP_HEADER_TIMEOUT_SECONDS) or idle."""

from __future__ import annotations

import socket
import time

import pytest

pytestmark = pytest.mark.e2e


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return sock


def read_answer(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes (or ``timeout``)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    return data


def status_of(answer: bytes) -> int | None:
    return int(answer[9:12]) if answer.startswith(b"HTTP/1.1 ") else None


def test_a_huge_header_is_refused_without_being_buffered(serve) -> None:
    server = serve()
    pid = server.process.pid
    before = rss_mb(pid)
    sock = connect(server)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
    chunk = b"a" * (1024 * 1024)
    sent = 0
    started = time.monotonic()
    try:
        while sent < 100 * 1024 * 1024:
            sock.sendall(chunk)
            sent += len(chunk)
        sock.sendall(b"\r\n\r\n")
        answer = read_answer(sock)
    except (BrokenPipeError, ConnectionResetError):
        answer = b""  # refused and closed while we were still sending: what we wanted
    finally:
        sock.close()
    seconds = time.monotonic() - started
    grew = rss_mb(pid) - before
    assert answer == b"" or status_of(answer) == 431, answer[:300]
    assert sent < 100 * 1024 * 1024 or status_of(answer) == 431, "the 100 MB header was taken in whole"
    assert grew < 20, f"the server grew by {grew:.0f} MB on a refused header"
    assert seconds < 5, f"{seconds:.1f} s to refuse it"
    with server.client() as http:
        assert http.get("/health").status_code == 200


def test_head_limits_answer_431_and_414(serve) -> None:
    server = serve()
    cases = [
        (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n", 431, b"TIMELINE_HTTP_MAX_HEADER_BYTES"),
        (b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n",
         431, b"TIMELINE_HTTP_MAX_HEADERS"),
        (b"GET /timeline?q=" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, b"TIMELINE_HTTP_MAX_URL_BYTES"),
    ]
    for request, status, names in cases:
        sock = connect(server)
        try:
            sock.sendall(request)
            answer = read_answer(sock)
        finally:
            sock.close()
        assert status_of(answer) == status, answer[:300]
        assert names in answer, answer
    # Within the limits, the same shapes are served.
    sock = connect(server)
    try:
        sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n"
            + b"".join(b"X-%d: 1\r\n" % i for i in range(90)) + b"Connection: close\r\n\r\n"
        )
        assert status_of(read_answer(sock)) == 200
    finally:
        sock.close()


def test_a_slow_or_idle_client_is_closed_after_the_header_timeout(serve) -> None:
    server = serve(TIMELINE_HTTP_HEADER_TIMEOUT_SECONDS="1")
    slow = connect(server)
    idle = connect(server)
    started = time.monotonic()
    closed_after = None
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    answer = b""
    try:
        for byte in head:  # one byte every 20 ms: the head would take 20 s
            try:
                slow.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - started
                break
            slow.settimeout(0.02)
            try:
                data = slow.recv(4096)
            except socket.timeout:
                continue
            except ConnectionResetError:
                data = b""
            answer += data
            if not data or answer.endswith(b"}"):
                closed_after = time.monotonic() - started
                break
            if time.monotonic() - started > 6:
                break
        idle_answer = read_answer(idle, timeout=5)
        idle_closed_after = time.monotonic() - started
    finally:
        slow.close()
        idle.close()
    assert closed_after is not None, "a head sent byte by byte kept its connection for 6 s"
    assert 0.9 < closed_after < 2.5, closed_after
    assert answer == b"" or status_of(answer) == 408, answer
    assert idle_answer == b"" and idle_closed_after < 3, (idle_answer, idle_closed_after)
