"""The HTTP server's edge: uvicorn's httptools protocol with limits on what a client may send.

uvicorn bounds neither the request head nor the time a client takes to send it when it parses
with httptools (its ``h11_max_incomplete_event_size`` applies to h11 only), and httptools keeps
a header's value whole in memory until it ends: a 100 MB header was taken in, 9.5 s of CPU and
90 MB of memory for one request. ``edge_protocol`` gives uvicorn a protocol that

- counts the bytes of each request head (request line and headers) *before* the parser sees
  them, and answers ``431`` once they pass ``max_head_bytes``: no more than that (and one read
  of the socket) is ever buffered for a head;
- answers ``414`` to a request line whose target passes ``max_url_bytes`` and ``431`` to more
  than ``max_headers`` header fields;
- closes a connection whose request head is not complete ``header_timeout`` seconds after the
  server began to wait for it (the connection opened or the previous answer was sent): ``408``
  when part of a head came, nothing when none did (a slow or idle client); and one whose body
  is not complete ``body_timeout`` seconds after its head.

Everything else (keep-alive, pipelining, flow control) is uvicorn's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("timeline.edge")


@dataclass(frozen=True, slots=True)
class Limits:
    max_head_bytes: int = 32 * 1024
    max_url_bytes: int = 8 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the answer is in ``refused``."""


class EdgeProtocol(HttpToolsProtocol):
    limits = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # the next bytes belong to a request head
        self._head_bytes = 0
        self._url_bytes = 0
        self._header_count = 0
        self._refused: tuple[int, str] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # --- the limits on a head's size -------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused is not None:
            return
        limit = self.limits.max_head_bytes
        while data and self._in_head:
            room = limit - self._head_bytes
            if room <= 0:
                self._refuse(
                    431, f"request head too large: the request line and headers may take {limit} bytes"
                    " (TIMELINE_HTTP_MAX_HEADER_BYTES)",
                )
                return
            part, data = data[:room], data[room:]
            self._head_bytes += len(part)
            super().data_received(part)
            if self._refused is not None or self.transport.is_closing():
                return
        if data:
            super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url_bytes = self._header_count = 0

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.limits.max_url_bytes:
            self._refused = (
                414, f"request target too long: it may take {self.limits.max_url_bytes} bytes"
                " (TIMELINE_HTTP_MAX_URL_BYTES)",
            )
            raise _Refused
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refused = (
                431, f"too many header fields: a request may have {self.limits.max_headers}"
                " (TIMELINE_HTTP_MAX_HEADERS)",
            )
            raise _Refused
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to any parser error, a callback's ``_Refused`` among them.
        if self._refused is None:
            super().send_400_response(msg)
        else:
            self._refuse(*self._refused)

    def _refuse(self, status: int, message: str) -> None:
        self._refused = (status, message)
        self._answer(status, message)

    def _answer(self, status: int, message: str) -> None:
        """An error answer, then close; nothing is written while another answer is under way."""
        self._cancel_timer()
        if self.transport.is_closing():
            return
        log.info("%s: %s", self.client, message)
        if self.cycle is None or self.cycle.response_complete:
            body = json.dumps({"error": message, "detail": None}).encode()
            head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
            head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
            head += [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode() + b"\r\n",
                b"connection: close\r\n\r\n",
            ]
            self.transport.write(b"".join(head) + body)
        self.transport.close()

    # --- the time a head or a body may take ------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout, self._head_late)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_timer()
        super().on_headers_complete()
        self._arm(self.limits.body_timeout, self._body_late)

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes = True, 0
        super().on_message_complete()
        self._arm(self.limits.header_timeout, self._head_late)  # for the next head, counted from the answer

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._in_head and not self.transport.is_closing():
            self._arm(self.limits.header_timeout, self._head_late)  # the wait for the next head starts

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def _arm(self, seconds: float, callback: Any) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(seconds, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_late(self) -> None:
        self._timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # still answering: the wait starts again when the answer is sent
        if self._head_bytes:
            self._answer(
                408, f"request head not complete within {self.limits.header_timeout:g} s"
                " (TIMELINE_HTTP_HEADER_TIMEOUT_SECONDS)",
            )
        else:
            self.transport.close()  # an idle connection: nothing to answer

    def _body_late(self) -> None:
        self._timer = None
        if self._in_head or self.transport.is_closing():
            return
        log.info("%s: request body not complete within %g s; closing", self.client, self.limits.body_timeout)
        self.transport.close()  # the application, reading the body, sees the client gone


def edge_protocol(limits: Limits) -> type[EdgeProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)``, with these limits."""
    return type("EdgeProtocol", (EdgeProtocol,), {"limits": limits})
