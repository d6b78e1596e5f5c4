"""Settings: built by `load_settings()` from the environment (prefix TOONFORGE_), never at
import time, so tests and several processes can each hold their own."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "toonforge"


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str) -> float:
    """Seconds in "7d", "12h", "30m", "3600s" or a bare number of seconds; 0 for empty."""
    text = value.strip().lower()
    if not text:
        return 0.0
    unit = _UNITS.get(text[-1])
    number = text[:-1] if unit else text
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise ValueError(f"not a duration: {value!r} (expected e.g. 7d, 12h, 30m, 3600s)") from None
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"not a duration: {value!r}")
    return seconds


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
    # The devices `serve` spreads its workers over: GPU indexes (0,1,3), cuda:N, cpu, mps;
    # with `workers=auto` one worker per entry. Empty: every visible GPU, or `device`.
    devices: str = ""
    # Which tools run on which devices: `PATTERN=DEVICES; ...` (see toonforge/devices.py).
    tool_devices: str = ""
    # auto (the family's own: bfloat16 for FLUX, float16 for the others on GPUs, float32 on
    # the CPU) | float32 | float16 | bfloat16, for every tool.
    dtype: str = "auto"
    # Throughput knobs (engine/tuning.py says when each helps). auto: on for GPUs.
    vae_slicing: Literal["auto", "on", "off"] = "auto"
    vae_tiling: Literal["auto", "on", "off"] = "auto"
    channels_last: bool = False
    # Worker processes keep freed host memory for reuse instead of returning it to the
    # system (glibc malloc: no mmap, no trim): no page faults between steps and images
    # (toonforge/worker/host_memory.py).
    keep_host_memory: bool = True
    # torch.compile of the denoiser after load (with a short warm-up run): off | default |
    # reduce-overhead | max-autotune.
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"
    # Loaded pipelines are kept between tasks, least recently used evicted past this budget.
    model_memory_budget_gb: float = 16.0
    # Memory plans (`toonforge models plan`, engine.plan): the device memory to plan for, in
    # GB of 2^30 bytes (unset: the CUDA device's free memory, or the host's on a CPU).
    gpu_memory_gb: float | None = Field(default=None, gt=0)
    # Force an offload strategy (auto | none | group | model | sequential) or a storage
    # format (auto | none | fp8 | gguf-q8_0 | gguf-q6_k | gguf-q5_k | gguf-q4_k | nf4) for
    # every tool; "auto" lets the planner choose (or the manifest's backend.offload /
    # backend.quantization, which these settings override).
    offload: Literal["auto", "none", "group", "model", "sequential"] = "auto"
    quantization: Literal[
        "auto", "none", "fp8", "gguf-q8_0", "gguf-q6_k", "gguf-q5_k", "gguf-q4_k", "nf4"
    ] = "auto"
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
    # Model affinity: a worker takes tasks of tools it has loaded before older tasks of
    # other tools, unless one of those has waited this long (0: strict first-in first-out).
    affinity_max_wait_seconds: float = 30.0
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 5.0
    max_attempts: int = 3
    # Batching: queued tasks of one tool that can share a denoising run (same size, steps,
    # scheduler, guidance ...; prompts and seeds may differ) are claimed together, up to this
    # many images per run (1: batching off). See README "Batching".
    max_batch: int = Field(default=8, ge=1)
    # How long a worker that claimed a batchable task waits for the next one to arrive,
    # restarted at each arrival (a burst fills a batch); a lone task never waits longer.
    batch_wait_ms: float = Field(default=50.0, ge=0)
    # WebSocket previews while sampling: while a subscriber asked for them, the worker makes
    # one every this many steps (each costs a latent-to-RGB map and a small WebP encode).
    preview_every_steps: int = 3
    # `serve` starts this many worker processes (0: API only; run `toonforge worker` apart);
    # `auto`: one per visible GPU (or per entry of `devices`).
    workers: int | Literal["auto"] = 1

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

    # Object storage (outputs, File/Upload uploads, private models): file:///folder (default:
    # DATA_DIR/outputs) or s3://bucket/prefix through boto3 (credentials and region from
    # boto3's usual environment variables and config files).
    storage_url: str = ""
    # Endpoint of an S3-compatible store (MinIO, R2, ...); empty: AWS S3.
    s3_endpoint_url: str = ""
    # Lifetime of the presigned URLs clients get for objects in S3 storage.
    storage_url_expiry_seconds: int = Field(default=3600, ge=1, le=604800)
    # Public or CDN base URL of the bucket's objects: clients get `<base>/<key>` instead of
    # presigned URLs.
    storage_public_url: str = ""
    # Outputs older than this are deleted ("7d", "12h", "30m", "3600s"; empty or "0": kept).
    output_retention: str = ""
    # How often an API process looks for expired outputs.
    retention_sweep_seconds: float = 60.0

    # Callbacks.
    callback_allow_private: bool = False
    callback_timeout_seconds: float = 10.0
    callback_max_attempts: int = 5
    callback_backoff_seconds: float = 2.0

    @field_validator("devices")
    @classmethod
    def _check_devices(cls, value: str) -> str:
        from toonforge.devices import parse_devices

        parse_devices(value)
        return value

    @field_validator("tool_devices")
    @classmethod
    def _check_tool_devices(cls, value: str) -> str:
        from toonforge.devices import Placement

        Placement.parse(value)
        return value

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

    @field_validator("output_retention")
    @classmethod
    def _check_retention(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def output_retention_seconds(self) -> float:
        """0 when outputs are kept for ever."""
        return parse_duration(self.output_retention)

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
