"""The erasure endpoints (docs/erasure.md): ``POST /events/{id}/erase`` and ``GET /erasures``.

Erasure is never anonymous: with no ``TIMELINE_API_TOKEN`` set, both answer 403; with one, the
bearer token is required (401 without it) and the erasure is recorded as made by the token's
name (``timeline.erasing.token_name``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import anyio
import redis
from fastapi import Depends, FastAPI, Query
from fastapi.responses import JSONResponse

from events.erasure import ErasureIncomplete, ErasureRefused

from .erasing import erase_stored, scrub_redis, token_name
from .runtime import Runtime
from .schemas import ErasureDone, ErasureList, ErasureRequest

Check = Callable[..., Awaitable[None]]


def add_erasure_routes(app: FastAPI, runtime: Runtime, require_token: Check, only: Callable[..., Check],
                       api_error: type[Exception], errors: dict[int | str, dict[str, Any]],
                       writer_only: Check | None = None) -> None:
    async def require_erasure_token() -> None:
        if runtime.settings.token is None:
            raise api_error(403, "erasure needs TIMELINE_API_TOKEN to be set: an erasure is never anonymous")

    guarded = [Depends(require_erasure_token), Depends(require_token)]
    refusals = {
        **errors,
        403: {"description": "no TIMELINE_API_TOKEN is set: the API refuses erasure; or a read-only node"},
        409: {"description": "a correction or retraction whose event is stored (erase the event)"},
        503: {"description": "erased, but a file could not be scrubbed yet: erase again"},
    }

    @app.post(
        "/events/{event_id}/erase",
        dependencies=[*([Depends(writer_only)] if writer_only else []), *guarded, Depends(only())],
        responses={200: {"model": ErasureDone, "description": "erased everywhere"}, **refusals},
    )
    async def erase_event(event_id: str, body: ErasureRequest) -> JSONResponse:
        """Erase an event's content everywhere, with its corrections and retraction (docs/erasure.md)."""
        who = token_name(runtime.settings)
        try:
            erasure, already = await anyio.to_thread.run_sync(erase_stored, runtime.service, event_id, body.reason, who)
        except ErasureRefused as exc:
            raise api_error(exc.status, exc.error) from None
        except ErasureIncomplete as exc:
            raise api_error(503, str(exc)) from None
        scrub = await anyio.to_thread.run_sync(_scrub, runtime, {erasure.event_id, *erasure.erased_with})
        return JSONResponse({**erasure.as_dict(), "already_erased": already, "redis": scrub}, status_code=200)

    @app.get(
        "/erasures", dependencies=[*guarded, Depends(only("after", "limit"))],
        responses={200: {"model": ErasureList, "description": "the erasures, in the order they were made"}, **refusals},
    )
    async def list_erasures(
        after: Annotated[int, Query(ge=0, le=2**62)] = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> JSONResponse:
        """The erasures made, oldest first (``after``: a ``seq`` already seen)."""
        found = await runtime.read(lambda: runtime.service.queries.store.erasures(after, limit))
        return JSONResponse({"erasures": [e.as_dict() for e in found]})


def _scrub(runtime: Runtime, ids: set[str]) -> dict[str, Any]:
    assert runtime.redis_url is not None, "runtime not started"
    client = redis.Redis.from_url(runtime.redis_url)
    try:
        settings = runtime.settings
        return scrub_redis(client, [settings.stream, settings.dead_stream], ids).as_dict()
    finally:
        client.close()
