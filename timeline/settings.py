"""Settings, from the environment (docs/contract.md §5). Nothing is read at import time."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GROUP = "store"


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    redis_url: str | None = Field(None, alias="REDIS_URL", description="Redis; unset starts an embedded server")
    db: Path | str = Field(
        Path("data/timeline.db"), alias="TIMELINE_DB",
        description="the store: a SQLite file's path, or a postgresql:// URL (docs/postgresql.md)",
    )
    redis_appendfsync: Literal["everysec", "always"] = Field(
        "everysec", alias="TIMELINE_REDIS_APPENDFSYNC",
        description="the embedded Redis' AOF fsync policy: everysec (a crash of Redis may lose up to ~2 s of"
        " acknowledged entries) or always (nothing acknowledged is lost; each write waits for the disk)",
    )
    stream: str = Field("news:events", alias="TIMELINE_STREAM", min_length=1)
    read_only: bool = Field(
        False, alias="TIMELINE_READ_ONLY",
        description="a read-only node (timeline serve --read-only): serves the API, pages and streams from the store"
        " and projections another process writes; no consumer, projector, trimmer, migrations or rebuilds",
    )
    api_token: SecretStr | None = Field(None, alias="TIMELINE_API_TOKEN")
    api_token_name: str | None = Field(
        None, alias="TIMELINE_API_TOKEN_NAME", max_length=200,
        description="who an erasure made with the API token is recorded as (default: the token's SHA-256 prefix)",
    )
    claim_idle_seconds: float = Field(
        30.0, alias="TIMELINE_CLAIM_IDLE_SECONDS", gt=0, description="idle time before pending entries are taken over"
    )
    consumer: str = Field(default_factory=_default_consumer, alias="TIMELINE_CONSUMER", min_length=1)
    batch_size: int = Field(1000, alias="TIMELINE_BATCH_SIZE", ge=1, le=10_000)
    validators: int = Field(
        1, alias="TIMELINE_VALIDATORS", ge=0, le=16,
        description="processes that validate stream batches beside the service's own (0: its own threads)",
    )
    wait_timeout_seconds: float = Field(30.0, alias="TIMELINE_WAIT_TIMEOUT_SECONDS", gt=0)
    redis_ready_seconds: float = Field(
        60.0, alias="TIMELINE_REDIS_READY_SECONDS", gt=0,
        description="how long a command waits at start for Redis to accept connections and load its data",
    )
    stream_keep: int = Field(
        1000, alias="TIMELINE_STREAM_KEEP", ge=0,
        description="entries acknowledged by every group that are kept in the stream (the rest are trimmed)",
    )
    readers: int = Field(
        4, alias="TIMELINE_READERS", ge=1, le=64, description="threads that run the API's reads (each its own connections)"
    )
    read_timeout_seconds: float = Field(
        10.0, alias="TIMELINE_READ_TIMEOUT_SECONDS", gt=0, le=3600,
        description="a read not answered this long after it was asked is stopped and answered 503",
    )
    stuck_seconds: float = Field(
        300.0, alias="TIMELINE_STUCK_SECONDS", gt=0,
        description="a part behind that has not moved for this long is reported stuck (/health, /metrics)",
    )
    metrics_require_token: bool = Field(
        False, alias="TIMELINE_METRICS_REQUIRE_TOKEN",
        description="GET /metrics needs the bearer token (TIMELINE_API_TOKEN) as writes do",
    )
    otlp_endpoint: str | None = Field(
        None, alias="TIMELINE_OTLP_ENDPOINT",
        description="send OpenTelemetry traces to this OTLP/HTTP endpoint (unset: no tracing; needs the [otel] extra)",
    )

    # Live streams (timeline.live): see docs/live.md.
    stream_max_clients: int = Field(
        100, alias="TIMELINE_STREAM_MAX_CLIENTS", ge=1, le=100_000,
        description="live streams open at once; one more is answered 503 with Retry-After",
    )
    stream_heartbeat_seconds: float = Field(
        15.0, alias="TIMELINE_STREAM_HEARTBEAT_SECONDS", gt=0, le=3600,
        description="a ': keepalive' comment is sent on every live stream this often",
    )
    stream_send_timeout_seconds: float = Field(
        30.0, alias="TIMELINE_STREAM_SEND_TIMEOUT_SECONDS", gt=0, le=3600,
        description="a live stream's client that takes longer to take one message is disconnected",
    )

    # The HTTP server's limits (timeline.edge, uvicorn): see docs/operations.md.
    http_max_header_bytes: int = Field(
        32 * 1024, alias="TIMELINE_HTTP_MAX_HEADER_BYTES", ge=1024, le=1024 * 1024,
        description="a request line and headers over this many bytes are answered 431",
    )
    http_max_url_bytes: int = Field(
        8 * 1024, alias="TIMELINE_HTTP_MAX_URL_BYTES", ge=256, le=1024 * 1024,
        description="a request target (path and query) over this many bytes is answered 414",
    )
    http_max_headers: int = Field(100, alias="TIMELINE_HTTP_MAX_HEADERS", ge=8, le=10_000)
    http_header_timeout_seconds: float = Field(
        10.0, alias="TIMELINE_HTTP_HEADER_TIMEOUT_SECONDS", gt=0,
        description="the time a client has to send a request's head (line and headers)",
    )
    http_body_timeout_seconds: float = Field(
        30.0, alias="TIMELINE_HTTP_BODY_TIMEOUT_SECONDS", gt=0,
        description="the time a client has to send a request's body once its head is in",
    )
    http_keep_alive_seconds: int = Field(
        5, alias="TIMELINE_HTTP_KEEP_ALIVE_SECONDS", ge=1, description="an idle keep-alive connection is closed after"
    )
    http_max_connections: int = Field(
        1000, alias="TIMELINE_HTTP_MAX_CONNECTIONS", ge=1,
        description="connections (or requests in progress) beyond this are answered 503",
    )

    @field_validator("redis_url", "api_token", "otlp_endpoint", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _metrics_token_needs_a_token(self) -> "Settings":
        if self.metrics_require_token and self.api_token is None:
            raise ValueError("TIMELINE_METRICS_REQUIRE_TOKEN is set but TIMELINE_API_TOKEN is not: there is no token to require")
        return self

    @property
    def dead_stream(self) -> str:
        return f"{self.stream}:dead"

    @property
    def group(self) -> str:
        return GROUP

    @field_validator("db", mode="after")
    @classmethod
    def _db_path_or_url(cls, value: Path | str) -> Path | str:
        """A ``postgresql://`` URL stays a string (a Path would fold its ``//``); else a Path."""
        from events.backend import is_postgres

        return value.strip() if is_postgres(value) else Path(value)

    @property
    def on_postgres(self) -> bool:
        """Whether the store is on PostgreSQL (``TIMELINE_DB`` is a URL)."""
        return isinstance(self.db, str)

    @property
    def data_dir(self) -> Path:
        """The folder of this node's files: the store's (SQLite), else ``./data`` (PostgreSQL)."""
        return Path("data") if isinstance(self.db, str) else self.db.parent

    @property
    def redis_dir(self) -> Path:
        """Where the embedded Redis keeps its append-only file: beside the store."""
        return self.data_dir / "redis"

    @property
    def token(self) -> str | None:
        return self.api_token.get_secret_value() if self.api_token else None
