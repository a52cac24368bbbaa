"""compose.yaml against the code: every setting it gives exists and validates, Redis keeps the
stream in its append-only file, every service has a health check and keeps its data on a named
volume, the nodes share one PostgreSQL database and one Redis, and the read-only node is one."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml

from timeline.cli import app
from timeline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
ALIASES = {field.alias for field in Settings.model_fields.values() if field.alias}


def nodes() -> dict[str, dict[str, Any]]:
    """The services that run ``timeline serve``."""
    return {name: s for name, s in SERVICES.items() if s.get("command", [])[:2] == ["timeline", "serve"]}


def env(service: dict[str, Any]) -> dict[str, str]:
    given = service.get("environment", {})
    if isinstance(given, list):  # the KEY=VALUE form
        given = dict(item.split("=", 1) for item in given)
    return {k: str(v) for k, v in given.items()}


def settings_of(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The node's settings as the code reads them from its environment, and only from it."""
    for name in ALIASES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env(service).items():
        monkeypatch.setenv(name, value)
    return Settings()


def serve_options() -> set[str]:
    serve = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    return {opt for param in serve.params for opt in getattr(param, "opts", [])}


def test_the_deployment_has_its_parts() -> None:
    assert {"postgres", "redis"} <= set(SERVICES)
    readers = [name for name, s in nodes().items() if env(s).get("TIMELINE_READ_ONLY")]
    writers = [name for name in nodes() if name not in readers]
    assert len(writers) >= 2 and len(readers) >= 1, (writers, readers)


@pytest.mark.parametrize("name", sorted(nodes()))
def test_every_setting_a_node_is_given_is_one_of_the_codes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    given = env(SERVICES[name])
    unknown = sorted(k for k in given if (k.startswith("TIMELINE_") or k == "REDIS_URL") and k not in ALIASES)
    assert not unknown, f"{name}: compose.yaml sets {unknown}, which timeline/settings.py does not read"
    settings_of(SERVICES[name], monkeypatch)  # each value validates


@pytest.mark.parametrize("name", sorted(nodes()))
def test_a_node_command_uses_options_serve_has(name: str) -> None:
    command = SERVICES[name]["command"]
    options = {arg for arg in command[2:] if arg.startswith("-")}
    assert options <= serve_options(), f"{name}: {sorted(options - serve_options())} are not options of timeline serve"


def test_nodes_share_one_database_and_one_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    pg = env(SERVICES["postgres"])
    dbs = {env(s)["TIMELINE_DB"] for s in nodes().values()}
    assert len(dbs) == 1, dbs
    url = urlsplit(dbs.pop())
    assert url.scheme in ("postgresql", "postgres"), url
    assert (url.hostname, url.port or 5432) == ("postgres", 5432)
    assert (url.username, url.password, url.path.lstrip("/")) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])
    redis_urls = {env(s)["REDIS_URL"] for s in nodes().values()}
    assert len(redis_urls) == 1 and urlsplit(redis_urls.pop()).hostname == "redis", redis_urls
    streams = {settings_of(s, monkeypatch).stream for s in nodes().values()}
    assert len(streams) == 1, streams


def test_writer_nodes_consume_under_names_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    writers = [settings_of(s, monkeypatch) for s in nodes().values() if not env(s).get("TIMELINE_READ_ONLY")]
    assert all(not s.read_only for s in writers)
    names = [s.consumer for s in writers]
    assert len(set(names)) == len(names), names


def test_the_read_only_node_is_read_only_and_starts_after_a_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, service in nodes().items():
        if not env(service).get("TIMELINE_READ_ONLY"):
            continue
        assert settings_of(service, monkeypatch).read_only, name
        after = service.get("depends_on", {})
        writers = [n for n in after if n in nodes() and not env(nodes()[n]).get("TIMELINE_READ_ONLY")]
        assert writers and all(after[n]["condition"] == "service_healthy" for n in writers), (name, after)


def test_redis_keeps_the_stream_in_its_append_only_file() -> None:
    redis = SERVICES["redis"]
    args = redis["command"] if isinstance(redis["command"], list) else shlex.split(redis["command"])
    options = {args[i]: args[i + 1] for i in range(1, len(args) - 1) if args[i].startswith("--")}
    assert options.get("--appendonly") == "yes", args
    assert options.get("--appendfsync") in ("everysec", "always"), args
    assert any(v.split(":")[1] == "/data" for v in redis["volumes"]), redis["volumes"]


def test_data_lives_on_named_volumes() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    mounts = {"postgres": "/var/lib/postgresql/data", "redis": "/data"}
    for name, target in mounts.items():
        volumes = [v.split(":") for v in SERVICES[name]["volumes"]]
        assert any(source in declared and path == target for source, path, *_ in volumes), (name, volumes)
    used = {v.split(":")[0] for s in SERVICES.values() for v in s.get("volumes", []) if not v.startswith((".", "/"))}
    assert used <= declared, used - declared


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_health_check(name: str) -> None:
    check = SERVICES[name].get("healthcheck")
    assert check and check.get("test"), f"{name} has no healthcheck"
    if name in nodes():
        command = SERVICES[name]["command"]
        port = command[command.index("--port") + 1]
        assert f"127.0.0.1:{port}/health" in " ".join(check["test"]), check
    for dependency, condition in SERVICES[name].get("depends_on", {}).items():
        assert condition["condition"] == "service_healthy" and "healthcheck" in SERVICES[dependency], (name, dependency)
