"""Settings: built by `load_settings()` from the environment (prefix TOONFORGE_), never at
import time, so tests and several processes can each hold their own."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "toonforge"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOONFORGE_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    # SQLite in the data folder unless set (e.g. postgresql+psycopg://user@host/db).
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    # Absolute base for output URLs (what clients fetch); defaults to http://host:port.
    public_url: str | None = None

    # Offline mode: every tool runs on tiny stand-in weights that toonforge builds itself.
    tiny: bool = False
    # Where the tiny stand-ins are built (default: DATA_DIR/tiny-models); servers that share
    # it build them once.
    tiny_dir: Path | None = None
    # Folders of extra tool manifests (YAML), besides the built-in ones.
    extra_tools_dirs: list[Path] = Field(default_factory=list)
    # Where real weights live (single files, LoRAs, embeddings, diffusers folders).
    models_dir: Path | None = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    # Loaded pipelines are kept between tasks, least recently used evicted past this budget.
    model_memory_budget_gb: float = 16.0
    # Largest private base model a project may upload (an SD 1.5 checkpoint with EMA weights
    # in float32 is about 7.7 GB).
    private_model_max_gb: float = 8.0
    # Largest file a project may send to File/Upload (the hosted service documents 100 MB).
    upload_max_mb: float = 100.0

    # API processes `serve` runs on one port (Python runs one thread at a time per process:
    # two use both cores of a small machine). Each has `api_threads` threads.
    api_processes: int = 2
    # Threads that run the API's database work (each holds at most one pooled connection).
    api_threads: int = 16
    # One log line per HTTP request (uvicorn's access log); off by default, it costs
    # throughput and the task events already record what happened.
    access_log: bool = False
    # Operations (README "Operations"): "text" (human) or "json" (one object per line, with
    # task_id and project_id on the lines of a task or a request).
    log_format: str = "text"
    # When set, /metrics and /readyz want `Authorization: Bearer <token>` (otherwise they,
    # like /healthz, need no key: keep them on a network only operators reach).
    metrics_token: str = ""
    # Worker behaviour. Workers are woken when a task is queued (LISTEN/NOTIFY on
    # PostgreSQL, a loopback datagram on SQLite); this is only the safety-net poll.
    worker_poll_seconds: float = 2.0
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 5.0
    max_attempts: int = 3
    # `serve` starts this many worker processes (0: API only; run `toonforge worker` apart).
    workers: int = 1

    # Auth and abuse limits.
    # A project's key, secret and allow-list are cached this long by each API process (a
    # revoked key stops working within it).
    auth_cache_seconds: float = 2.0
    nonce_window_seconds: int = 600
    # Reject a nonce that looks like a unix time further than this from now (0: no check).
    nonce_max_skew_seconds: int = 0
    default_max_running_tasks: int = 0  # 0 = unlimited, per new project
    # Reverse proxies whose X-Forwarded-For/-Proto headers are believed (comma-separated
    # addresses or CIDRs, "*" for any). Empty: the headers are ignored and the client address
    # the IP allow-lists check is the connection's own.
    trusted_proxies: str = ""

    # Callbacks.
    callback_allow_private: bool = False
    callback_timeout_seconds: float = 10.0
    callback_max_attempts: int = 5
    callback_backoff_seconds: float = 2.0

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        for entry in _split(value):
            if entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError as exc:
                    raise ValueError(f"not an address or CIDR: {entry!r}") from exc
        return value

    @field_validator("log_format")
    @classmethod
    def _check_log_format(cls, value: str) -> str:
        if value.lower() not in ("text", "json"):
            raise ValueError(f"expected text or json, not {value!r}")
        return value.lower()

    @property
    def trusted_proxy_list(self) -> list[str]:
        return _split(self.trusted_proxies)

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or (self.data_dir / "models")

    @property
    def tiny_models_dir(self) -> Path:
        return self.tiny_dir or (self.data_dir / "tiny-models")

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'toonforge.db'}"

    @property
    def resolved_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


def load_settings(**overrides: object) -> Settings:
    """The one place settings are read. Keyword overrides win over the environment."""
    return Settings(**overrides)  # type: ignore[arg-type]
