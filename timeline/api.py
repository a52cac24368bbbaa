"""The HTTP API of docs/contract.md §4: thin handlers over ``TimelineService`` and its queries."""

import hmac
import re
from dataclasses import dataclass, replace
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from events.erasure import Gone
from events.models import EventRejected, decode_json, repeated_key_error, repeated_keys
from projections.engine import RebuildError
from projections.live import NotLive, StreamFilter
from projections.queries import NotFound, QueryError, ReadTimeout, StoreUnreachable, TimelineQuery, fts_query, render_json

from .deadletters_api import DEAD_LETTER_PARAMS, dead_letters_router
from . import metrics
from .erasure_api import add_erasure_routes
from .exports import FORMATS, Export, entity_name, filename, reads_retracted, writer
from .live import RETRY_AFTER_SECONDS, LiveStreams
from .publisher import Rejected, prepare
from .runtime import Runtime
from .service import READ_ONLY_REFUSAL, ReadOnlyNode
from . import ui
from .schemas import (
    EntityCard, EntityList, EntityType, Health, Kind, ProjectionStatus, Published, RebuildStarted, RelatedList, Role,
    StoredEventAnswer, TimelinePage, Tombstone, event_body_schema,
)

MAX_BODY = 5 * 1024 * 1024
MAX_EVENTS = 1000



class Json(JSONResponse):
    """A JSON answer written straight from plain dicts: no per-field re-encoding on the hot path."""

    def render(self, content: Any) -> bytes:
        return render_json(content).encode("utf-8")  # timeline entries arrive rendered (RawJson)


class ErrorBody(BaseModel):
    """Every 4xx answer: a message naming what is wrong, and details when there are some."""

    error: str
    detail: Any = None


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in ((404, "not found"), (422, "a parameter or body breaks the rules"))
}
READ_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    503: {"model": ErrorBody, "description": "the read took longer than TIMELINE_READ_TIMEOUT_SECONDS: stopped;"
          " or (PostgreSQL) the store's server cannot be reached: retry after Retry-After"},
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    401: {"model": ErrorBody, "description": "missing or wrong bearer token"},
    413: {"model": ErrorBody, "description": "body over 5 MiB"},
}
EVENT_SCHEMA, EVENT_DEFS = event_body_schema(MAX_EVENTS)
EVENT_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": EVENT_SCHEMA}}}}


def ok(model: type[BaseModel], description: str, status: int = 200) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": model, "description": description}}


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        self.status, self.error, self.detail = status, error, detail


def _error(status: int, error: str, detail: Any = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


def only(*names: str) -> Callable[[Request], Awaitable[None]]:
    """Refuse query parameters a route does not know, rather than silently ignore them."""
    allowed = set(names)

    async def check(request: Request) -> None:
        unknown = sorted(set(request.query_params) - allowed)
        if unknown:
            raise ApiError(422, f"unknown query parameter: {', '.join(unknown)}", {"allowed": sorted(allowed)})

    return check


_DATE = (
    r"[0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:?[0-9]{2}))?)?)?"
)
PARTIAL_DATE = Query(pattern=f"^{_DATE}$", description="2025, 2025-05, 2025-05-24 or an instant with an offset")
AS_OF = Query(
    pattern=f"^{_DATE}$",
    description="the store as it stood at an instant (offset required, fractional seconds allowed),"
    " or at the end of a year, month or day (UTC): 2026-12-05 is the end of that day",
)

STREAM_PARAMS = ("kind", "include_retracted", "after")
TIMELINE_PARAMS = (
    "since", "until", "kind", "q", "limit", "cursor", "order", "as_of", "include_retracted", "format",
)
PAGE_LIMIT = 500  # the most entries a JSON page holds; an export's ``limit`` may be any
ExportFormat = Literal[FORMATS]  # type: ignore[valid-type]
TIMELINEJS_SCHEMA = {
    "type": "object", "required": ["events"], "description": "format=timelinejs: TimelineJS JSON (docs/exports.md)",
    "properties": {"title": {"type": "object"}, "events": {"type": "array", "items": {"type": "object"}}},
}
EXPORT_MEDIA = {
    "application/x-ndjson": {"schema": {"type": "string"}},
    "text/csv": {"schema": {"type": "string"}},
    "application/atom+xml": {"schema": {"type": "string"}},
}


@dataclass(frozen=True)
class TimelineRequest:
    """A timeline request: a page (``format`` None) or an export (docs/exports.md)."""

    query: TimelineQuery
    format: str | None
    limit: int | None  # as given (None: a page of 50, or the whole timeline for an export)


class ExportFailed(RuntimeError):
    """An export's read failed after its answer began: the connection is dropped, not ended."""
STREAM_ANSWER = {
    200: {
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
        "description": "server-sent events: `entry`, `update`, `remove`, each with the store position as its id"
        " and the entry as the timeline page shows it (docs/live.md)",
    },
    **READ_ERRORS,
    503: {
        "model": ErrorBody,
        "description": "TIMELINE_STREAM_MAX_CLIENTS streams are open, or the change log is being rebuilt"
        " (Retry-After); or the read took too long",
    },
}


def _position(name: str, value: str | None) -> int | None:
    """A store position given to resume a stream after (None: not given)."""
    if value is None:
        return None
    if not re.fullmatch(r"[0-9]{1,18}", value.strip()):
        raise ApiError(422, f"{name}: a store position is a whole number from 0, not {value[:40]!r}")
    return int(value)


def create_app(runtime: Runtime, *, manage: bool = True) -> FastAPI:
    """The FastAPI app. With ``manage``, its lifespan starts and stops the runtime."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage:
            await runtime.start()
        try:
            yield
        finally:
            if manage:
                await runtime.stop()

    # Swagger UI and ReDoc from files shipped in the package, not a CDN: /docs works offline.
    app = FastAPIOffline(
        title="News timeline",
        version="0.1.0",
        summary="Event-sourced news timelines: publish events, read per-entity timelines.",
        lifespan=lifespan,
    )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.error, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"field": ".".join(str(p) for p in e["loc"] if p not in ("query", "path", "body")), "message": e["msg"]}
            for e in exc.errors()
        ]
        fields = ", ".join(d["field"] for d in detail)
        return _error(422, f"invalid parameter: {fields}", detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(QueryError)
    async def _query(request: Request, exc: QueryError) -> JSONResponse:
        return _error(422, str(exc), exc.detail)

    @app.exception_handler(ReadTimeout)
    async def _read_timeout(request: Request, exc: ReadTimeout) -> JSONResponse:
        limit = runtime.settings.read_timeout_seconds
        return JSONResponse(
            {
                "error": f"{exc}: reads are limited to {limit:g} s (TIMELINE_READ_TIMEOUT_SECONDS)",
                "detail": {"limit_seconds": limit},
            },
            status_code=503,
        )

    @app.exception_handler(StoreUnreachable)
    async def _unreachable(request: Request, exc: StoreUnreachable) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc), "detail": None}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )

    @app.exception_handler(ReadOnlyNode)
    async def _read_only(request: Request, exc: ReadOnlyNode) -> JSONResponse:
        return _error(403, str(exc), {"node": "read-only"})

    @app.exception_handler(Gone)
    async def _gone(request: Request, exc: Gone) -> JSONResponse:
        return JSONResponse({"error": str(exc), **exc.tombstone}, status_code=410)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return _error(404, str(exc.args[0]) if exc.args else "not found")

    async def require_token(request: Request) -> None:
        token = runtime.settings.token
        if token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if not (scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())):
            raise ApiError(401, "a valid 'Authorization: Bearer <token>' header is required to write or to read dead letters")

    def writer_only(what: str) -> Callable[[], Awaitable[None]]:
        """A dependency that refuses a write on a read-only node (403, naming it), before anything else."""
        async def check() -> None:
            if runtime.read_only:
                raise ReadOnlyNode(READ_ONLY_REFUSAL.format(what=what))
        return check

    metrics.install(  # GET /metrics, and each request timed (timeline.metrics)
        app, runtime, [Depends(only())] + ([Depends(require_token)] if runtime.settings.metrics_require_token else [])
    )
    if runtime.tracing is not None:  # TIMELINE_OTLP_ENDPOINT (timeline.tracing)
        runtime.tracing.instrument(app)

    queries = runtime.service.queries
    read = runtime.read  # reads run on the reader threads, never on this loop (timeline.readers)
    add_erasure_routes(app, runtime, require_token, only, ApiError, WRITE_ERRORS, writer_only("erase events"))

    async def _without_erased(valid: list[Any], rejected: list[Any]) -> tuple[list[Any], list[Any]]:
        """An erased id is refused at once (it would be dead-lettered: docs/erasure.md)."""
        erased = await read(lambda: queries.store.erased_ids([event_id for _, event_id, _ in valid]))
        if not erased:
            return valid, rejected
        refusals = [Rejected(index, "id_conflict", f"id: {event_id!r} was erased; an erased id is never stored again")
                    for index, event_id, _ in valid if event_id in erased]
        kept = [item for item in valid if item[1] not in erased]
        return kept, sorted([*rejected, *refusals], key=lambda r: r.index)

    # --- writing -------------------------------------------------------------------------

    @app.post(
        "/events",
        status_code=202,
        dependencies=[Depends(require_token), Depends(only("wait"))],
        responses={
            **ok(Published, "validated; the valid events are published (with ?wait=true: some not yet settled)", 202),
            **ok(Published, "stored and projected, or dead-lettered (with ?wait=true)", 201),
            **WRITE_ERRORS,
            503: {"model": ErrorBody, "description": "Redis does not take the events (down, out of memory, read-only):"
                  " none is published for sure; send them again after Retry-After"},
        },
        openapi_extra=EVENT_BODY,
    )
    async def post_events(request: Request, wait: bool = False) -> JSONResponse:
        """One event or an array of up to 1,000; valid ones are published to the stream."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BODY:
            raise ApiError(413, f"body: over the limit of {MAX_BODY} bytes (5 MiB)")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise ApiError(413, f"body: over the limit of {MAX_BODY} bytes (5 MiB)")
        try:
            payload = decode_json(bytes(body))
        except EventRejected as exc:
            raise ApiError(422, exc.error.replace("event:", "body:", 1)) from None
        events = payload if isinstance(payload, list) else [payload]
        if len(events) > MAX_EVENTS:
            raise ApiError(422, f"body: {len(events)} events is over the limit of {MAX_EVENTS} per request")
        refused: dict[int, EventRejected] = {}  # events whose text names a key twice (lost once decoded)
        for path, key in repeated_keys(bytes(body), payload):
            index, inner = (path[0], path[1:]) if isinstance(payload, list) else (0, path)
            refused.setdefault(int(index), EventRejected("schema", repeated_key_error(inner, key)))
        valid, rejected = prepare(events, refused=refused)
        valid, rejected = await _without_erased(valid, rejected)
        try:
            entries = await runtime.publish([data for _, _, data in valid])
        except RedisError as exc:  # down past the retries, out of memory (maxmemory), MISCONF, READONLY…
            return JSONResponse(
                {
                    "error": f"the stream cannot take events now ({type(exc).__name__}: {exc}): send them"
                    " again later (an event sent twice is stored once)",
                    "detail": {"accepted": [], "rejected": [r.as_dict() for r in rejected]},
                },
                status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        accepted = [event_id for _, event_id, _ in valid]
        rejected_out = [r.as_dict() for r in rejected]
        if not wait:
            return JSONResponse({"accepted": accepted, "rejected": rejected_out}, status_code=202)
        outcomes = await runtime.wait_for(
            [(event_id, entry_id, data) for (_, event_id, data), entry_id in zip(valid, entries)]
        )
        done_accepted = []
        pending = []
        for (index, event_id, _), outcome in zip(valid, outcomes):
            if outcome is None:
                pending.append(event_id)
            elif outcome[0] == "dead":
                rejected_out.append({"index": index, "reason": outcome[1], "error": outcome[2]})
            else:
                done_accepted.append(event_id)
        rejected_out.sort(key=lambda r: r["index"])
        if pending:  # not settled in time: answered as accepted, not yet confirmed
            return JSONResponse(
                {"accepted": done_accepted + pending, "rejected": rejected_out, "pending": pending}, status_code=202
            )
        return JSONResponse({"accepted": done_accepted, "rejected": rejected_out}, status_code=201)

    @app.post(
        "/projections/{name}/rebuild",
        status_code=202,
        dependencies=[Depends(writer_only("rebuild projections")), Depends(require_token), Depends(only())],
        responses={
            **ok(RebuildStarted, "the rebuild has started", 202), **WRITE_ERRORS,
            403: {"model": ErrorBody, "description": "a read-only node (timeline serve --read-only): rebuilds run on the node that writes"},
            409: {"model": ErrorBody, "description": "already being rebuilt"},
        },
    )
    async def rebuild(name: str) -> JSONResponse:
        """Rebuild a projection beside the live one; reads use the old tables until the swap."""
        if name not in runtime.service.projection_names:
            raise ApiError(404, f"no projection {name!r}", {"projections": sorted(runtime.service.projection_names)})
        try:
            await runtime.rebuild([name])
        except RebuildError as exc:
            raise ApiError(409, str(exc)) from None
        return JSONResponse({"name": name, "state": "rebuilding"}, status_code=202)

    # --- reading -------------------------------------------------------------------------

    @app.get(
        "/events/{event_id}", dependencies=[Depends(only("as_of"))],
        responses={
            **ok(StoredEventAnswer, "the event as it stands, with its history"), **READ_ERRORS,
            **ok(Tombstone, "erased: what is left of it (docs/erasure.md)", 410),
        },
    )
    async def get_event(event_id: str, as_of: Annotated[str | None, AS_OF] = None) -> Response:
        """The event as it now stands (corrections applied), with its history."""
        return Json(await read(queries.event, event_id, as_of))

    @app.get(
        "/entities", dependencies=[Depends(only("q", "type", "limit", "cursor"))],
        responses={**ok(EntityList, "a page of the entities, most events first"), **READ_ERRORS},
    )
    async def list_entities(
        q: Annotated[str | None, Query(max_length=200)] = None,
        type: EntityType | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(max_length=1000)] = None,
    ) -> Response:
        """The directory, most events first; ``next_cursor`` goes on to the next page."""
        return Json(await read(queries.directory, q=q, type=type, limit=limit, cursor=cursor))

    @app.get(
        "/entities/{entity_id}", dependencies=[Depends(only("as_of"))],
        responses={**ok(EntityCard, "the entity (its canonical entity for an alias)"), **READ_ERRORS},
    )
    async def get_entity(entity_id: str, as_of: Annotated[str | None, AS_OF] = None) -> Response:
        """One entity (an alias answers with its canonical entity); with ``as_of``, as it stood then."""
        return Json(await read(queries.entity, entity_id, as_of))

    @app.get(
        "/entities/{entity_id}/related", dependencies=[Depends(only("limit", "cursor"))],
        responses={**ok(RelatedList, "entities sharing events with this one, most shared first"), **READ_ERRORS},
    )
    async def related(
        entity_id: str,
        limit: Annotated[int, Query(ge=1, le=500)] = 20,
        cursor: Annotated[str | None, Query(max_length=1000)] = None,
    ) -> Response:
        """The entities that share events with this one, most shared first; ``next_cursor`` goes on."""
        return Json(await read(queries.related, entity_id, limit, cursor))

    async def timeline_query(
        since: Annotated[str | None, PARTIAL_DATE] = None,
        until: Annotated[str | None, PARTIAL_DATE] = None,
        kind: Annotated[list[Kind] | None, Query()] = None,
        q: Annotated[str | None, Query(max_length=500)] = None,
        limit: Annotated[
            int | None,
            Query(ge=1, le=2**62, description="entries in a page: 1 to 500 (default 50); with format, any (default all)"),
        ] = None,
        cursor: Annotated[str | None, Query(max_length=1000)] = None,
        order: Annotated[
            Literal["asc", "desc", "relevance"],
            Query(description="asc (default) or desc by time; relevance ranks full-text matches (needs q)"),
        ] = "asc",
        as_of: Annotated[str | None, AS_OF] = None,
        include_retracted: bool = False,
        format: Annotated[
            ExportFormat | None,
            Query(description="export the whole timeline (or limit entries), streamed: docs/exports.md"),
        ] = None,
    ) -> TimelineRequest:
        if q:
            fts_query(q)  # a 422 naming q here, before the read takes a reader (e.g. too many words)
        if format is None and limit is not None and limit > PAGE_LIMIT:
            raise QueryError("limit", f"a page holds at most {PAGE_LIMIT} entries (an export with format, any)")
        query = TimelineQuery(
            since=since, until=until, kinds=tuple(kind or ()), q=q, limit=limit or 50, cursor=cursor,
            order=order, as_of=as_of, include_retracted=include_retracted,
        )
        return TimelineRequest(query, format, limit)

    async def export(entity_id: str | None, asked: TimelineRequest, request: Request) -> StreamingResponse:
        """The whole timeline (or ``limit`` entries) in a format, read a page at a time on the
        reader threads (each page within the read time limit) and written as it is read. The
        first page is read before answering: a bad parameter or an unknown entity is a 4xx."""
        fmt = asked.format or ""
        query = replace(asked.query, include_retracted=reads_retracted(fmt, asked.query.include_retracted))
        plan = Export(entity_id, query, asked.limit)

        async def page(q: TimelineQuery) -> dict[str, Any]:
            return await read(queries.timeline, entity_id, q, render=True, updated=True, keep_cards=False)

        first = await page(plan.first())
        out = writer(fmt, entity_id, as_of=query.as_of, base_url=str(request.base_url), link=str(request.url),
                     name=entity_name(first))

        async def body() -> AsyncIterator[str]:
            yield out.head()
            current, sent = first, 0
            while True:
                current = plan.take(current, sent)
                yield out.page(current)
                sent += len(current["entries"])
                following = plan.next(current, sent)
                if following is None:
                    break
                try:
                    current = await page(following)
                except Exception as exc:  # the answer has begun: say so in it, then drop the connection
                    yield out.failed(str(exc))
                    raise ExportFailed(f"export of {request.url.path} failed after {sent} entries: {exc}") from exc
            yield out.tail()

        return StreamingResponse(body(), media_type=out.media_type, headers={
            "content-disposition": f'attachment; filename="{filename(entity_id, fmt, out.extension)}"',
        })

    def timeline_answers(what: str) -> dict[int | str, dict[str, Any]]:
        return {
            200: {"model": TimelinePage, "description": f"{what}; with format, the export", "content": EXPORT_MEDIA},
            **READ_ERRORS,
        }

    @app.get(
        "/entities/{entity_id}/timeline", dependencies=[Depends(only(*TIMELINE_PARAMS, "role"))],
        responses=timeline_answers("a page of the entity's timeline"),
    )
    async def entity_timeline(
        entity_id: str,
        request: Request,
        asked: Annotated[TimelineRequest, Depends(timeline_query)],
        role: Role | None = None,
    ) -> Response:
        """Everything that happened to an entity (or its aliases), in order; with ``format``, exported."""
        asked = replace(asked, query=replace(asked.query, role=role))
        if asked.format is not None:
            return await export(entity_id, asked, request)
        return Json(await read(queries.timeline, entity_id, asked.query, render=True))

    @app.get(
        "/timeline", dependencies=[Depends(only(*TIMELINE_PARAMS))],
        responses=timeline_answers("a page of the timeline of all entities"),
    )
    async def global_timeline(request: Request, asked: Annotated[TimelineRequest, Depends(timeline_query)]) -> Response:
        if asked.format is not None:
            return await export(None, asked, request)
        return Json(await read(queries.timeline, None, asked.query, render=True))

    live = LiveStreams(runtime)

    @app.exception_handler(NotLive)
    async def _not_live(request: Request, exc: NotLive) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc), "detail": None}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )

    async def stream(request: Request, entity_id: str | None, after: str | None, filters: StreamFilter) -> Response:
        if not live.reserve():
            limit = runtime.settings.stream_max_clients
            return JSONResponse(
                {
                    "error": f"{limit} live streams are open, the most this server keeps"
                    " (TIMELINE_STREAM_MAX_CLIENTS): try again later",
                    "detail": {"limit": limit},
                },
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        try:
            header = request.headers.get("last-event-id")
            name, given = ("Last-Event-ID", header) if header is not None else ("after", after)
            resume = _position(name, given)
            position, head = await live.opening(entity_id)
            if resume is not None and resume > head:
                raise ApiError(422, f"{name}: position {resume} is beyond the store's head ({head})", {"head": head})
        except BaseException:
            live.release()
            raise
        start = position if resume is None else resume
        return live.response(entity_id, start, filters, announce=resume is None)

    @app.get(
        "/entities/{entity_id}/timeline/stream", dependencies=[Depends(only(*STREAM_PARAMS, "role"))],
        response_class=Response, responses=STREAM_ANSWER,
    )
    async def entity_stream(
        request: Request,
        entity_id: str,
        kind: Annotated[list[Kind] | None, Query()] = None,
        role: Role | None = None,
        include_retracted: bool = False,
        after: Annotated[str | None, Query(max_length=30, description="resume after this position (as Last-Event-ID)")] = None,
    ) -> Response:
        """The entity's timeline as it changes: server-sent events (docs/live.md)."""
        filters = StreamFilter(tuple(kind or ()), role, include_retracted)
        return await stream(request, entity_id, after, filters)

    @app.get(
        "/timeline/stream", dependencies=[Depends(only(*STREAM_PARAMS))],
        response_class=Response, responses=STREAM_ANSWER,
    )
    async def global_stream(
        request: Request,
        kind: Annotated[list[Kind] | None, Query()] = None,
        include_retracted: bool = False,
        after: Annotated[str | None, Query(max_length=30, description="resume after this position (as Last-Event-ID)")] = None,
    ) -> Response:
        """The timeline of all entities as it changes: server-sent events (docs/live.md)."""
        return await stream(request, None, after, StreamFilter(tuple(kind or ()), None, include_retracted))

    @app.get(
        "/projections", dependencies=[Depends(only())],
        responses={200: {"model": list[ProjectionStatus], "description": "one object per projection"}, **READ_ERRORS},
    )
    async def projections() -> Response:
        failing = runtime.service.failures()  # this process's projector's (a writer's)
        return Json([
            {**row, "failing": failing[row["name"]]} if row["name"] in failing else row
            for row in (status.as_json() for status in await read(queries.projections))
        ])

    @app.get(
        "/health",
        dependencies=[Depends(only())],
        responses={
            **ok(Health, "every part works"), **ERRORS,
            503: {"model": Health, "description": "a part is failing: named in `failing` and `error`"},
        },
    )
    async def health() -> JSONResponse:
        report = await runtime.health()
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    # Dead letters hold raw input: the token is needed to read them too.
    app.include_router(
        dead_letters_router(runtime), dependencies=[Depends(require_token), Depends(only(*DEAD_LETTER_PARAMS))],
        responses={
            **ERRORS, 401: WRITE_ERRORS[401], 503: {"model": ErrorBody, "description": "Redis cannot be read"},
        },
    )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title, version=app.version, summary=app.summary, description=app.description,
                routes=app.routes,
            )
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in EVENT_DEFS.items():
                schemas.setdefault(name, definition)
            for path in ("/entities/{entity_id}/timeline", "/timeline"):  # a page, or format=timelinejs
                answer = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
                answer["schema"] = {"anyOf": [answer["schema"], TIMELINEJS_SCHEMA]}
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    ui.install(app, runtime)  # the web page: / and /ui/ (docs/ui.md)
    app.add_middleware(HeadAsGet)  # outermost: the routes and the metrics see a GET
    return app


class HeadAsGet:
    """ASGI middleware: ``HEAD`` is answered as ``GET`` is, without the body (RFC 9110 9.3.2: a
    general-purpose server supports HEAD on what it serves with GET; uptime checks and caches
    send it). FastAPI routes take only the methods they name, so HEAD was a 405 on every GET of
    the API. The app sees a GET in a copy of the scope; uvicorn's own scope still says HEAD, and
    it sends the headers (Content-Length included) but no body. A live stream never ends: HEAD
    on one stays a 405 rather than holding a connection open for a body nobody reads."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD" and not scope["path"].endswith("/stream"):
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send)
