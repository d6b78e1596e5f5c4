"""`toonforge serve`, `toonforge worker`, `toonforge db upgrade`."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import threading
import time

from sqlalchemy import func, select

from toonforge.cli.common import settings_from_args
from toonforge.cli.keys_cmd import print_credentials
from toonforge.services import Services, build_services
from toonforge.settings import Settings
from toonforge.tasks.migrate import upgrade
from toonforge.tasks.models import Project
from toonforge.tasks.projects import create_project

log = logging.getLogger("toonforge")

OFFLINE_BANNER = (
    "OFFLINE MODE: every tool runs on tiny stand-in weights built by toonforge "
    "(outputs prove the pipeline, not the real models' pictures)"
)


def _first_project(services: Services) -> None:
    """On an empty database, make a project and print its credentials once."""
    with services.sessions() as session:
        if session.scalar(select(func.count(Project.id))):
            return
        creds = create_project(
            session,
            name="default",
            max_running_tasks=services.settings.default_max_running_tasks,
        )
        session.commit()
    print("No project existed, so one was created:")
    print_credentials(creds)
    sys.stdout.flush()


SUPERVISOR_ENV = "TOONFORGE_SUPERVISOR_PID"


class WorkerSupervisor:
    """Keeps N worker processes alive beside the API; a crashed worker is restarted."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.procs: list[subprocess.Popen[bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="workers", daemon=True)

    def _spawn(self) -> subprocess.Popen[bytes]:
        # The worker stops (handing its task back) if this process dies without stopping it.
        env = {**os.environ, SUPERVISOR_ENV: str(os.getpid())}
        return subprocess.Popen([sys.executable, "-m", "toonforge", "worker"], env=env)

    def start(self) -> None:
        self.procs = [self._spawn() for _ in range(self.count)]
        self._thread.start()

    def _watch(self) -> None:
        # A worker that dies at once (bad device setting, broken install) is restarted with
        # a growing delay instead of a tight loop; one that ran a while restarts at once.
        started = [time.monotonic()] * len(self.procs)
        failures = [0] * len(self.procs)
        due = [0.0] * len(self.procs)
        while not self._stop.wait(0.5):
            now = time.monotonic()
            for i, proc in enumerate(self.procs):
                code = proc.poll()
                if code is None or self._stop.is_set():
                    continue
                if due[i] == 0.0:
                    failures[i] = failures[i] + 1 if now - started[i] < 30 else 1
                    delay = min(60.0, 2.0 ** (failures[i] - 1))
                    due[i] = now + delay
                    log.warning(
                        "worker process %s exited with %s; restarting in %.0fs",
                        proc.pid,
                        code,
                        delay,
                    )
                elif now >= due[i]:
                    due[i] = 0.0
                    started[i] = now
                    self.procs[i] = self._spawn()

    def stop(self, grace: float = 15.0) -> None:
        self._stop.set()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + grace
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from toonforge.api.app import create_app

    settings = settings_from_args(args)
    if settings.tiny:
        log.warning(OFFLINE_BANNER)
    services = build_services(settings)
    _first_project(services)
    supervisor = WorkerSupervisor(settings.workers)
    supervisor.start()
    log.info(
        "toonforge API on %s (socket %s/v1/socket), data in %s, %d worker(s)",
        settings.resolved_public_url,
        settings.resolved_public_url.replace("http", "ws", 1),
        settings.data_dir,
        settings.workers,
    )
    try:
        config = uvicorn.Config(
            create_app(services), host=settings.host, port=settings.port, log_level="info"
        )
        uvicorn.Server(config).run()
    finally:
        supervisor.stop()
        services.close()
    return 0


def run_worker(settings: Settings) -> int:
    from toonforge.engine.runtime import EngineRuntime
    from toonforge.worker.main import Worker, install_signal_handlers

    if settings.tiny:
        log.warning(OFFLINE_BANNER)
    services = build_services(settings)
    worker = Worker(services, EngineRuntime(settings))
    install_signal_handlers(worker)
    _stop_with_supervisor(worker.stopping)
    worker.run_forever()
    services.close()
    return 0


def _stop_with_supervisor(stopping: threading.Event) -> None:
    """A worker started by `serve` stops when `serve` is gone (killed with SIGKILL, say)
    instead of running on as an orphan: it finishes or hands back its task and exits."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor or not supervisor.isdigit():
        return

    def watch() -> None:
        while not stopping.wait(1.0):
            if os.getppid() != int(supervisor):
                log.warning("serve (pid %s) is gone: this worker stops", supervisor)
                stopping.set()
                return

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def worker(args: argparse.Namespace) -> int:
    return run_worker(settings_from_args(args))


def db_upgrade(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    upgrade(settings.resolved_database_url)
    print("database is up to date")
    return 0
