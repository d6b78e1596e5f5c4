"""Test and benchmark support shipped with the package: a signed client for any toonforge
server (in process or over HTTP), an in-process app on a database of its own, and
`toonforge serve` in a subprocess (`ServeProcess`).

`tests/` and `bench/` both import this, so a request is signed one way everywhere.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from toonforge.api.auth import signature_for
from toonforge.services import Services, build_services
from toonforge.settings import Settings, load_settings
from toonforge.tasks.projects import create_project

# The page's own slug, URL-encoded, and a CartoonMix job of a fraction of a second on the
# tiny stand-ins.
CARTOON = "futurist/CartoonMix%20v1.0"
SMALL = {
    "prompt": "a cat",
    "negativePrompt": "",
    "samples": 1,
    "steps": 3,
    "width": 64,
    "height": 64,
    "seed": "1",
}

_NONCES = itertools.count(int(time.time() * 1000) * 1000)


@dataclass
class Keys:
    apikey: str
    apisecret: str
    mode: str = "signature"
    projectid: int = 0
    webhooksecret: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Keys:
        return cls(
            apikey=str(data["apikey"]),
            apisecret=str(data["apisecret"]),
            mode=str(data.get("mode", "signature")),
            projectid=int(data.get("projectid", 0)),
            webhooksecret=str(data.get("webhooksecret", "")),
        )


def signed_headers(keys: Keys, nonce: str | None = None) -> dict[str, str]:
    """The three headers of the hosted service's signature scheme (key only in key mode)."""
    headers = {"x-api-key": keys.apikey}
    if keys.mode == "signature":
        nonce = nonce or str(next(_NONCES))
        headers["x-nonce"] = nonce
        headers["x-signature"] = signature_for(keys.apikey, keys.apisecret, nonce)
    return headers


class SignedClient:
    """Signs every request; `http` is any httpx.Client (real URL or an in-process app)."""

    def __init__(self, http: httpx.Client, keys: Keys) -> None:
        self.http = http
        self.keys = keys

    def post(self, path: str, body: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
        headers = {
            **signed_headers(self.keys),
            "Content-Type": "application/json",
            **kw.pop("headers", {}),
        }
        return self.http.post(path, content=json.dumps(body or {}), headers=headers, **kw)

    def ok(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST and require a successful envelope."""
        r = self.post(path, body)
        data = r.json()
        assert r.status_code == 200 and data["result"] is True, (r.status_code, data)
        return dict(data)


@dataclass
class InProcess:
    """The app in this process (Starlette's TestClient), its services and a signed client."""

    http: Any  # the TestClient
    services: Services
    keys: Keys
    client: SignedClient

    def project(self, mode: str = "signature", **opts: Any) -> SignedClient:
        """A signed client of another, new project."""
        return SignedClient(self.http, new_project(self.services, mode=mode, **opts))


@contextmanager
def fresh_postgres_database(admin_url: str, prefix: str = "toonforge_test") -> Iterator[str]:
    """A new, empty database on the PostgreSQL server `admin_url` reaches, dropped at the
    end (its URL is yielded). Connection errors are the caller's to handle."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    # No pool: the admin connection is closed between CREATE and DROP, so a session that keeps
    # many databases until its end does not hold a connection for each of them.
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def new_project(services: Services, *, mode: str = "signature", **opts: Any) -> Keys:
    with services.sessions() as session:
        creds = create_project(session, name=opts.pop("name", "test"), auth_mode=mode, **opts)
        session.commit()
    return Keys(creds.api_key, creds.api_secret, creds.auth_mode, creds.project_id)


def settings_for_test(
    data_dir: Path, database_url: str | None = None, **overrides: Any
) -> Settings:
    """Settings for a server of a test's own: its own data folder, offline mode (unless
    `tiny=False` is among the overrides)."""
    overrides.setdefault("tiny", True)
    return load_settings(data_dir=data_dir, database_url=database_url, **overrides)


@contextmanager
def in_process_app(settings: Settings, **app_options: Any) -> Iterator[tuple[Any, Services]]:
    """The ASGI app on Starlette's TestClient (lifespan run), with its services."""
    from fastapi.testclient import TestClient

    from toonforge.api.app import create_app

    services = build_services(settings)
    app = create_app(services, **app_options)
    try:
        with TestClient(app, base_url="http://testserver", raise_server_exceptions=False) as tc:
            yield tc, services
    finally:
        services.close()


# -- `toonforge serve` in a subprocess ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(data_dir: Path, database_url: str | None, **extra: str) -> dict[str, str]:
    """The environment of a toonforge process of a test's own: no TOONFORGE_ setting of the
    caller leaks in, offline mode, tiny weights shared through TOONFORGE_TEST_TINY_DIR."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOONFORGE_")}
    env.update(HF_HUB_OFFLINE="1", TOONFORGE_DATA_DIR=str(data_dir), TOONFORGE_TINY="true")
    # One API process (the default is two): tests start many servers, and serve's children
    # are then its workers only. Tests of several API processes set it themselves.
    env["TOONFORGE_API_PROCESSES"] = "1"
    # Tiny weights are built once per test run and shared by every server.
    if os.environ.get("TOONFORGE_TEST_TINY_DIR"):
        env["TOONFORGE_TINY_DIR"] = os.environ["TOONFORGE_TEST_TINY_DIR"]
    if database_url:
        env["TOONFORGE_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def create_keys(env: dict[str, str], mode: str = "signature", **opts: str) -> dict[str, Any]:
    """`toonforge keys create --json` in that environment (it migrates the database)."""
    cmd = [sys.executable, "-m", "toonforge", "keys", "create", "--json", "--mode", mode]
    for k, v in opts.items():
        cmd += [f"--{k.replace('_', '-')}", v]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


class ServeProcess:
    """`toonforge serve` in a subprocess (its own session), exactly as a user starts it; the
    output goes to `log_path` in the data folder."""

    def __init__(
        self,
        data_dir: Path,
        database_url: str | None = None,
        workers: int | str = 1,
        **extra_env: str,
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = base_env(
            data_dir,
            database_url,
            TOONFORGE_PORT=str(self.port),
            TOONFORGE_WORKERS=str(workers),
            **extra_env,
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"serve-{self.port}.log"
        self.keys: dict[str, Any] = {}

    def create_keys(self, mode: str = "signature", **opts: str) -> dict[str, Any]:
        """A new project on this server's database; the first one becomes `keys`."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        keys = create_keys(self.env, mode, **opts)
        self.keys = self.keys or keys
        return keys

    def start(self, timeout: float = 120) -> ServeProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "toonforge", "serve"],
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"server did not start in time: {self.log()[-3000:]}")

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then SIGKILL to the whole session after `timeout`; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL to serve and everything in its session (its workers)."""
        if self.proc is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def children(self) -> list[int]:
        """Process ids of serve's live children (its workers), read from /proc (Linux). Each
        thread has its own list: workers restarted by the supervisor thread are in its."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        pids: list[int] = []
        for path in Path(f"/proc/{self.proc.pid}/task").glob("*/children"):
            try:
                pids += [int(pid) for pid in path.read_text().split()]
            except OSError:  # the thread ended meanwhile
                continue
        return sorted(set(pids))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def spawn_worker(self, **extra_env: str) -> subprocess.Popen[bytes]:
        """A `toonforge worker` on this server's database (the caller stops it)."""
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "toonforge", "worker"],
                env={**self.env, **extra_env},
                stdout=log,
                stderr=log,
                start_new_session=True,
            )


# -- an S3 API server on loopback (moto's server mode) -----------------------------------------

# What boto3 reads in the tests' processes: moto accepts any credentials.
S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    """A real S3 API (moto's server) on a loopback port of its own."""

    endpoint: str

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=S3_TEST_ENV["AWS_DEFAULT_REGION"],
            aws_access_key_id=S3_TEST_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
        )

    def new_bucket(self) -> str:
        name = f"tf-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def env(self, bucket: str, prefix: str = "tf") -> dict[str, str]:
        """The environment of a toonforge process storing in `bucket` under `prefix`."""
        return {
            **S3_TEST_ENV,
            "TOONFORGE_STORAGE_URL": f"s3://{bucket}/{prefix}",
            "TOONFORGE_S3_ENDPOINT_URL": self.endpoint,
        }


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server in threads of this process, on a free loopback port, stopped after."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
