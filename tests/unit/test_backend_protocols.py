"""What a backend implements: one Protocol per role (events.backend.Store,
projections.backend.Engine and Reads), and each backend's class has every member of its role's
Protocol, methods with the same parameters (names, kinds, defaults). No database is opened:
the classes are read, not run (tests/integration/test_backend.py checks live instances)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from events.backend import Store
from events.pg.store import PgEventStore
from events.store import EventStore
from projections.backend import Engine, Reads
from projections.engine import ProjectionEngine
from projections.pg.engine import PgProjectionEngine
from projections.pg.queries import PgQueries
from projections.queries import Queries

ROLES = [
    (Store, EventStore), (Store, PgEventStore),
    (Engine, ProjectionEngine), (Engine, PgProjectionEngine),
    (Reads, Queries), (Reads, PgQueries),
]
KEPT_DUNDERS = {"__enter__", "__exit__"}


def members(protocol: type) -> tuple[dict[str, Any], set[str]]:
    """The Protocol's methods (name -> what the class body holds) and its data attributes."""
    methods = {
        name: value for name, value in vars(protocol).items()
        if (not name.startswith("__") or name in KEPT_DUNDERS)
        and (callable(value) or isinstance(value, (staticmethod, property)))
    }
    data = set(getattr(protocol, "__annotations__", {})) - set(methods)
    return methods, data


def parameters(fn: Any) -> list[tuple[str, Any, Any]]:
    """Each parameter's name, kind and default (``self`` left out: an instance method's first)."""
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    return [(p.name, p.kind, p.default) for p in params]


def assigned_in_init(cls: type) -> set[str]:
    """The attributes a class (or a base) declares or assigns in its ``__init__``."""
    out: set[str] = set()
    for klass in cls.__mro__:
        out |= set(getattr(klass, "__annotations__", {}))
        init = vars(klass).get("__init__")
        if init is not None and hasattr(init, "__code__"):
            source = inspect.getsource(init)
            out |= {name for name in init.__code__.co_names if f"self.{name} =" in source or f"self.{name}:" in source}
    return out


@pytest.mark.parametrize(("protocol", "cls"), ROLES, ids=lambda x: x.__name__)
def test_each_backend_class_implements_its_role(protocol: type, cls: type) -> None:
    methods, data = members(protocol)
    assert methods, protocol
    missing = [name for name in methods if not hasattr(cls, name)]
    assert not missing, f"{cls.__name__} lacks {missing} of {protocol.__name__}"
    for name, declared in methods.items():
        found = inspect.getattr_static(cls, name)
        if isinstance(declared, property):
            assert isinstance(found, property), f"{cls.__name__}.{name} is not a property"
            continue
        assert callable(getattr(cls, name)), f"{cls.__name__}.{name} is not a method"
        assert isinstance(found, staticmethod) == isinstance(declared, staticmethod), f"{cls.__name__}.{name}"
        assert parameters(getattr(cls, name)) == parameters(getattr(protocol, name)), f"{cls.__name__}.{name}"
    absent = data - assigned_in_init(cls) - set(dir(cls))
    assert not absent, f"{cls.__name__} has no {sorted(absent)} of {protocol.__name__}"


def test_a_class_that_lacks_a_method_or_differs_in_one_is_told() -> None:
    """The check above can fail: a class without ``rebuild_step``, and one whose ``step`` takes
    another parameter, are not an ``Engine``."""

    class Lacking(ProjectionEngine):
        rebuild_step = None  # type: ignore[assignment]

    class Differing(ProjectionEngine):
        def step(self, until: int | None = None) -> int | None:  # type: ignore[override]
            return None

    with pytest.raises(AssertionError, match="rebuild_step"):
        test_each_backend_class_implements_its_role(Engine, Lacking)
    with pytest.raises(AssertionError, match="Differing.step"):
        test_each_backend_class_implements_its_role(Engine, Differing)


def test_a_batch_gives_the_projections_its_alias_declarations_as_records() -> None:
    """What ``Projection.declare`` gets: the store's ``AliasDeclaration`` records, not tuples; an
    erased declaration (no body) and other kinds are left out."""
    from events.records import AliasDeclaration, StoredEvent
    from projections.groups import declarations

    at = "2025-05-24T00:00:00+00:00"
    events = [
        StoredEvent(1, "n1", "news", None, at, {"details": {}}),
        StoredEvent(2, "a1", "entity_alias", None, at, {"details": {"alias": "twitter", "canonical": "x", "name": "X"}}),
        StoredEvent(3, "a2", "entity_alias", None, at, {}),
        StoredEvent(4, "a3", "entity_alias", None, at, {"details": {"alias": "tw", "canonical": "x"}}),
    ]
    assert declarations(events) == [AliasDeclaration(2, "twitter", "x", "X"), AliasDeclaration(4, "tw", "x", None)]
