"""``timeline dead-letters``: list, export, resubmit, replay and drop dead letters
(docs/dead-letters.md). Each command talks to the service's Redis (``REDIS_URL``, else this
folder's embedded one) and pages: a million dead letters take the memory of one window."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.table import Table

from .deadletters import (
    REASONS,
    WINDOW,
    BadLine,
    DeadLetter,
    Mender,
    Outcome,
    audit_stream,
    drop,
    event_bytes,
    fetch,
    not_replayed,
    pages,
)
from .settings import Settings
from .terminal import escape

if TYPE_CHECKING:  # (imported when a command talks to Redis: `timeline --help` and the others never load it)
    import redis

app = typer.Typer(
    help="Read, export, fix and publish again, or drop the stream's dead letters.", no_args_is_help=True
)
LIST_LIMIT = 50
REPORTED = 20  # failures printed one by one; the rest are counted


def _cli() -> Any:
    from . import cli  # the console and settings helpers of the main command (imported late: no cycle)

    return cli


@contextlib.contextmanager
def _client() -> Iterator[tuple[redis.Redis, Settings]]:
    """A client on the service's Redis: ``REDIS_URL``, or this folder's embedded Redis (started
    for the command when no ``timeline serve`` runs it, and stopped after)."""
    import redis

    from .embedded_redis import EmbeddedRedis
    from .redis_ready import wait_until_ready

    cli = _cli()
    settings = cli._settings()
    embedded, url = None, settings.redis_url
    try:
        with cli._redis_not_ready_exits():
            if url is None:
                embedded = EmbeddedRedis.for_settings(settings)
                url = embedded.start()
            wait_until_ready(url, settings.redis_ready_seconds)
        with redis.Redis.from_url(url) as client:
            yield client, settings
    finally:
        if embedded is not None:
            embedded.stop()


def _check_reason(reason: str | None) -> None:
    if reason is not None and reason not in REASONS:
        _cli().err.print(f"[red]--reason: {escape(reason)!r} is not a reason[/]; the reasons are {', '.join(REASONS)}")
        raise typer.Exit(2)


ReasonOption = Annotated[
    Optional[str], typer.Option("--reason", metavar="REASON", help=f"only this reason ({', '.join(REASONS)})")
]


@app.command("list")
def list_(
    reason: ReasonOption = None,
    limit: Annotated[int, typer.Option(metavar="N", min=1, help="dead letters shown at most")] = LIST_LIMIT,
    output_json: Annotated[bool, typer.Option("--json", help="JSON Lines (the export format) instead of a table")] = False,
) -> None:
    """List dead letters, oldest first: id, reason, error and the start of the event."""
    _check_reason(reason)
    cli = _cli()
    with _client() as (client, settings):
        shown: list[DeadLetter] = []
        more = False
        for page in pages(client, settings.dead_stream, reason=reason, size=min(limit, WINDOW)):
            shown += page[: limit - len(shown)]
            if len(shown) >= limit:
                more = True
                break
    if output_json:
        for letter in shown:
            print(json.dumps(letter.as_dict(), ensure_ascii=False))
        return
    if not shown:
        cli.console.print(f"no dead letters of {settings.stream}" + (f" of reason {reason}" if reason else ""))
        return
    table = Table(title=f"dead letters of {settings.stream}" + (f" ({reason})" if reason else ""), title_justify="left")
    for column in ("id", "reason", "error", "event"):
        table.add_column(column, overflow="fold", no_wrap=column in ("id", "reason"))
    for letter in shown:
        shown_event = letter.as_dict()["event"] or f"({len(letter.event or b'')} bytes, not UTF-8)"
        table.add_row(letter.id, letter.reason or "", escape(letter.error or ""), escape(_cut(shown_event, 120)))
    cli.console.print(table)
    if more:
        cli.console.print(f"the first {len(shown)}; --limit shows more, `timeline dead-letters export` writes them all")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@contextlib.contextmanager
def _output(target: str) -> Iterator[IO[str]]:
    if target == "-":
        yield sys.stdout
        return
    with open(target, "w", encoding="utf-8") as out:
        yield out


@app.command()
def export(
    target: Annotated[str, typer.Argument(metavar="FILE|-", help="where to write the JSON Lines (- for standard output)")],
    reason: ReasonOption = None,
) -> None:
    """Write the dead letters as JSON Lines, one a line with all its fields, a page at a time."""
    _check_reason(reason)
    if target != "-":
        cli = _cli()
        cli._not_the_store(cli._settings(), Path(target))
    count = 0
    with _client() as (client, settings), _output(target) as out:
        for page in pages(client, settings.dead_stream, reason=reason):
            for letter in page:
                out.write(json.dumps(letter.as_dict(), ensure_ascii=False) + "\n")
            count += len(page)
    _cli().err.print(f"exported {count} dead letters" + ("" if target == "-" else f" to {escape(target)}"))


def _lines(source: str) -> Iterator[tuple[int, bytes]]:
    """A file's non-empty lines with their numbers, read as they come (never the whole file)."""
    if source == "-":
        handle: Any = contextlib.nullcontext(sys.stdin.buffer)
    else:
        if not Path(source).is_file():
            _cli().err.print(f"[red]no such file:[/] {escape(source)}")
            raise typer.Exit(2)
        handle = open(source, "rb")
    with handle as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                yield number, line.strip()


TimeoutOption = Annotated[
    float, typer.Option(min=0.1, metavar="SECONDS", help="how long each window of events is waited for")
]


@app.command()
def resubmit(
    source: Annotated[str, typer.Argument(metavar="FILE|-", help="JSON Lines as export writes them, events edited")],
    timeout: TimeoutOption = 60.0,
) -> None:
    """Publish each line's event (as edited) and remove its dead letter once the event is stored.

    One that is dead-lettered again is replaced by its new dead letter (with the new reason), and the command names it and exits 1."""
    bad: list[str] = []
    named: dict[str, int] = {}  # dead letter id -> the line that resubmits it

    def items() -> Iterator[tuple[DeadLetter, bytes | None]]:
        for number, line in _lines(source):
            try:
                item = _resubmitted(line)
            except BadLine as exc:
                bad.append(f"line {number}: {exc}")
                continue
            # one dead letter, one event: a second edit of it would be published as well, and
            # the outcomes (kept by dead letter) of the two told as one
            if item[0].id in named:
                bad.append(f"line {number}: dead letter {item[0].id} is resubmitted by line {named[item[0].id]}")
                continue
            named[item[0].id] = number
            yield item

    _mend("resubmit", items(), timeout, bad)


def _resubmitted(line: bytes) -> tuple[DeadLetter, bytes]:
    from events.models import repeated_keys  # (not with the module: `timeline --help` does not load it)

    try:
        value = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise BadLine(f"not a JSON object ({exc})") from None
    # A key named twice in one object: reading it kept one of the values (which one, readers
    # disagree) without a word, say of an ``event`` object holding the fields of an entry that
    # had several ``event`` fields.
    repeated = repeated_keys(line, value)
    if repeated:
        raise BadLine(f"{repeated[0][1]}: named more than once in one object; keep the one value meant")
    if not isinstance(value, dict):
        raise BadLine("not a JSON object")
    letter_id = value.get("id")
    if not isinstance(letter_id, str) or not letter_id:
        raise BadLine("id: missing (the dead letter's id, as export writes it)")
    return DeadLetter(letter_id, None, None, None, None), event_bytes(value)


@app.command()
def replay(
    ids: Annotated[Optional[list[str]], typer.Argument(metavar="[ID]...", help="the dead letters to replay")] = None,
    reason: ReasonOption = None,
    every: Annotated[bool, typer.Option("--all", help="every dead letter there is now")] = False,
    timeout: TimeoutOption = 60.0,
) -> None:
    """Publish dead letters' original bytes again, unchanged (after a fix), removing each once stored.

    The ids given, those of one --reason, or --all; one that fails again is replaced by its new dead letter, and the command names it and exits 1."""
    _check_reason(reason)
    if sum((bool(ids), reason is not None, every)) != 1:
        _cli().err.print("[red]give the ids to replay, or --reason REASON, or --all[/] (one of them)")
        raise typer.Exit(2)

    def items(client: redis.Redis, dead_stream: str) -> Iterator[tuple[DeadLetter, bytes | None]]:
        for letter in _letters(client, dead_stream, ids, reason):
            yield letter, None if not_replayed(letter) else letter.event

    _mend("replay", items, timeout, [])


def _letters(
    client: redis.Redis, dead_stream: str, ids: list[str] | None, reason: str | None
) -> Iterator[DeadLetter]:
    if not ids:
        for page in pages(client, dead_stream, reason=reason):
            yield from page
        return
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), WINDOW):
        chunk = unique[start : start + WINDOW]
        found = fetch(client, dead_stream, chunk)
        for letter_id in chunk:  # one not found is reported by the mender as gone
            yield found.get(letter_id) or DeadLetter(letter_id, None, None, None, None)


def _mend(command: str, items: Any, timeout: float, bad: list[str]) -> None:
    cli = _cli()
    with _client() as (client, settings):
        mender = Mender(client, settings.stream, command, timeout=timeout)
        nobody = mender.nobody_reading()
        if nobody is not None:
            cli.err.print(f"[red]nothing would store the events:[/] {escape(nobody)}; nothing was published")
            raise typer.Exit(1)
        source = items(client, settings.dead_stream) if callable(items) else items
        counts, failed = _report(mender.run(source))
    if mender.stopped:
        cli.err.print(
            f"[red]stopped: nothing published in the last window was settled within {timeout:g} s[/];"
            " the rest was not published. Is `timeline serve` running? (GET /health shows its backlog)",
            soft_wrap=True,
        )
    for line in bad[:REPORTED]:
        cli.err.print(f"[yellow]skipped[/] {escape(line)}", soft_wrap=True)
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "nothing to do"
    if bad:
        summary += f", {len(bad)} lines unreadable"
    cli.console.print(f"{command}: {summary}", soft_wrap=True, markup=False, highlight=False)
    if failed or bad:
        raise typer.Exit(1)


LABELS = {
    "stored": "stored (dead letter removed)", "dead": "dead-lettered again", "unsettled": "not settled in time",
    "missing": "already gone", "skipped": "not sent",
}


def _report(outcomes: Iterable[Outcome]) -> tuple[dict[str, int], bool]:
    """Print each failure (up to ``REPORTED``) as it comes; count every outcome."""
    err = _cli().err
    counts = {label: 0 for label in LABELS.values()}
    failures = 0
    for outcome in outcomes:
        counts[LABELS[outcome.status]] += 1
        if outcome.status == "stored":
            continue
        if outcome.status == "missing":  # another operator's command, or a drop, removed it first
            if counts[LABELS["missing"]] <= REPORTED:
                err.print(f"{escape(outcome.dead_letter)}: no such dead letter (already removed); not sent")
            continue
        failures += 1
        if failures <= REPORTED:
            err.print(_failure(outcome), soft_wrap=True)
    if failures > REPORTED:
        err.print(f"… and {failures - REPORTED} more")
    return counts, failures > 0


def _failure(outcome: Outcome) -> str:
    if outcome.status == "dead":
        return (
            f"{outcome.dead_letter}: dead-lettered again, [yellow]{outcome.reason}[/] {escape(outcome.error)}"
            f" (now dead letter {outcome.now})"
        )
    if outcome.status == "unsettled":
        return (
            f"{outcome.dead_letter}: published as {outcome.now} but not settled in time; the dead letter stays"
            " (run the command again: a stored event is not stored twice)"
        )
    return f"{outcome.dead_letter}: not sent: {escape(outcome.error)}"


@app.command("drop")
def drop_(
    ids: Annotated[list[str], typer.Argument(metavar="ID...", help="the dead letters to remove")],
) -> None:
    """Remove dead letters for good, after a decision: logged here and in the audit stream."""
    cli = _cli()
    with _client() as (client, settings):
        dropped, missing = drop(client, settings.dead_stream, list(dict.fromkeys(ids)))
    for letter in dropped:
        cli.err.print(
            f"dropped {letter.id} ({letter.reason}: {escape(_cut(letter.error or '', 200))});"
            f" audited in {escape(audit_stream(settings.dead_stream))}",
            soft_wrap=True,
        )
    for letter_id in missing:
        cli.err.print(f"[yellow]no dead letter {escape(letter_id)}[/] (already removed, or not an id)")
    cli.console.print(f"dropped {len(dropped)}" + (f", not found {len(missing)}" if missing else ""))
    if missing:
        raise typer.Exit(1)
