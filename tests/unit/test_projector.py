"""The consumer's projector task: catches up when batches are stored, keeps retrying a failure,
and says so (``projection_failing``, which ``/health`` reports) until it succeeds.

No Redis is involved: the projector only talks to the service (here a stand-in whose
``project_step`` fails twice, then works)."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

from timeline.consumer import StreamConsumer
from timeline.settings import Settings


class FlakyService:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.engine = SimpleNamespace(batch_size=20_000)
        self.lock = threading.Lock()

    def project_step(self) -> tuple[int, int]:
        """(lowest checkpoint, head): caught up with a head of 42."""
        with self.lock:
            self.calls += 1
            if self.calls <= self.failures:
                raise RuntimeError(f"boom {self.calls}")
            return 42, 42


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_a_failing_projection_is_retried_and_reported_until_it_catches_up() -> None:
    service = FlakyService(failures=2)
    consumer = StreamConsumer(Settings(), service, "redis://127.0.0.1:1/0")  # type: ignore[arg-type]
    task = asyncio.create_task(consumer._project_forever())
    try:
        consumer._stored_position = 42
        consumer._stored.set()  # a batch was stored
        await wait_until(lambda: consumer.projection_failing is not None)
        assert consumer.projection_failing == "projections cannot catch up: RuntimeError: boom 1"
        assert not task.done()  # a failure does not end the projector
        await wait_until(lambda: service.calls >= 3 and consumer.projection_failing is None)
        assert consumer._projected == 42
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.redis.aclose()


async def test_a_drained_stream_is_projected_at_once_and_a_backlog_gathered(monkeypatch) -> None:
    # A gathering window far longer than any wait below: what happens within them is not a timeout.
    monkeypatch.setattr("timeline.consumer.GATHER_SECONDS", 60.0)
    service = FlakyService(failures=0)
    consumer = StreamConsumer(Settings(), service, "redis://127.0.0.1:1/0")  # type: ignore[arg-type]
    task = asyncio.create_task(consumer._project_forever())
    try:
        consumer._stored_position, consumer._draining = 1_000, False  # a partial batch: drained
        consumer._stored.set()
        await wait_until(lambda: service.calls == 1)

        consumer._stored_position, consumer._draining = 3_000, True  # full batches: a backlog
        consumer._stored.set()
        await asyncio.sleep(0.3)
        assert service.calls == 1  # still gathering (less than one projection batch behind)
        consumer._stored_position = 42 + 20_000  # a projection batch's worth has piled up
        consumer._stored.set()
        await wait_until(lambda: service.calls == 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.redis.aclose()


class SteppingService(FlakyService):
    """Each step moves the lowest checkpoint one batch of 20,000 towards a head of 50,000."""

    def __init__(self) -> None:
        super().__init__(failures=0)
        self.position = 0

    def project_step(self) -> tuple[int, int]:
        with self.lock:
            self.calls += 1
            self.position = min(self.position + 20_000, 50_000)
            return self.position, 50_000


async def test_a_projector_still_behind_after_a_step_steps_again_without_a_new_batch() -> None:
    service = SteppingService()
    consumer = StreamConsumer(Settings(), service, "redis://127.0.0.1:1/0")  # type: ignore[arg-type]
    task = asyncio.create_task(consumer._project_forever())
    try:
        consumer._stored_position, consumer._draining = 50_000, False  # drained: no gathering
        consumer._stored.set()  # one signal only
        await wait_until(lambda: consumer._projected == 50_000, timeout=0.9)  # before the 1 s poll
        assert service.calls == 3
        await asyncio.sleep(0.2)
        assert service.calls == 3  # caught up: no more steps until something is stored
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.redis.aclose()
