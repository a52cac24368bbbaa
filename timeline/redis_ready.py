"""Waiting until a Redis server is ready for the stream's commands.

A Redis that has just started, the embedded one included, first loads its append-only file; while
it does, it answers ``PING`` and ``INFO`` but refuses every data command with ``LOADING``
(``BusyLoadingError``). One that is restarting does not accept connections at all for a while.
So PING is not readiness: :func:`wait_until_ready` asks ``INFO persistence`` until ``loading`` is
``0``, retrying refused connections too, for at most a bounded time, and says what it waits for
in the log. When the time is up it raises :class:`RedisNotReady`, whose one-line message names
the Redis URL and what it was still waiting for.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["RedisNotReady", "redacted", "wait_until_ready"]

log = logging.getLogger("timeline.redis")

REPORT_EVERY = 5.0  # seconds between two "still waiting" lines in the log


class RedisNotReady(RuntimeError):
    """Redis did not become ready in time (or cannot: say the password is wrong)."""


def redacted(url: str) -> str:
    """The URL without its password, fit for logs and error messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port is not None else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "(an unparsable Redis URL)"


def _not_ready(client: redis.Redis) -> str | None:
    """None when Redis is ready; otherwise what it is still doing (one line)."""
    try:
        info = client.info("persistence")
    except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
        raise RedisNotReady(f"cannot use it: {exc}") from None
    except redis.BusyLoadingError:
        return "loading its dataset into memory"
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        return f"not accepting connections ({' '.join(str(exc).split()) or type(exc).__name__})"
    except redis.ResponseError as exc:
        raise RedisNotReady(f"it refused INFO: {exc}") from None
    if int(info.get("loading", 0) or 0):
        percent = info.get("loading_loaded_perc")
        return "loading its dataset into memory" + (f" ({percent}% done)" if percent is not None else "")
    return None


def wait_until_ready(url: str, timeout: float, *, clock=time.monotonic, sleep=time.sleep) -> float:
    """Return once Redis at ``url`` accepts connections and has loaded its dataset.

    Retries for at most ``timeout`` seconds; returns the seconds spent waiting. Raises
    :class:`RedisNotReady` with a one-line message (URL, time waited, what it waited for) when
    Redis is not ready by then, or cannot be used at all (wrong password).
    """
    shown = redacted(url)
    client = redis.Redis.from_url(
        url, socket_connect_timeout=2.0, socket_timeout=2.0, retry=Retry(NoBackoff(), 0)
    )
    started = clock()
    reported_what: str | None = None
    reported_at = started
    delay = 0.05
    try:
        while True:
            try:
                what = _not_ready(client)
            except RedisNotReady as exc:
                raise RedisNotReady(f"Redis at {shown}: {exc}") from None
            now = clock()
            waited = now - started
            if what is None:
                if reported_what is not None:
                    log.warning("Redis at %s is ready after waiting %.1f s", shown, waited)
                return waited
            kind = what.split(" (")[0]
            if reported_what is None or kind != reported_what.split(" (")[0] or now - reported_at >= REPORT_EVERY:
                log.warning(
                    "waiting for Redis at %s: %s (%.1f s of at most %.0f s, setting TIMELINE_REDIS_READY_SECONDS)",
                    shown, what, waited, timeout,
                )  # fmt: skip
                reported_what, reported_at = what, now
            if waited >= timeout:
                raise RedisNotReady(
                    f"Redis at {shown} was not ready within {timeout:g} s"
                    f" (setting TIMELINE_REDIS_READY_SECONDS): still {what}"
                )
            sleep(min(delay, max(0.0, timeout - waited)))
            delay = min(delay * 2, 0.5)
    finally:
        client.close()
