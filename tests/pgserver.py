"""A PostgreSQL server of a test's own: initdb into a temporary folder, its own free port on
127.0.0.1, trust authentication. A test may stop, start and restart it at will (an outage
of the database under a running toonforge) without touching the machine's shared server.

PostgreSQL refuses to run as root; when the tests run as root (CI), initdb and pg_ctl run
as the `postgres` user (`runuser`), in a folder that user owns.

    with PgServer() as pg:
        url = pg.url              # postgresql+psycopg://postgres@127.0.0.1:PORT/postgres
        pg.restart(down_seconds=3)
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType

from toonforge.testing import free_port

RUN_AS = "postgres"


def find_bindir() -> Path:
    """The newest installed PostgreSQL's binaries (`pg_ctl`, `initdb`): Debian's
    /usr/lib/postgresql/N/bin, else wherever `pg_ctl` is on the PATH."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", path.parent.name))

    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()]
    if candidates:
        return max(candidates, key=version)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin)")


def _as_postgres_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", RUN_AS, "--"]


def _stop_quietly(pg_ctl: Path, data: Path, prefix: list[str], root: Path) -> None:
    """Finalizer: stop the server (immediate) and remove its folder; never raises."""
    if (data / "postmaster.pid").exists():
        subprocess.run(
            [*prefix, str(pg_ctl), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
    shutil.rmtree(root, ignore_errors=True)


class PgServer:
    """One private PostgreSQL server; `close()` (or leaving the `with` block, or garbage
    collection, or interpreter exit) always stops it and removes its data folder."""

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="toonforge-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self._prefix = _as_postgres_user()
        if self._prefix:
            user = pwd.getpwnam(RUN_AS)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._finalizer = weakref.finalize(
            self, _stop_quietly, self.bindir / "pg_ctl", self.data, self._prefix, self.root
        )
        try:
            self._run(
                self.bindir / "initdb",
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
            self.start()
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the `postgres` database."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, program: Path, *args: str, timeout: float = 120) -> None:
        result = subprocess.run(
            [*self._prefix, str(program), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program.name} {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}\n{self.log()[-3000:]}"
            )

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            self.bindir / "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.logfile),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop it; `fast` disconnects every client at once, as a crash or a failover does
        from the clients' side."""
        self._run(self.bindir / "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop, stay down `down_seconds`, start again."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def running(self) -> bool:
        result = subprocess.run(
            [*self._prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def create_database(self, name: str) -> str:
        """A new database on this server; its URL."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url_for(name)

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> PgServer:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()
