"""``GET /dead-letters``: the dead-letter stream a page at a time (docs/dead-letters.md).

Dead letters hold raw input: with ``TIMELINE_API_TOKEN`` set, reading them needs the token
(``timeline.api`` includes this router behind its token check). The page is read on a worker
thread with a client of its own, a bounded amount of work per request (``read_page``).
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import redis
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from .deadletters import Page, Reason, parse_cursor, read_page
from .runtime import Runtime

__all__ = ["DEAD_LETTER_PARAMS", "dead_letters_router"]

DEAD_LETTER_PARAMS = ("reason", "limit", "cursor")


class DeadLetterOut(BaseModel):
    id: str = Field(description="the dead letter's id in the dead-letter stream")
    reason: str | None
    error: str | None
    source_id: str | None = Field(description="the id of the stream entry that was refused")
    event: str | None = Field(description="the entry's `event` bytes as text, when they are UTF-8")
    event_base64: str | None = Field(description="the same bytes in base64 when they are not UTF-8 (else null)")


class DeadLetterPage(BaseModel):
    dead_letters: list[DeadLetterOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at the stream's end")


def dead_letters_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/dead-letters",
        responses={200: {"model": DeadLetterPage, "description": "a page of dead letters, oldest first"}},
    )
    async def dead_letters(
        reason: Reason | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[
            str | None,
            Query(
                max_length=41, pattern=r"^[0-9]{1,20}-[0-9]{1,20}$",
                description="the `next_cursor` of the page before (a dead-letter id)",
            ),
        ] = None,
    ) -> JSONResponse:
        """The dead letters, oldest first, of one reason or all; a page may be short (the work a
        request does is bounded) while `next_cursor` says there is more."""
        page = await anyio.to_thread.run_sync(_read, runtime, reason, limit, cursor)
        body: dict[str, Any] = {
            "dead_letters": [letter.as_dict() for letter in page.dead_letters], "next_cursor": page.next_cursor
        }
        return JSONResponse(body)

    return router


def _read(runtime: Runtime, reason: str | None, limit: int, cursor: str | None) -> Page:
    if cursor is not None:
        try:
            parse_cursor(cursor)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
    if runtime.redis_url is None:
        raise HTTPException(503, "the dead-letter stream cannot be read: Redis is not connected yet")
    try:
        with redis.Redis.from_url(runtime.redis_url, socket_connect_timeout=2.0, socket_timeout=10.0) as client:
            return read_page(client, runtime.settings.dead_stream, reason=reason, limit=limit, cursor=cursor)
    except redis.RedisError as exc:
        raise HTTPException(503, f"the dead-letter stream cannot be read: {type(exc).__name__}: {exc}") from None
