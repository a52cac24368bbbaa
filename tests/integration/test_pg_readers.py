"""Readers of a PostgreSQL store through the connection pool (events.pg.connect.pool), while
another process appends: every snapshot a reader takes is a gap-free prefix of the store (a batch
becomes visible whole, and only after every earlier one: the append lock is released after the
commit is visible), and the head a reader sees never goes back."""

from __future__ import annotations

import multiprocessing
import threading

from events.backend import open_store
from events.pg.connect import pool
from events.pg.store import PgEventStore
from helpers import append, news, sql_rows


def appender(url: str, batches: int, size: int) -> None:
    with open_store(url) as store:
        for b in range(batches):
            append(store, *(news(f"b{b}-{i}", "2025-05-24", ("x",)) for i in range(size)))


def test_pooled_readers_see_gap_free_prefixes_while_another_process_appends(pg_db: str) -> None:
    open_store(pg_db).close()
    batches, size = 60, 25
    child = multiprocessing.get_context("spawn").Process(target=appender, args=(pg_db, batches, size))
    readers = pool(pg_db, max_size=3)
    problems: list[str] = []
    seen: list[int] = []
    done = threading.Event()

    def read() -> None:
        last = 0
        while not done.is_set() or last < batches * size:
            with readers.connection() as conn:
                store = PgEventStore.over(conn)
                with conn.transaction():  # one snapshot for both reads
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    head = store.head()
                    positions = [e.position for e in store.read(0, 100_000)]
            if positions != list(range(1, head + 1)):
                problems.append(f"head {head}, positions not a prefix: {positions[-5:]}")
            if head < last or head % size:
                problems.append(f"head {head} after {last} (batches of {size})")
            last = head
            seen.append(head)
            if problems or (done.is_set() and last == batches * size):
                return

    threads = [threading.Thread(target=read) for _ in range(5)]
    child.start()
    for t in threads:
        t.start()
    child.join(timeout=300)
    done.set()
    for t in threads:
        t.join(timeout=60)
    readers.close()
    assert child.exitcode == 0
    assert problems == []
    assert len(set(seen)) > 3  # the readers read while the appends went on
    assert sql_rows(pg_db, "SELECT count(*), max(position) FROM events") == [(batches * size, batches * size)]
