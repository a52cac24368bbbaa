"""Fixtures of the integration tier: a store file and the read side over it.

``db`` is a store path in the test's own folder; ``q`` the read side (``Queries``) over that store
once the store and the projections' tables exist (before the first read). A test module may
define its own ``db`` or ``q``; it then takes precedence.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from events.store import EventStore
from projections import ProjectionEngine, default_projections
from projections.queries import Queries


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "timeline.db"


@pytest.fixture
def q(db: Path) -> Iterator[Queries]:
    with EventStore(db) as store:
        ProjectionEngine(store, default_projections()).setup()
    queries = Queries(str(db))
    yield queries
    queries.close()
