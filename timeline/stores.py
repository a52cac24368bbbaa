"""What the commands say about the store ``TIMELINE_DB`` names, on either backend.

A SQLite store is a file: it exists or not. A PostgreSQL store is a schema in a database that
may not answer, or answer without the store's tables: each case is one line for the operator,
never a traceback (``StoreUnavailable``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .settings import Settings

# ``psycopg`` and ``events.pg`` are imported where a PostgreSQL store is used, not with this
# module: a command on a SQLite store does not load them (~0.2 s of its start; docs/performance.md,
# Session 11).


class StoreUnavailable(RuntimeError):
    """The store cannot be opened now: the message says why, in one line."""


def describe(settings: Settings) -> str:
    """The store as a line prints it: the file's absolute path, or the URL without its password."""
    if settings.on_postgres:
        from events.pg.connect import redact

        return f"{redact(str(settings.db))} (PostgreSQL)"
    assert isinstance(settings.db, Path)
    return str(settings.db.resolve())


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def missing(settings: Settings) -> str | None:
    """Why there is no store to read (not created yet, PostgreSQL not answering), or None."""
    if not settings.on_postgres:
        assert isinstance(settings.db, Path)
        return None if settings.db.is_file() else f"no store at {settings.db}"
    import psycopg

    from events.pg.connect import connect, redact

    url = str(settings.db)
    try:
        with connect(url, application_name="timeline-cli") as conn:
            (schema,) = conn.execute("SELECT current_schema()").fetchone() or (None,)
            if schema is None:
                (path,) = conn.execute("SHOW search_path").fetchone() or ("?",)
                return f"no store in {redact(url)}: no schema of its search_path ({path}) exists"
            (found,) = conn.execute("SELECT to_regclass('events') IS NOT NULL").fetchone() or (False,)
    except psycopg.Error as exc:
        return f"cannot reach the store's PostgreSQL ({redact(url)}): {_one_line(exc)}"
    return None if found else f"no store in {redact(url)} (schema {schema})"


@contextmanager
def reachable(settings: Settings) -> Iterator[None]:
    """Turn PostgreSQL not answering (while a command opens or uses the store) into
    ``StoreUnavailable`` with one line that names the server. On SQLite: nothing to turn (no
    PostgreSQL error can be raised by a store that does not use it)."""
    if not settings.on_postgres:
        yield
        return
    import psycopg

    from events.pg.connect import redact
    from events.pg.store import StandbyStore

    try:
        yield
    except StandbyStore as exc:  # a node that writes, started on a read replica
        raise StoreUnavailable(f"cannot write the store: {exc}") from None
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(
            f"cannot reach the store's PostgreSQL ({redact(str(settings.db))}): {_one_line(exc)}"
        ) from None


def owned_by(store: Path, path: Path) -> str | None:
    """What of the SQLite ``store`` a file written at ``path`` would replace (its log, its index,
    a projection, the embedded Redis' files beside it…), or None: no command writes over the source of truth or what lives beside it.
    Links and ``..`` are resolved, so another spelling of the same file is caught too."""
    from projections.engine.files import projections_dir

    store = store.resolve()
    target = path.resolve()
    for part, what in ((store, "the store itself"), (Path(f"{store}-wal"), "the store's log"),
                       (Path(f"{store}-shm"), "the store's log index"), (Path(f"{store}-journal"), "the store's journal")):
        if target == part:
            return what
    folder = projections_dir(store)
    if target == folder or folder in target.parents:
        return "the store's projections"
    redis = store.parent / "redis"  # ``Settings.redis_dir``: the embedded Redis' AOF and port file
    if target == redis or redis in target.parents:
        return "the embedded Redis' folder: the stream's entries not yet stored and the dead letters"
    return None


def owned_message(store: Path, paths: list[Path]) -> str | None:
    """Why a command must not write the first of ``paths`` that belongs to the SQLite ``store``."""
    for path in paths:
        what = owned_by(store, path)
        if what is not None:
            return f"{path} belongs to the store ({what}: {store}); choose another path"
    return None


def refuse_owned(settings: Settings, *paths: Path) -> str | None:
    """``owned_message`` for the store ``settings`` name (None on PostgreSQL: no file to replace)."""
    if settings.on_postgres:
        return None
    assert isinstance(settings.db, Path)
    return owned_message(settings.db, list(paths))
