"""The ``timeline`` command: serve, publish, show, export, rebuild, erase, verify, backup, import, info,
demo (docs/contract.md §5)."""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from .terminal import escape, visible
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from rich.table import Table

from . import stores
from .settings import Settings

app = typer.Typer(
    help="Event-sourced news timelines: publish news events, read per-entity timelines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()
err = Console(stderr=True)


def _settings(*, writes: str | None = None) -> Settings:
    """The settings in force; a command that ``writes`` (says what) refuses TIMELINE_READ_ONLY."""
    try:
        settings = Settings()
    except Exception as exc:  # pydantic's ValidationError names the setting
        err.print(f"[red]invalid settings:[/] {exc}")
        raise typer.Exit(2) from None
    if writes and settings.read_only:
        err.print(
            f"TIMELINE_READ_ONLY is set (a read-only node): this command {writes}; run it where the"
            " writer runs, or unset TIMELINE_READ_ONLY", soft_wrap=True, markup=False, highlight=False,
        )
        raise typer.Exit(2)
    return settings


def _not_the_store(settings: Settings, *paths: Path) -> None:
    """Exit 2 when a file the command would write is part of the store (docs/operations.md)."""
    problem = stores.refuse_owned(settings, *paths)
    if problem is not None:
        err.print(f"[red]error:[/] {escape(problem)}", soft_wrap=True)
        raise typer.Exit(2)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(metavar="HOST", help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="port to listen on (0: a free one)")] = 8000,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log each batch")] = False,
    read_only: Annotated[
        bool,
        typer.Option(
            "--read-only",
            help="serve reads only (as TIMELINE_READ_ONLY=1): the API, pages and live streams from the store and"
            " projections that another `timeline serve` writes; no consumer, projections, trimming or rebuilds",
        ),
    ] = False,
) -> None:
    """Run the HTTP API, the stream consumer and the projections in one process.

    With --read-only, the API alone, beside the process that writes (docs/read-only.md).
    Prints, once it listens, its address, the Redis it uses and the store; and "stopped" at exit."""
    import uvicorn

    from .api import create_app
    from .edge import Limits, edge_protocol
    from .runtime import Runtime

    _logging(verbose)
    _fewer_malloc_arenas()
    settings = _settings()
    if read_only:
        settings = settings.model_copy(update={"read_only": True})
    from .service import ReadOnlyNode

    try:
        with _store_unavailable_exits(settings):
            runtime = Runtime(settings)
    except ReadOnlyNode as exc:  # no store yet, or one not migrated to this version: one line
        err.print(f"[red]cannot serve read-only:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            runtime.stop_reading_soon()  # finish the batch in hand, read no more
            if sig == signal.SIGTERM:  # a requested stop that completes cleanly exits 0
                self._captured_signals.remove(sig)

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.should_exit:  # the app or the bind failed: uvicorn has said why
                return
            bound = [sock.getsockname() for server in self.servers for sock in server.sockets or ()]
            where = ", ".join(_http_address(a[0], a[1]) for a in bound) or _http_address(host, port)
            _say(f"listening on {where}")
            _say(f"redis: {_redis_line(runtime)}")
            _say(f"store: {stores.describe(settings)}" + (" (read-only node)" if settings.read_only else ""))

    with _redis_not_ready_exits():
        try:
            runtime.connect_redis()  # before uvicorn: a Redis that never gets ready is one line, not a traceback
        except ReadOnlyNode as exc:  # read-only, no REDIS_URL and no embedded Redis running
            runtime.service.close()
            err.print(f"[red]cannot serve read-only:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(2) from None
    limits = Limits(
        max_head_bytes=settings.http_max_header_bytes,
        max_url_bytes=settings.http_max_url_bytes,
        max_headers=settings.http_max_headers,
        header_timeout=settings.http_header_timeout_seconds,
        body_timeout=settings.http_body_timeout_seconds,
    )
    config = uvicorn.Config(
        create_app(runtime), host=host, port=port, log_level="info" if verbose else "warning", access_log=verbose,
        http=edge_protocol(limits),  # httptools, with limits on request heads and slow clients
        timeout_keep_alive=settings.http_keep_alive_seconds,
        limit_concurrency=settings.http_max_connections,
    )
    try:
        Server(config).run()
    finally:
        if runtime.embedded is not None:  # uvicorn failed before its lifespan stopped the runtime
            runtime.embedded.stop()
        _say("stopped")


def _say(line: str) -> None:
    """One line on stderr for whoever runs the service (logs are for the rest)."""
    err.print(line, soft_wrap=True, markup=False, highlight=False)


def _http_address(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _without_password(url: str) -> str:
    """A Redis URL fit to print: its password, if any, replaced by ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _redis_line(runtime: Any) -> str:
    url = runtime.redis_url or ""
    embedded = runtime.embedded
    if embedded is None:
        return _without_password(url)
    shared = "" if embedded.owner else ", started by another timeline process"
    port = url.rsplit(":", 1)[-1].split("/", 1)[0]
    return f"{url} (embedded, port {port}, data in {embedded.data_dir.resolve()}{shared})"


@contextlib.contextmanager
def _store_unavailable_exits(settings: Settings) -> Iterator[None]:
    """The store cannot be opened (PostgreSQL not answering, say): one line, exit status 2."""
    try:
        with stores.reachable(settings):
            yield
    except stores.StoreUnavailable as exc:
        err.print(f"[red]{escape(str(exc))}[/]", soft_wrap=True)
        raise typer.Exit(2) from None


def _store_or_exit(settings: Settings, hint: str = "") -> None:
    """Exit 2 with one line when there is no store to read (or its PostgreSQL does not answer)."""
    problem = stores.missing(settings)
    if problem is not None:
        err.print(f"[red]{escape(problem)}[/]{hint}", soft_wrap=True)
        raise typer.Exit(2)


@contextlib.contextmanager
def _redis_not_ready_exits() -> Iterator[None]:
    """Redis not ready in time: its one-line reason on stderr, exit status 1, no traceback."""
    from .redis_ready import RedisNotReady

    try:
        yield
    except RedisNotReady as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from None


@contextlib.contextmanager
def _redis_refusal_exits(url: str, sent: list[int], total: int) -> Iterator[None]:
    """Redis lost past the publisher's retries, or refusing writes (maxmemory, MISCONF, READONLY):
    how far publishing got and that publishing again is safe, on stderr; exit 1, no traceback."""
    import redis

    from .redis_ready import redacted

    try:
        yield
    except redis.RedisError as exc:
        err.print(
            f"[red]error:[/] Redis at {escape(redacted(url))} stopped taking events after {sent[0]:,} of {total:,}"
            f" lines ({type(exc).__name__}: {escape(str(exc))}); publishing the file again is safe: an event"
            " sent twice is stored once",
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


def _fewer_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (as ``MALLOC_ARENA_MAX`` would) unless the environment sets them.

    The server's threads (a reader pool, a thread per projection) would each get an arena of
    their own, up to eight per core, and memory freed in one is not reused by another: in the
    ingest benchmark the peak RSS fell from 315 to 287 MB with two. Elsewhere than glibc: nothing."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _read_lines(source: str) -> list[bytes]:
    if source == "-":
        data = sys.stdin.buffer.read()
    else:
        path = Path(source)
        if not path.is_file():
            err.print(f"[red]no such file:[/] {source}")
            raise typer.Exit(2)
        data = path.read_bytes()
    data = data.removeprefix(codecs.BOM_UTF8)  # the file's byte order mark, not its first event's
    return [line.strip() for line in data.splitlines() if line.strip()]


@app.command()
def publish(
    source: Annotated[str, typer.Argument(metavar="FILE|-", help="JSON Lines of events, or - for standard input")],
    wait: Annotated[
        bool, typer.Option("--wait", help="wait until each published event is stored or dead-lettered")
    ] = False,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="with --wait: seconds to wait before giving up (exit 1)")
    ] = 60.0,
) -> None:
    """Publish JSON Lines of events onto the stream; prints published and rejected counts.

    Published is not stored: --wait waits for the server to store or dead-letter each one."""
    from .embedded_redis import EmbeddedRedis
    from .publisher import Publisher, Settlement
    from .redis_ready import wait_until_ready

    settings = _settings()
    lines = _read_lines(source)
    embedded = None
    url = settings.redis_url
    settlement: Settlement | None = None
    try:
        with _redis_not_ready_exits():
            if url is None:
                embedded = EmbeddedRedis.for_settings(settings)
                url = embedded.start()
            wait_until_ready(url, settings.redis_ready_seconds)
        with Publisher(url, settings.stream) as publisher:
            sent = [0]  # lines judged and (the valid ones) published, for the error below

            def advance(n: int) -> None:
                sent[0] += n
                progress.advance(task, n)

            with _progress() as progress, _redis_refusal_exits(url, sent, len(lines)):
                task = progress.add_task("publishing", total=len(lines))
                report = publisher.publish(lines, progress=advance)
            if embedded is not None and embedded.owner:  # a server for this folder would own it
                nobody = f"no `timeline serve` runs for this folder; its Redis ({settings.redis_dir}) was started for this publish"
            else:
                nobody = publisher.nobody_reading()
            if nobody is None and wait and report.accepted:
                with err.status(f"waiting for {len(report.accepted)} events to be stored or dead-lettered"):
                    settlement = publisher.wait(report.entry_ids, timeout=timeout)
    finally:
        if embedded is not None:
            embedded.stop()
    failed = bool(report.rejected)
    for rejected in report.rejected[:20]:  # (the error may quote the line: not markup)
        err.print(f"line {rejected.index + 1}: [yellow]{rejected.reason}[/] {escape(rejected.error)}")
    if len(report.rejected) > 20:
        err.print(f"… and {len(report.rejected) - 20} more rejected lines")
    summary = f"published {len(report.accepted)}, rejected {len(report.rejected)}"
    if nobody is not None and report.accepted:
        where = "this folder's Redis" if embedded is not None else "the stream"
        err.print(
            f"[yellow]warning: nothing is reading the stream {escape(settings.stream)}:[/] {escape(nobody)}."
            f" The published events wait in {where} until `timeline serve` runs"
            + (" (not waited for)" if wait else ""),
            soft_wrap=True,
        )
        summary += "; nothing is reading them yet"
        failed = failed or wait
    if settlement is not None:
        rejected_lines = {r.index for r in report.rejected}
        line_of = dict(zip(report.entry_ids, (i for i in range(len(lines)) if i not in rejected_lines)))
        dead = sorted(settlement.dead.items(), key=lambda item: line_of[item[0]])
        for entry_id, (reason, error) in dead[:20]:
            err.print(f"line {line_of[entry_id] + 1}: dead-lettered [yellow]{reason}[/] {escape(error)}", soft_wrap=True)
        if len(dead) > 20:
            err.print(f"… and {len(dead) - 20} more dead-lettered lines")
        summary += f"; stored {len(settlement.stored)}, dead-lettered {len(dead)}"
        if settlement.unsettled:
            summary += f", not settled after {timeout:g} s: {len(settlement.unsettled)}"
            err.print(
                f"[red]{len(settlement.unsettled)} published events were neither stored nor dead-lettered within"
                f" {timeout:g} s[/]: is `timeline serve` running and keeping up? (GET /health shows its backlog)"
            )
        failed = failed or bool(dead) or bool(settlement.unsettled)
    console.print(summary, soft_wrap=True, markup=False, highlight=False)
    if failed:
        raise typer.Exit(1)


class TransferSpeedColumn(ProgressColumn):
    """Events per second."""

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} events/s" if speed else "", style="progress.data.speed")


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


def timeline_header(result: dict[str, Any], filters: str = "") -> str:
    """The entity, its aliases and how many entries match (``result["total"]``, when counted;
    else the entity's event count); control characters in the name made visible."""
    entity = result["entity"]
    aliases = f" (also: {', '.join(entity['aliases'])})" if entity["aliases"] else ""
    total = result.get("total")
    matching = f"{total} entries" if total is not None else f"{entity['event_count']} events"
    return visible(f"{entity['name']} [{entity['id']}]{aliases}: {matching}{filters}")


def render_timeline(result: dict[str, Any], title: str | None = None, *, header: bool = True) -> Table:
    """A timeline page as a table, titled with ``timeline_header`` unless given a title or none."""
    entity = result.get("entity")
    entries = result["entries"]
    if title is None and entity is not None and header:
        title = escape(timeline_header(result))
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("when", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    if entity is not None:
        table.add_column("role", no_wrap=True)
    table.add_column("headline")
    table.add_column("status", no_wrap=True)
    for entry in entries:
        when = entry["occurred_at"] + (f" → {entry['ended_at']}" if entry.get("ended_at") else "")
        row = [when, entry["kind"]]
        if entity is not None:
            row.append(entry["role"])
        status = entry["status"]
        row += [escape(entry["headline"]), status if status == "active" else f"[yellow]{status}[/]"]
        table.add_row(*row)
    return table


def the_rest(result: dict[str, Any], *, after_cursor: bool = False) -> str | None:
    """How many entries a page shows of how many match, and how to see the rest (none: all shown)."""
    shown, total, cursor = len(result["entries"]), result.get("total"), result.get("next_cursor")
    if cursor:
        more = f"{total - shown} more" if total is not None and not after_cursor else "more"
        return (
            f"showing {shown} of {total}; {more}: add --all to see every one,"
            f" or --cursor {cursor} for the next page"
        )
    if total is not None and shown < total:  # the last page of several
        return f"showing the last {shown} of {total}"
    return None


@app.command()
def show(
    entity: Annotated[str, typer.Argument(metavar="ENTITY", help="entity id (an alias answers with its entity)")],
    since: Annotated[Optional[str], typer.Option(metavar="DATE", help="from (2025, 2025-05, 2025-05-24, …)")] = None,
    until: Annotated[Optional[str], typer.Option(metavar="DATE", help="until (same forms)")] = None,
    as_of: Annotated[
        Optional[str],
        typer.Option(
            "--as-of", metavar="DATE", help="as the store knew it at an instant, or at the end of a day, month or year"
        ),
    ] = None,
    kind: Annotated[Optional[list[str]], typer.Option(metavar="KIND", help="only this kind (repeatable)")] = None,
    limit: Annotated[int, typer.Option(metavar="N", min=1, max=500, help="entries a page")] = 500,
    cursor: Annotated[
        Optional[str], typer.Option(metavar="CURSOR", help="go on from where a page ended (it prints the cursor)")
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", help="every matching entry, page after page")] = False,
    output_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Print an entity's timeline in the terminal.

    How many entries match, and a page of them (or --all); the rest are a --cursor away."""
    from events.models import KINDS
    from projections.queries import NotFound, QueryError, TimelineQuery

    from .service import open_for_reading

    unknown = [k for k in kind or () if k not in KINDS]
    if unknown:
        err.print(f"[red]kind: {unknown[0]!r} is not a kind[/]; the kinds are {', '.join(KINDS)}")
        raise typer.Exit(2)
    settings = _settings()
    _store_or_exit(settings, ": run `timeline serve` or `timeline demo` first")
    with _store_unavailable_exits(settings):
        service = open_for_reading(settings, _say)
    query = TimelineQuery(
        since=since, until=until, as_of=as_of, kinds=tuple(kind or ()), limit=500 if show_all else limit, cursor=cursor
    )
    try:
        result = service.queries.timeline(entity, query, total=True)
        while show_all and result["next_cursor"]:
            more = service.queries.timeline(entity, replace(query, cursor=result["next_cursor"]))
            result = {**result, "entries": result["entries"] + more["entries"], "next_cursor": more["next_cursor"]}
    except NotFound as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    except QueryError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    finally:
        service.close()
    if output_json:
        console.print_json(json.dumps(result, ensure_ascii=False))
        return
    said = [f"since {since}" if since else "", f"until {until}" if until else "",
            f"kind {', '.join(kind)}" if kind else "", f"as of {as_of}" if as_of else ""]
    filters = " (" + "; ".join(s for s in said if s) + ")" if any(said) else ""
    console.print(timeline_header(result, filters), soft_wrap=True, markup=False, highlight=False)
    console.print(render_timeline(result, header=False))
    rest = the_rest(result, after_cursor=cursor is not None)
    if rest:
        console.print(rest, soft_wrap=True, markup=False, highlight=False)  # the cursor on one line


@app.command()
def export(
    entity: Annotated[
        Optional[str], typer.Argument(metavar="ENTITY", help="entity id (an alias answers with its entity)")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="the timeline of all entities (instead of ENTITY)")] = False,
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help="timelinejs, atom, csv or ndjson")] = "ndjson",
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", metavar="FILE", help="write to FILE (default: standard output)")
    ] = None,
    since: Annotated[Optional[str], typer.Option(metavar="DATE", help="from (2025, 2025-05, 2025-05-24, …)")] = None,
    until: Annotated[Optional[str], typer.Option(metavar="DATE", help="until (same forms)")] = None,
    kind: Annotated[Optional[list[str]], typer.Option(metavar="KIND", help="only this kind (repeatable)")] = None,
    role: Annotated[Optional[str], typer.Option(metavar="ROLE", help="only where ENTITY has this role")] = None,
    q: Annotated[Optional[str], typer.Option("--q", metavar="TEXT", help="full-text search (docs/search.md)")] = None,
    order: Annotated[str, typer.Option(metavar="ORDER", help="asc, desc or relevance (needs --q)")] = "asc",
    as_of: Annotated[
        Optional[str],
        typer.Option(
            "--as-of", metavar="DATE", help="as the store knew it at an instant, or at the end of a day, month or year"
        ),
    ] = None,
    include_retracted: Annotated[
        bool, typer.Option("--include-retracted", help="retracted entries too (csv, ndjson; atom always has them)")
    ] = False,
    limit: Annotated[Optional[int], typer.Option(metavar="N", min=1, help="at most N entries (default: all)")] = None,
) -> None:
    """Export a timeline as TimelineJS JSON, Atom, CSV or NDJSON (docs/exports.md).

    Reads the store directly, page by page (it needs no server, and memory stays that of one
    page whatever the length); with --output the file appears only once complete."""
    import itertools

    from events.models import KINDS, ROLES
    from projections.queries import NotFound, QueryError, TimelineQuery

    from .exports import FORMATS, Export, entity_name, pages, reads_retracted, writer
    from .service import open_for_reading

    problems = [
        (fmt not in FORMATS, f"--format: {fmt!r} is not one of {', '.join(FORMATS)}"),
        ((entity is None) == (not every), "give ENTITY or --all (the timeline of all entities), not both or neither"),
        (any(k not in KINDS for k in kind or ()), f"--kind: the kinds are {', '.join(KINDS)}"),
        (role is not None and role not in ROLES, f"--role: the roles are {', '.join(ROLES)}"),
        (order not in ("asc", "desc", "relevance"), "--order: asc, desc or relevance"),
    ]
    for failed, message in problems:
        if failed:
            err.print(f"[red]{escape(message)}[/]")
            raise typer.Exit(2)
    settings = _settings()
    _store_or_exit(settings, ": run `timeline serve` or `timeline demo` first")
    if output is not None:
        _not_the_store(settings, output, output.with_name(output.name + ".partial"))
    query = TimelineQuery(
        since=since, until=until, kinds=tuple(kind or ()), role=role, q=q, order=order, as_of=as_of,
        include_retracted=reads_retracted(fmt, include_retracted),
    )
    plan = Export(entity, query, limit)
    try:
        out = writer(fmt, entity, as_of=as_of)
    except QueryError as exc:
        err.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from None
    with _store_unavailable_exits(settings):
        service = open_for_reading(settings, _say)
    partial = output.with_name(output.name + ".partial") if output is not None else None
    sink = partial.open("w", encoding="utf-8", newline="") if partial is not None else sys.stdout
    try:
        read = lambda q: service.queries.timeline(entity, q, render=True, updated=True, keep_cards=False)  # noqa: E731
        following = pages(plan, read)
        first = next(following)
        out = writer(fmt, entity, as_of=as_of, name=entity_name(first))
        sink.write(out.head())
        for page in itertools.chain([first], following):
            sink.write(out.page(page))
        sink.write(out.tail())
    except (NotFound, QueryError) as exc:
        _drop(partial, sink)
        err.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(1 if isinstance(exc, NotFound) else 2) from None
    except BrokenPipeError:
        if partial is not None:  # a file's disk went away: a failure like any other
            raise
        _pipe_closed()  # the reader stopped reading (`| head`): end quietly, as `cat` does
    except Exception as exc:  # never a file that looks complete: the marker, then a non-zero exit
        sink.write(out.failed(str(exc)))
        _drop(partial, sink)
        err.print(f"[red]export failed: {escape(str(exc))}[/]")
        raise typer.Exit(1) from None
    finally:
        service.close()
    if partial is not None and output is not None:
        sink.close()
        partial.replace(output)
    else:
        sink.flush()


def _pipe_closed() -> None:
    """Standard output's reader closed the pipe: stop without a message, with the status a
    shell gives a process that SIGPIPE ended (128 + 13). Standard output is pointed at
    /dev/null first, so that the interpreter's own flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    raise typer.Exit(141)


def _drop(partial: Path | None, sink: Any) -> None:
    """Close and remove a partial output file (standard output is left as it is)."""
    if partial is not None:
        sink.close()
        partial.unlink(missing_ok=True)


@app.command()
def rebuild(
    name: Annotated[Optional[str], typer.Argument(metavar="NAME", help="projection name; all when omitted")] = None,
    force: Annotated[bool, typer.Option("--force", help="take over a rebuild that another process is running")] = False,
) -> None:
    """Rebuild projections from the store, beside the live tables, and swap them in."""
    from projections.engine import RebuildError

    from .service import TimelineService

    settings = _settings(writes="rebuilds the projections")
    with _store_unavailable_exits(settings):
        service = TimelineService(settings)
    try:
        names = [name] if name else sorted(service.engine.projections)
        unknown = [n for n in names if n not in service.engine.projections]
        if unknown:
            err.print(f"[red]no projection {unknown[0]!r}[/]; there are: {', '.join(sorted(service.engine.projections))}")
            raise typer.Exit(2)
        started = time.perf_counter()
        with _progress() as progress:
            task = progress.add_task(f"rebuilding {', '.join(names)}", total=max(service.store.head(), 1))

            def report(position: int, head: int) -> None:
                progress.update(task, completed=position, total=max(head, 1))

            try:
                position = service.engine.rebuild(names, report, force=force)
            except RebuildError as exc:
                err.print(f"[red]{exc}[/] (use --force to take it over)")
                raise typer.Exit(1) from None
        elapsed = time.perf_counter() - started
        rate = position / elapsed if elapsed > 0 else 0.0
        console.print(f"rebuilt {', '.join(names)}: {position} events in {elapsed:.2f}s ({rate:,.0f} events/s)")
    finally:
        service.close()


@app.command()
def erase(
    event_id: Annotated[str, typer.Argument(metavar="EVENT_ID", help="the event to erase")],
    reason: Annotated[str, typer.Option("--reason", help="why (kept in the erasure record)")],
) -> None:
    """Erase an event's content everywhere, for good, with its corrections and retraction.

    docs/erasure.md says what it removes and what it cannot reach. Works beside a running service. Its id, position, kind and recording time stay, with the
    erasure's record (who: the OS user; when; why); `timeline verify` still passes. Then the
    stream entries and dead letters carrying its id are deleted and Redis rewrites its files.
    An id already erased is not erased again, but Redis is scrubbed again. Exit 1: refused
    (unknown id, a correction or retraction whose event is stored)."""
    from events.erasure import ErasureIncomplete, ErasureRefused

    from .embedded_redis import EmbeddedRedis
    from .erasing import cli_user, erase_stored, scrub_redis
    from .service import TimelineService

    settings = _settings(writes="erases from the store")
    _store_or_exit(settings)
    with _store_unavailable_exits(settings):
        service = TimelineService(settings)
    try:
        erasure, already = erase_stored(service, event_id, reason, cli_user())
    except ErasureRefused as exc:
        err.print(escape(exc.error), style="red", soft_wrap=True)
        raise typer.Exit(1) from None
    except ErasureIncomplete as exc:
        err.print(escape(str(exc)), style="red", soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        service.close()
    went = ", ".join(erasure.erased_with)
    done = (f"already erased: {erasure.event_id} (erasure {erasure.seq} at {erasure.erased_at} by {erasure.who})"
            if already else f"erased {erasure.event_id} (position {erasure.position}, erasure {erasure.seq})")
    console.print(done + (f" with {went}" if went else ""), soft_wrap=True, markup=False, highlight=False)
    embedded = None if settings.redis_url else EmbeddedRedis.for_settings(settings)
    with _redis_not_ready_exits():
        url = settings.redis_url or embedded.start()  # type: ignore[union-attr]
    try:
        import redis

        client = redis.Redis.from_url(url)
        try:
            scrub = scrub_redis(client, [settings.stream, settings.dead_stream], {erasure.event_id, *erasure.erased_with})
        finally:
            client.close()
    finally:
        if embedded is not None:
            embedded.stop()  # only stops a server this command started
    deleted = ", ".join(f"{n} from {stream}" for stream, n in scrub.deleted.items())
    console.print(f"Redis: deleted {deleted}; rewrote {', '.join(scrub.rewritten) or 'nothing'}"
                  + "".join(f"; {note}" for note in scrub.notes), soft_wrap=True, markup=False, highlight=False)


@app.command()
def verify(
    head: Annotated[
        Optional[str],
        typer.Option(
            "--head", metavar="HASH", help="a head hash printed by an earlier verify: the chain must still pass through it"
        ),
    ] = None,
) -> None:
    """Re-check the store, read-only; exit 1 naming each problem.

    Its schema and triggers, every event's chained hash, and the tables derived from the events
    (recomputed and compared)."""
    from events.integrity import projections_beyond, verify as check
    from events.store import connect_read_only

    settings = _settings()
    kept = head.strip().lower() if head else None
    if isinstance(settings.db, str):  # PostgreSQL (docs/postgresql.md)
        report = _verify_postgres(settings.db, kept)
    else:
        if not settings.db.is_file():
            err.print(f"[red]no store at {settings.db}[/]")
            raise typer.Exit(2)
        conn = connect_read_only(settings.db)
        try:
            report = check(conn, head=kept)
        finally:
            conn.close()
        projections_beyond(settings.db, report)
    for erased in report.erasures:
        with_ = f" with {', '.join(erased['erased_with'])}" if erased["erased_with"] else ""
        console.print(
            f"erased: {erased['event_id']} (position {erased['position']}){with_} at {erased['erased_at']}"
            f" by {erased['who']}: {erased['reason']}", soft_wrap=True, markup=False, highlight=False)
    if report.ok:
        console.print(
            f"ok: {report.checked} events; schema, triggers, hash chain and derived tables as the service"
            f" writes them; head hash {report.head} (position {report.head_position})"
        )
        return
    for problem in report.problems:
        err.print(f"[red]{escape(problem)}[/]")
    where = [f"first bad position: {report.first_bad}"] if report.first_bad is not None else []
    if report.tables:
        where.append(f"tables: {', '.join(sorted(report.tables))}")
    console.print(f"NOT OK ({'; '.join(where)}); {report.checked} events checked", soft_wrap=True)
    raise typer.Exit(1)


def _verify_postgres(url: str, head: str | None) -> Any:
    """``timeline verify`` of a store on PostgreSQL; exit 2 when it cannot be reached or has no store."""
    import psycopg

    from events.pg.connect import redact
    from events.pg.integrity import verify as check_pg

    try:
        return check_pg(url, head=head)
    except psycopg.OperationalError as exc:
        err.print(f"[red]cannot reach {escape(redact(url))}[/]: {escape(str(exc).strip())}", soft_wrap=True)
        raise typer.Exit(2) from None
    except RuntimeError as exc:  # no schema of the search_path exists
        err.print(f"[red]{escape(str(exc))}[/]", soft_wrap=True)
        raise typer.Exit(2) from None


@app.command("copy-store")
def copy_store(
    source: Annotated[str, typer.Argument(metavar="SRC", help="the store to copy: a SQLite path or a postgresql:// URL")],
    dest: Annotated[str, typer.Argument(metavar="DEST", help="where to: an empty (or new) store, path or URL")],
) -> None:
    """Copy a store to another backend (SQLite to PostgreSQL, or back), in store order.

    Every event, hash and erasure as it is; the chain is verified on arrival (else nothing is
    written) and the destination checked whole. Projections rebuild when `timeline serve` starts
    on DEST, keeping the erasures SRC told live streams. Works while a service appends to SRC
    (its snapshot is copied)."""
    from events.copy import CopyError, copy_store as copy, describe

    from .backup import carry_removals, removals_of

    try:
        with err.status(f"copying {describe(source)} to {describe(dest)}") as status:
            result = copy(source, dest, progress=lambda table, n: status.update(f"copying {table}: {n:,} rows"))
            # the erasures told to live streams: not derivable from the store (timeline.backup)
            carry_removals(removals_of(source, dest), dest)
    except CopyError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(exc.status) from None
    console.print(
        f"copied {result.events} events to {describe(dest)} in {result.seconds:.2f} s; verified: head hash"
        f" {result.head_hash} (position {result.events}). Projections rebuild when `timeline serve` starts on it.",
        soft_wrap=True, markup=False, highlight=False,
    )


@app.command()
def backup(
    dest: Annotated[Path, typer.Argument(metavar="DEST", help="the copy's path (its folder must exist)")],
    force: Annotated[
        bool, typer.Option("--force", help="replace DEST (and its log and projections) if it exists")
    ] = False,
) -> None:
    """Copy the store consistently, even while the service ingests, and verify the copy.

    Only the store is copied; the projections rebuild when `timeline serve` starts on the copy.
    A PostgreSQL store is copied into the SQLite file DEST (as `timeline copy-store` does)."""
    from .backup import BackupError, backup as make_backup, backup_postgres

    settings = _settings()
    if settings.on_postgres:
        _store_or_exit(settings)
    try:
        with err.status(f"copying {stores.describe(settings)} to {dest}"), _store_unavailable_exits(settings):
            if settings.on_postgres:  # into a SQLite file, by copy-store (timeline.backup.backup_postgres)
                result = backup_postgres(str(settings.db), dest, force=force)
            else:
                result = make_backup(settings.db, dest, force=force)
    except BackupError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1 if "does not verify" in str(exc) else 2) from None
    console.print(
        f"backed up {result.events} events to {result.dest} ({result.bytes / 1e6:,.1f} MB in {result.seconds:.2f} s);"
        f" verified: head hash {result.head_hash} (position {result.events})",
        soft_wrap=True, markup=False, highlight=False,
    )


@app.command("import")
def import_(
    source: Annotated[str, typer.Argument(metavar="FILE|-", help="JSON Lines of events, or - for standard input")],
    rejected: Annotated[
        Optional[str],
        typer.Option("--rejected", metavar="PATH",
                     help="where rejected lines go (default: FILE.rejected.jsonl; ./stdin.rejected.jsonl for -)"),
    ] = None,
    workers: Annotated[
        Optional[int], typer.Option(min=0, max=64, metavar="N", help="validating processes (default: one a core; 0: none)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Load JSON Lines of events straight into the store, with the stream's rules, then project.

    Rejected lines go to a rejects file with their line, reason and error; exits 1 if any was."""
    from .importer import import_events, rejects_path_for
    from .service import TimelineService

    settings = _settings(writes="appends to the store")
    if source != "-" and not Path(source).is_file():
        err.print(f"[red]no such file:[/] {escape(source)}")
        raise typer.Exit(2)
    rejects = rejects_path_for(source, rejected)
    _not_the_store(settings, rejects, Path(f"{rejects}.partial"))
    if not rejects.parent.resolve().is_dir():
        err.print(f"[red]the folder of {escape(str(rejects))} does not exist[/]")
        raise typer.Exit(2)
    with _store_unavailable_exits(settings):
        service = TimelineService(settings)
    stream = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115 - closed below
    size = None if source == "-" else Path(source).stat().st_size
    started = time.perf_counter()
    try:
        with _import_progress(quiet) as progress:
            storing = progress.add_task("storing", total=size, events=0)
            projecting = progress.add_task("projecting", total=None, events=0, visible=False, start=False)

            def report(phase: str, done: int, total: int) -> None:
                if phase == "store":
                    progress.update(storing, completed=stream.tell() if size is not None else None, events=done)
                else:
                    progress.update(storing, completed=size)
                    if not progress.tasks[projecting].started:
                        progress.start_task(projecting)  # its rate counts from here
                    progress.update(projecting, visible=True, completed=done, total=max(total, 1), events=done)
                progress.refresh()  # (no refresh thread: see _import_progress)

            result = import_events(service, stream, rejects, workers=workers, progress=report)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
        service.close()
    elapsed = time.perf_counter() - started
    positions = f" (positions {result.first_position}-{result.last_position})" if result.stored else ""
    console.print(
        f"imported {source}: {result.lines} lines, stored {result.stored}{positions}, duplicates {result.duplicates},"
        f" rejected {result.rejected}; stored in {result.store_seconds:.2f} s, projections"
        f" {'rebuilt' if result.projected_by == 'rebuild' else 'caught up'} in {result.project_seconds:.2f} s;"
        f" {elapsed:.2f} s in all, {result.lines / elapsed if elapsed else 0:,.0f} lines/s stored and projected",
        soft_wrap=True, markup=False, highlight=False,
    )
    if result.rejected:
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(result.reasons.items()))
        err.print(f"[yellow]{result.rejected} lines rejected ({reasons}):[/] written to {escape(str(rejects))}",
                  soft_wrap=True)
        raise typer.Exit(1)


class EventRateColumn(ProgressColumn):
    """Events so far and per second (a task's ``events`` field over its elapsed time)."""

    def render(self, task: Any) -> Text:
        events = task.fields.get("events", 0)
        elapsed = task.finished_time if task.finished else task.elapsed
        rate = f", {events / elapsed:,.0f}/s" if elapsed else ""
        return Text(f"{events:,} events{rate}", style="progress.data.speed")


def _import_progress(quiet: bool) -> Progress:
    # Redrawn at each report (a transaction stored, a projection's batch), not by a thread of its
    # own: the import forks its validating processes only from a process without other threads.
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        EventRateColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
        auto_refresh=False,
        disable=quiet or not err.is_terminal,
    )


@app.command()
def info(
    redis_url: Annotated[
        bool, typer.Option("--redis-url", help="print only the Redis URL (exit 1 when the embedded Redis is not running)")
    ] = False,
) -> None:
    """Print the settings in force and the Redis in use; starts nothing.

    The store, the projections, the streams and the Redis: REDIS_URL, or the embedded server's URL
    and data folder and whether it is running now."""
    from projections.engine import projections_dir

    from .embedded_redis import EmbeddedRedisNotRunning, redis_url_in_use

    settings = _settings()
    url = settings.redis_url
    try:
        running: str | None = redis_url_in_use(settings)
    except EmbeddedRedisNotRunning as exc:
        running, not_running = None, str(exc)
    if redis_url:
        if running is None:
            err.print(not_running, soft_wrap=True, markup=False, highlight=False)
            raise typer.Exit(1)
        print(running)
        return
    if url is not None:
        redis_line = f"{_without_password(url)} (REDIS_URL)"
    elif running is not None:
        port = running.rsplit(":", 1)[-1].split("/", 1)[0]
        redis_line = f"{running} (embedded, running, port {port}, data in {settings.redis_dir.resolve()})"
    else:
        redis_line = f"embedded, not running (data in {settings.redis_dir.resolve()}): `timeline serve` starts it"
    if settings.on_postgres:
        store_lines = [
            f"store: {stores.describe(settings)}",
            "projections: in the store's schema, beside its tables",
        ]
    else:
        store = Path(settings.db).resolve()
        store_lines = [
            f"store: {store}" + ("" if store.exists() else " (not created yet)"),
            f"projections: {projections_dir(store)}",
        ]
    lines = [
        *store_lines,
        f"stream: {settings.stream}",
        f"dead letters: {settings.dead_stream}",
        f"redis: {redis_line}",
    ]
    if settings.read_only:
        lines.append("node: read-only (TIMELINE_READ_ONLY): serves reads; consumes, projects and migrates nothing")
    for line in lines:
        console.print(line, soft_wrap=True, markup=False, highlight=False)


def demo_events() -> list[bytes]:
    data = resources.files("timeline").joinpath("data/demo_events.jsonl").read_bytes()
    return [line for line in data.splitlines() if line.strip()]


@app.command()
def demo() -> None:
    """Load the bundled X-outage events and print the timelines of Elon Musk and X."""
    import asyncio

    from .publisher import prepare
    from .runtime import Runtime

    settings = _settings(writes="stores and projects the demo events")

    async def run() -> list[dict[str, Any]]:
        from projections.queries import TimelineQuery

        async with Runtime(settings) as runtime:
            valid, rejected = prepare(demo_events())
            if rejected:
                raise RuntimeError(f"bundled demo events are invalid: {rejected}")
            entries = await runtime.publish([data for _, _, data in valid])
            outcomes = await runtime.wait_for([(eid, entry, data) for (_, eid, data), entry in zip(valid, entries)])
            stored = sum(1 for o in outcomes if o and o[0] == "stored")
            dead = [o for o in outcomes if o and o[0] == "dead"]
            console.print(
                f"published {len(valid)} events about the X outage of May 2025 to [bold]{settings.stream}[/]"
                f" ({'embedded Redis' if settings.redis_url is None else settings.redis_url});"
                f" {stored} stored in {stores.describe(settings)}" + (f", {len(dead)} dead-lettered" if dead else "")
            )
            queries = runtime.service.queries
            return [
                await asyncio.to_thread(queries.timeline, entity, TimelineQuery(limit=500), total=True)
                for entity in ("elon-musk", "x")
            ]

    with _redis_not_ready_exits():
        results = asyncio.run(run())
    for result in results:
        console.print()
        console.print(render_timeline(result))
    console.print(
        "\nTry: [bold]timeline serve[/], then curl 'http://127.0.0.1:8000/entities/twitter/timeline'"
        " (Twitter is an alias of X)."
    )


from .deadletters_cli import app as dead_letters_app  # noqa: E402 - the sub-app needs this module's helpers

app.add_typer(dead_letters_app, name="dead-letters")


if __name__ == "__main__":  # pragma: no cover
    app()
