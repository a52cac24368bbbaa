"""Lagging told from stuck (timeline.lag.Progress), on a clock the test moves."""

from __future__ import annotations

from timeline.lag import CAUGHT_UP, LAGGING, STUCK, Progress, ProjectionLag, Backlog, age_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_part_that_moves_while_behind_is_lagging_and_one_that_does_not_is_stuck() -> None:
    clock = Clock()
    progress = Progress(stuck_seconds=10, clock=clock)
    assert progress.judge("p", 5, False, 0).state == CAUGHT_UP
    for position in (5, 6, 8, 9):  # behind for 40 s, but moving every 10 s
        clock.now += 9.5
        judged = progress.judge("p", position, True, 100.0)
        assert judged.state == LAGGING, (position, judged)
    clock.now += 9.9
    assert progress.judge("p", 9, True, 100.0) == progress.judge("p", 9, True, 100.0)
    assert progress.judge("p", 9, True, 100.0).state == LAGGING
    clock.now += 0.1
    stuck = progress.judge("p", 9, True, 100.0)
    assert stuck.state == STUCK and stuck.still_seconds == 10.0
    clock.now += 1
    assert progress.judge("p", 10, True, 100.0).state == LAGGING  # it moved again
    assert progress.judge("p", 12, False, 0).state == CAUGHT_UP


def test_idle_while_caught_up_is_not_stuck_when_work_arrives() -> None:
    clock = Clock()
    progress = Progress(stuck_seconds=10, clock=clock)
    progress.judge("stream", 7, False, 0)
    clock.now += 3600  # an hour with nothing to do, and nobody looking
    judged = progress.judge("stream", 7, True, 0.5)  # half a second ago, an entry arrived
    assert judged.state == LAGGING and judged.still_seconds == 0.5
    clock.now += 20
    assert progress.judge("stream", 7, True, 20.5).state == STUCK
    # each part is judged on its own
    assert progress.judge("projection:timelines", 7, True, 20.5).state == LAGGING


def test_lag_records() -> None:
    assert Backlog(2, 3, True, None).total == 5
    assert age_seconds(None) == 0.0 and age_seconds(1_000, now=3.5) == 2.5 and age_seconds(9_000, now=3.0) == 0.0
    assert ProjectionLag("t", 4, 10, 1.0, None).lag_events == 6
    assert ProjectionLag("t", 4, 10, 1.0, None).rebuild_progress == 1.0
    assert ProjectionLag("t", 4, 10, 1.0, 5).rebuild_progress == 0.5
    assert ProjectionLag("t", 0, 0, 0.0, 0).rebuild_progress == 1.0
