"""ORM tables. Times are unix seconds (float); the API renders them as strings."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    api_key: Mapped[str] = mapped_column(String(64), unique=True)
    # Kept in clear: the signature scheme HMACs with the secret, so the server needs it.
    api_secret: Mapped[str] = mapped_column(String(128))
    auth_mode: Mapped[str] = mapped_column(String(16))  # "signature" | "key"
    allowed_ips: Mapped[str] = mapped_column(Text, default="*")  # comma separated, CIDR ok
    max_running_tasks: Mapped[int] = mapped_column(Integer, default=0)  # 0 = unlimited
    webhook_secret: Mapped[str] = mapped_column(String(128))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[float] = mapped_column(Float)


class RequestNonce(Base):
    """A state-changing signed request already served: the same nonce with the same method,
    path and body is refused as a replay (see api/auth.py)."""

    __tablename__ = "request_nonces"
    __table_args__ = (
        UniqueConstraint("project_id", "fingerprint", name="uq_request_nonce_project"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    # sha256 of nonce, method, path and body
    fingerprint: Mapped[str] = mapped_column(String(64))
    seen_at: Mapped[float] = mapped_column(Float, index=True)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_claim", "status", "id"),
        Index("ix_tasks_project", "project_id", "id"),
        # Tool/List's typical run time and Task/List's model filter.
        Index("ix_tasks_tool", "tool_key", "id"),
        # The batch claim: queued tasks that can share one denoising run.
        Index("ix_tasks_batch", "batch_key", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    socket_token: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    tool_key: Mapped[str] = mapped_column(String(300))  # "owner/slug"
    model_id: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    debugoutput: Mapped[str] = mapped_column(Text, default="")
    debugerror: Mapped[str] = mapped_column(Text, default="")
    pexit: Mapped[str] = mapped_column(String(16), default="")
    cps: Mapped[str] = mapped_column(String(32))
    totalcost: Mapped[str] = mapped_column(String(32), default="0")
    callback_url: Mapped[str] = mapped_column(Text, default="")

    createtime: Mapped[float] = mapped_column(Float)
    accepttime: Mapped[float | None] = mapped_column(Float)
    preprocessstarttime: Mapped[float | None] = mapped_column(Float)
    preprocessendtime: Mapped[float | None] = mapped_column(Float)
    assigntime: Mapped[float | None] = mapped_column(Float)
    starttime: Mapped[float | None] = mapped_column(Float)
    endtime: Mapped[float | None] = mapped_column(Float)
    postprocessstarttime: Mapped[float | None] = mapped_column(Float)
    postprocessendtime: Mapped[float | None] = mapped_column(Float)
    canceltime: Mapped[float | None] = mapped_column(Float)

    # Claim bookkeeping: which worker holds it, until when, and how often it was taken.
    worker_id: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    kill_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Tasks with the same key may be sampled in one batch (toonforge.catalog.batch_key).
    batch_key: Mapped[str | None] = mapped_column(String(64), default=None)
    files_deleted: Mapped[bool] = mapped_column(Boolean, default=False)

    outputs: Mapped[list[TaskOutput]] = relationship(
        back_populates="task", order_by="TaskOutput.position", lazy="selectin"
    )


class TaskEvent(Base):
    """Every state change and progress report, in order: the WebSocket replays these."""

    __tablename__ = "task_events"
    __table_args__ = (Index("ix_events_task", "task_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    message: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class TaskOutput(Base):
    __tablename__ = "task_outputs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    accesskey: Mapped[str] = mapped_column(String(64), unique=True)
    storage_key: Mapped[str] = mapped_column(String(500))
    # Indexed for the retention sweep (migration 0006).
    added_at: Mapped[float] = mapped_column(Float, index=True)

    task: Mapped[Task] = relationship(back_populates="outputs")


class CallbackDelivery(Base):
    """One callback to send for a terminal task; attempts are kept one row each."""

    __tablename__ = "callback_deliveries"
    # /metrics counts the pending ones (the settled ones are counted in task_metrics).
    __table_args__ = (Index("ix_callback_deliveries_state", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    msg_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed | refused
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float, index=True)
    locked_until: Mapped[float | None] = mapped_column(Float)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)


class CallbackAttempt(Base):
    __tablename__ = "callback_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("callback_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[float] = mapped_column(Float)
    status_code: Mapped[int | None] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str] = mapped_column(Text, default="")
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)


class PrivateModel(Base):
    """A base checkpoint a project registered itself (AnimateDiff's `selectedModelPrivate`).

    Only its own project sees it; the file is in the storage under `storage_key` (workers
    keep a copy in `<data>/private_models/<id>.safetensors`); "" for a model stored before
    object storage, whose file is only that copy on the API's host.
    """

    __tablename__ = "private_models"
    __table_args__ = (
        UniqueConstraint("project_id", "name", name="uq_private_model_name"),
        # Never reuse an id on SQLite: a task queued for a removed model must not run another.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    family: Mapped[str] = mapped_column(String(32))  # "sd15"
    file_name: Mapped[str] = mapped_column(String(255))  # as uploaded
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    storage_key: Mapped[str] = mapped_column(String(500), default="", server_default="")


class Upload(Base):
    """A file a project sent to File/Upload, for the file inputs of its runs.

    Only its own project can use it; it is stored in the outputs' storage under
    `storage_key` and served at /v1/File/{accesskey}/{name}."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    accesskey: Mapped[str] = mapped_column(String(64), unique=True)
    storage_key: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[float] = mapped_column(Float)


class TaskUpload(Base):
    """An upload used as an input of a task: Task/InputOutputDelete removes it."""

    __tablename__ = "task_uploads"

    task_id: Mapped[int] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    upload_id: Mapped[str] = mapped_column(
        ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class TaskPreview(Base):
    """The latest preview image of a running task, for WebSocket subscribers who asked.

    The API inserts the row when a subscriber sends `"previews": true` (its presence is what
    tells the worker to make previews); the worker overwrites `image` every few steps in its
    progress transaction and removes the row when the task ends. One row per task, a few
    kilobytes: the worker and the API may be on different hosts, so the image travels here."""

    __tablename__ = "task_previews"

    task_id: Mapped[int] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[int] = mapped_column(Integer, default=0)  # 0: no preview yet
    image: Mapped[str] = mapped_column(Text, default="")  # a data: URL
    requested_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float | None] = mapped_column(Float)


class WorkerRecord(Base):
    """A worker process as it last reported itself (tasks/workers.py): written by its
    heartbeat, so the API, `/readyz`, `/metrics` and `toonforge models status` see every
    worker on every host through the database alone."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # the claim's worker_id
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float, index=True)
    # Tool keys this worker can run (engine built, weights on its host).
    tools: Mapped[list[str]] = mapped_column(JSON)
    # What it holds in memory: [{"part", "bytes", "tools"}], least recently used first.
    loaded: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # idle | busy | stopped
    task_id: Mapped[int | None] = mapped_column(Integer)  # the task in hand when busy


class TaskMetric(Base):
    """Aggregates for `/metrics`, updated in the transaction that ends a task (or settles a
    callback), so a scrape reads a few hundred rows instead of scanning the tasks: one row
    per histogram bucket (`bucket` indexes the bounds in tasks/task_metrics.py; counters use
    bucket 0), holding how many observations fell in it and their sum."""

    __tablename__ = "task_metrics"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # duration | batch | callback
    tool_key: Mapped[str] = mapped_column(String(300), primary_key=True)  # "" for callbacks
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[float] = mapped_column(Float)
