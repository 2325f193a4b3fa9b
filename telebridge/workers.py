"""``telebridge serve --workers N``: N worker processes answering on one port, under a small supervisor.

The supervisor binds the port once and hands the listening socket to every worker (spawned, not forked: each
worker loads its own models and event loop). The kernel gives each new connection to whichever worker accepts it
first, so a busy worker naturally takes fewer, and a worker that dies loses no queued connection: the others
keep accepting. Each worker is a full telebridge server (:class:`~telebridge.server.DrainingServer`) with its
own call cap (``TELEBRIDGE_MAX_CALLS``).

Webhooks and media streams of one call may reach different workers, so workers share calls, stream outcomes,
status and AMD callbacks, voices and session tokens through Redis: more than one worker needs ``REDIS_URL``.

* **Signals.** The supervisor turns SIGTERM/SIGINT into one SIGTERM per worker: the first drains live calls (see
  :mod:`telebridge.server`), a second exits at once, a third kills. Workers run in their own process group, so a
  terminal's Ctrl-C reaches them only through the supervisor (once, not twice), and each watches its parent: a
  worker whose supervisor is gone (killed) drains and exits instead of lingering.
* **Crashes.** A worker that dies after it started serving is replaced (at most ``MAX_RESTARTS`` in
  ``RESTART_WINDOW`` seconds, else the whole server stops). One that dies before serving (a bad agent, a model
  that will not load) stops the whole server at once: every replacement would fail the same way.
* **Metrics.** ``PROMETHEUS_MULTIPROC_DIR`` is set for the workers (a fresh temporary directory unless it is set
  already, in which case it is emptied): any worker answering ``/metrics`` reports the sum of all of them.
"""

from __future__ import annotations

import glob
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from typing import Any

log = logging.getLogger("telebridge.workers")

MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
POLL = 0.2
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # as telebridge.metrics; not imported here (see _prepare_metrics_dir)


class WorkersError(Exception):
    """The workers cannot run (the port is taken, a worker failed to start); the message says why, in one line."""


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise WorkersError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def _prepare_metrics_dir() -> tuple[str, bool]:
    """The multiprocess metrics directory (emptied), and whether we created it (then we remove it at the end)."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.unlink(stale)
        return path, False
    path = tempfile.mkdtemp(prefix="telebridge-metrics-")
    os.environ[MULTIPROC_ENV] = path  # inherited by the spawned workers before they import prometheus_client
    return path, True


def _watch_parent(parent: int) -> None:
    """In a worker: once the supervisor is gone, drain and exit like on a deploy (SIGTERM to ourselves)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _thread_only_tqdm_lock() -> None:
    """faster-whisper draws a (disabled) tqdm bar per transcription, and tqdm's first bar creates a multiprocessing
    lock; in a spawned process that is a named semaphore the interpreter never unlinks at exit (the resource
    tracker then warns about it). A worker has no child processes: a thread lock is all tqdm needs."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return
    tqdm.set_lock(threading.RLock())


def worker_main(overrides: dict[str, Any], sock: socket.socket, ready: Any, parent: int) -> None:
    """One worker process: a full telebridge server on the shared socket; ``ready`` (a pipe's sending end) gets a
    byte once it serves."""
    try:
        os.setpgid(0, 0)  # Ctrl-C in a terminal reaches the supervisor only; it tells us
    except OSError:
        pass
    from .logs import configure_logging
    from .server import run_server
    from .settings import Settings, load_env_file

    load_env_file()
    _thread_only_tqdm_lock()
    settings = Settings(**overrides)
    configure_logging(settings.log_level, settings.log_format)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watch").start()
    started = run_server(settings, sockets=[sock], on_ready=lambda: ready.send_bytes(b"1"))
    sys.exit(0 if started else 3)


class _Worker:
    def __init__(self, ctx: Any, index: int, overrides: dict[str, Any], sock: socket.socket) -> None:
        self.index = index
        self._ready, child_end = ctx.Pipe(duplex=False)  # a pipe, not an Event: nothing for the tracker to leak
        self.started = False
        self.process = ctx.Process(target=worker_main, args=(overrides, sock, child_end, os.getpid()),
                                   name=f"telebridge-worker-{index}", daemon=False)
        self.process.start()
        child_end.close()

    @property
    def ready(self) -> bool:
        """Whether the worker has started serving (it said so on its pipe)."""
        if not self.started:
            try:
                self.started = self._ready.poll() and bool(self._ready.recv_bytes())
            except (EOFError, OSError):
                pass
        return self.started

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def signal(self, sig: int) -> None:
        if self.process.pid is not None and self.process.exitcode is None:
            try:
                os.kill(self.process.pid, sig)
            except ProcessLookupError:
                pass


class Supervisor:
    def __init__(self, overrides: dict[str, Any], host: str, port: int, workers: int) -> None:
        # Each worker knows it shares the cores with the others (Piper's idle session is off then).
        self.overrides = {**overrides, "workers": workers}
        self.host, self.port = host, port
        self.count = workers
        self.signals: deque[int] = deque()
        self.stopping = 0  # how many stop signals were passed on
        self.restarts: deque[float] = deque()

    def _on_signal(self, sig: int, _frame: Any) -> None:
        self.signals.append(sig)

    def run(self) -> int:
        sock = bind(self.host, self.port)
        metrics_dir, own_dir = _prepare_metrics_dir()
        multiprocessing.allow_connection_pickling()
        ctx = multiprocessing.get_context("spawn")
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        workers: list[_Worker] = []
        failure: str | None = None
        try:
            workers = [_Worker(ctx, i, self.overrides, sock) for i in range(self.count)]
            log.info("telebridge: %d workers on %s:%d (supervisor pid %d)", self.count, self.host, self.port,
                     os.getpid())
            while True:
                while self.signals:
                    self.signals.popleft()
                    self._stop(workers)
                if self.stopping and not any(w.alive for w in workers):
                    break
                if not self.stopping:
                    failure = self._keep_alive(ctx, workers, sock)
                    if failure is not None:
                        self._stop(workers)
                time.sleep(POLL)
        finally:
            for w in workers:  # never leave a worker behind, whatever happened above
                if w.alive:
                    w.signal(signal.SIGKILL)
                w.process.join(timeout=5)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            sock.close()
            if own_dir:
                shutil.rmtree(metrics_dir, ignore_errors=True)
        if failure is not None:
            raise WorkersError(failure)
        log.info("telebridge: all workers stopped")
        return 0

    def _stop(self, workers: list[_Worker]) -> None:
        """First time: every worker drains (SIGTERM). Second: they exit now (SIGTERM again). Third: SIGKILL."""
        self.stopping += 1
        sig = signal.SIGKILL if self.stopping >= 3 else signal.SIGTERM
        if self.stopping == 1:
            log.warning("stopping: workers finish their live calls (TELEBRIDGE_DRAIN_TIMEOUT), then exit")
        for w in workers:
            w.signal(sig)

    def _keep_alive(self, ctx: Any, workers: list[_Worker], sock: socket.socket) -> str | None:
        for i, w in enumerate(workers):
            if w.alive:
                continue
            code = w.process.exitcode
            if not w.ready:
                return f"worker {w.index} failed to start (exit code {code}); see the log above"
            now = time.monotonic()
            while self.restarts and now - self.restarts[0] > RESTART_WINDOW:
                self.restarts.popleft()
            if len(self.restarts) >= MAX_RESTARTS:
                return f"workers keep dying ({MAX_RESTARTS} restarts within {RESTART_WINDOW:.0f} s); stopping"
            self.restarts.append(now)
            log.error("worker %d (pid %s) died with exit code %s: starting a new one", w.index, w.process.pid, code)
            workers[i] = _Worker(ctx, w.index, self.overrides, sock)
        return None
