"""`toonforge serve`, `toonforge worker`, `toonforge db upgrade`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from sqlalchemy import func, select

from toonforge.cli.common import settings_from_args
from toonforge.cli.keys_cmd import print_credentials
from toonforge.devices import parse_devices, visible_gpu_count, worker_devices
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


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
SHUTDOWN_GRACE_SECONDS = 5


class _Stopped(Exception):
    """SIGTERM or SIGINT outside uvicorn's run."""


def _raise_stopped(_sig: int, _frame: FrameType | None) -> None:
    raise _Stopped


SUPERVISOR_ENV = "TOONFORGE_SUPERVISOR_PID"
# The worker writes one byte to this inherited pipe once it is ready to claim tasks.
READY_FD_ENV = "TOONFORGE_READY_FD"
WATCH_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 60.0


@dataclass
class _Slot:
    """One worker place: its current process and what the supervisor knows of it."""

    proc: subprocess.Popen[bytes]
    ready_fd: int | None  # read end of the readiness pipe, until the worker is ready or gone
    device: str  # what its TOONFORGE_DEVICE says (`auto`, `cpu`, `cuda:1`, ...)
    ready: bool = False
    failures: int = 0  # start-up failures in a row (deaths before readiness)
    due: float = 0.0  # when a dead worker is restarted (0: not dead)


class WorkerSupervisor:
    """Keeps N worker processes alive beside the API.

    A worker tells the supervisor it is ready through a pipe it inherits (one byte once it
    claims tasks). A worker that dies after that is restarted at once; one that dies before
    (bad device setting, broken install) is restarted with a growing delay, 1 s doubling up
    to a minute, instead of a tight loop.
    """

    def __init__(self, devices: list[str]) -> None:
        # One worker per entry, started with TOONFORGE_DEVICE set to it.
        self.devices = devices
        self.slots: list[_Slot] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._watch, name="workers", daemon=True)

    @property
    def procs(self) -> list[subprocess.Popen[bytes]]:
        return [slot.proc for slot in self.slots]

    def _spawn(self, device: str) -> tuple[subprocess.Popen[bytes], int]:
        read_fd, write_fd = os.pipe()
        # The worker stops (handing its task back) if this process dies without stopping it.
        env = {
            **os.environ,
            SUPERVISOR_ENV: str(os.getpid()),
            READY_FD_ENV: str(write_fd),
            "TOONFORGE_DEVICE": device,
        }
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "toonforge", "worker"], env=env, pass_fds=(write_fd,)
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        return proc, read_fd

    def start(self) -> None:
        for device in self.devices:
            proc, fd = self._spawn(device)
            self.slots.append(_Slot(proc, fd, device))
        self._thread.start()

    def _poll_ready(self, slot: _Slot) -> None:
        if slot.ready_fd is None:
            return
        try:
            data = os.read(slot.ready_fd, 1)
        except BlockingIOError:
            return  # not ready yet, still running
        except OSError:
            data = b""
        if data:
            slot.ready = True
            slot.failures = 0
        # Ready, or the pipe closed (the worker exited before it was ready).
        os.close(slot.ready_fd)
        slot.ready_fd = None

    def _check(self, slot: _Slot, now: float) -> None:
        self._poll_ready(slot)
        code = slot.proc.poll()
        if code is None:
            return
        if slot.due == 0.0:
            self._poll_ready(slot)  # a byte written just before it died still counts
            if slot.ready:
                delay = 0.0
                log.warning(
                    "worker process %s exited with %s; restarting it now", slot.proc.pid, code
                )
            else:
                slot.failures += 1
                delay = min(MAX_BACKOFF_SECONDS, 2.0 ** (slot.failures - 1))
                log.warning(
                    "worker process %s exited with %s before it was ready (%d time(s) in a "
                    "row); restarting in %.0fs",
                    slot.proc.pid,
                    code,
                    slot.failures,
                    delay,
                )
            slot.due = now + delay
        if now >= slot.due:
            proc, fd = self._spawn(slot.device)
            slot.proc, slot.ready_fd, slot.ready, slot.due = proc, fd, False, 0.0

    def _watch(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                for slot in self.slots:
                    if self._stop.is_set():
                        break
                    try:
                        self._check(slot, now)
                    except OSError:  # no more processes or file descriptors: try again
                        log.exception("restarting a worker failed")
            self._stop.wait(WATCH_SECONDS)

    def stop(self, grace: float = 15.0) -> None:
        """Ask every worker to stop (each hands its running task back), wait for them, kill
        those that take longer than `grace`. Safe to call twice and from two threads."""
        self._stop.set()
        with self._lock:  # no restart can start after this
            if self._stopped:
                return
            self._stopped = True
            for slot in self.slots:
                if slot.proc.poll() is None:
                    slot.proc.terminate()
            deadline = time.monotonic() + grace
            for slot in self.slots:
                try:
                    slot.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("worker process %s did not stop in time: killed", slot.proc.pid)
                    slot.proc.kill()
                    slot.proc.wait()
                if slot.ready_fd is not None:
                    os.close(slot.ready_fd)
                    slot.ready_fd = None


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server with serve's own signal handling: SIGTERM and SIGINT call
        `on_signal` (which starts stopping the workers) and end `run()` normally instead of
        being raised again afterwards (uvicorn's own behaviour, which would kill the process
        before serve's shutdown runs)."""

        def __init__(self, config: uvicorn.Config, on_signal: Callable[[int], None]) -> None:
            super().__init__(config)
            self._on_signal = on_signal

        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            original = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            self._on_signal(sig)
            super().handle_exit(sig, frame)

    return Server


def _worker_devices(settings: Settings) -> list[str]:
    """The device of each worker to start (see toonforge/devices.py)."""
    devices = parse_devices(settings.devices)
    # Counting GPUs costs a torch import in a child process: only when the answer matters.
    spread = settings.workers == "auto" or (
        settings.workers not in (0, 1) and settings.device in ("auto", "cuda")
    )
    gpus = visible_gpu_count() if spread and not devices else 0
    return worker_devices(settings.workers, devices, gpus, settings.device)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from toonforge.api.app import create_app

    settings = settings_from_args(args)
    if settings.tiny:
        log.warning(OFFLINE_BANNER)
    # Until uvicorn takes over the signals (and after it gives them back), SIGTERM and SIGINT
    # raise `_Stopped`, so the `finally` below stops the workers whatever the moment.
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stopped)
    services: Services | None = None
    supervisor = WorkerSupervisor(_worker_devices(settings))
    try:
        services = build_services(settings)
        _first_project(services)
        supervisor.start()
        log.info(
            "toonforge API on %s (socket %s/v1/socket), data in %s, files in %r, %d worker(s)%s",
            settings.resolved_public_url,
            settings.resolved_public_url.replace("http", "ws", 1),
            settings.data_dir,
            services.storage,
            len(supervisor.devices),
            f" on {', '.join(supervisor.devices)}" if supervisor.devices else "",
        )
        trusted = settings.trusted_proxy_list
        several = settings.api_processes > 1
        if several:
            # Each API process counts its requests in this folder; /metrics adds them up.
            from toonforge.ops.metrics import prepare_multiprocess

            prepare_multiprocess(settings)
        # JSON logs: uvicorn's loggers go through toonforge's handler (no config of theirs).
        logging_config = {"log_config": None} if settings.log_format == "json" else {}
        config = uvicorn.Config(
            # Several API processes each build their own app (and services) from the
            # environment this process passes on; one runs in this process.
            "toonforge.api.app:create_app_from_env" if several else create_app(services),
            factory=several,
            workers=settings.api_processes if several else None,
            host=settings.host,
            port=settings.port,
            log_level="info",
            access_log=settings.access_log,
            # X-Forwarded-For/-Proto are believed only from the configured proxies: from
            # anyone else they would let a caller pick the address the allow-list checks.
            proxy_headers=bool(trusted),
            forwarded_allow_ips=trusted,
            # Open connections (WebSockets) get this long to finish once asked to stop.
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
            **logging_config,
        )

        def on_signal(sig: int) -> None:
            log.info("serve: signal %d, stopping (running tasks are handed back)", sig)
            # The workers hand their tasks back while uvicorn closes its connections.
            threading.Thread(target=supervisor.stop, name="stop-workers", daemon=True).start()

        if several:
            _run_api_processes(config)
        else:
            _server_class()(config, on_signal).run()
    except _Stopped:
        log.info("serve: stopped before the API was up")
    finally:
        # A second signal during shutdown must not cut it short.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        supervisor.stop()
        if services is not None:
            services.close()
        log.info("serve: stopped")
    _exit_without_stuck_threads()
    return 0


def _run_api_processes(config: object) -> None:
    """`TOONFORGE_API_PROCESSES` API processes sharing one listening socket (uvicorn's own
    supervisor: it restarts a process that dies, and on SIGTERM/SIGINT stops them all and
    returns, after which serve's own shutdown stops the workers)."""
    from uvicorn import Config
    from uvicorn.supervisors import Multiprocess

    assert isinstance(config, Config)
    sock = config.bind_socket()
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()


def _exit_without_stuck_threads() -> None:
    """Request threads still blocked (on a database that does not answer, say) would hold
    the interpreter's exit for as long as they wait: serve's own shutdown is done by now,
    so exit at once (their transactions are never committed)."""
    stuck = [
        t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon
    ]
    if not stuck:
        return
    log.warning("serve: %d request thread(s) still busy; exiting without them", len(stuck))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_worker(settings: Settings) -> int:
    from toonforge.engine.runtime import EngineRuntime
    from toonforge.worker.host_memory import keep_freed_host_memory
    from toonforge.worker.main import Worker, install_signal_handlers

    if settings.log_format == "json":
        from toonforge.ops.logging import adopt_model_library_logs

        adopt_model_library_logs()

    if settings.tiny:
        log.warning(OFFLINE_BANNER)
    if settings.keep_host_memory:
        keep_freed_host_memory()
    services = build_services(settings)
    worker = Worker(services, EngineRuntime(settings))
    install_signal_handlers(worker)
    _stop_with_supervisor(worker.stopping)
    worker.run_forever(on_ready=_tell_supervisor_ready)
    services.close()
    return 0


def _tell_supervisor_ready() -> None:
    """Write the byte `serve` waits for on the pipe it gave this worker (if any)."""
    fd = os.environ.pop(READY_FD_ENV, "")
    if not fd.isdigit():
        return
    try:
        os.write(int(fd), b"1")
        os.close(int(fd))
    except OSError:  # serve is gone or the descriptor is not ours: nothing to tell
        log.debug("could not signal readiness on fd %s", fd)


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
