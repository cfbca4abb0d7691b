"""The watchdog: restarts a Tornado instance that stops answering, or that grows too big.

A thread of supervisord's own process (PID 1; tornado_bundle/fail_fast.py starts it), so it costs
no process of its own. Once a second it asks every instance that Supervisor has RUNNING for
/healthz on its own 127.0.0.1 port (1 s timeout each, all at once):

- An instance is judged only once it has started: it imports and sets up the app, and listens
  only then (so nginx sends it nothing before); until its port accepts a connection it has
  STARTUP_TIMEOUT seconds.
- An instance that has not answered for WATCHDOG_TIMEOUT seconds (a handler blocking the event
  loop, a process stuck in C code or SIGSTOP'd), or not within STARTUP_TIMEOUT of its start,
  gets SIGUSR1, which makes it write the stacks of its threads to the log (faulthandler, set up
  by the runner), then SIGKILL half a second later: a hung process ignores SIGTERM, and a drain
  would only wait for it. Supervisor starts a new one (autorestart); nginx retries the GETs
  caught on the dead one on another instance. An instance that exits before it ever listened is
  a failed start (tornado_bundle/fail_fast.py counts them: two in a row stop the container).
- An instance whose resident memory is above INSTANCE_MAX_MEMORY gets SIGTERM: it drains, exits,
  and Supervisor starts a new one; one instance at a time.
- /tmp/tornado-bundle/unresponsive lists the instances that have not answered for longer than
  WATCHDOG_TIMEOUT (10 s when it is 0: restarts off, the report stays); the image's HEALTHCHECK
  is unhealthy while it lists one, or when it is older than a few seconds.

superlance's httpok and memmon (Supervisor's own event listeners for this) were the first
choice: httpok checks on TICK events (every 5 s at best) and restarts through a SIGTERM stop, so
a hung instance would be found 10-15 s after it hangs and killed only stopwaitsecs later; memmon
logs a line per process at every tick; each is one more Python process (~10 MB).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tornado_bundle import logs
from tornado_bundle.files import write_atomically
from tornado_bundle.names import (
    HEALTH_PATH,
    LISTEN_ADDRESS,
    UNRESPONSIVE_FILE,
    instance_name,
)
from tornado_bundle.settings import Settings

PROGRAM = "watchdog"
# The report the HEALTHCHECK reads.
REPORT = UNRESPONSIVE_FILE
PERIOD = 1.0
PROBE_TIMEOUT = 1.0
# Unresponsive instances are reported after this long when restarts are off.
REPORT_AFTER_WHEN_OFF = 10.0
# Between the stack dump (SIGUSR1) and SIGKILL: time for faulthandler to write.
DUMP_SECONDS = 0.5


class Log:
    """The watchdog's lines, in the container's format; through PID 1's relay (stdout, like
    supervisord's own lines, so that docker logs keeps them in order, and never a blocking
    write), or straight to stdout where there is none (tests)."""

    json_lines = False
    relay: logs.Relay | None = None

    def __call__(self, message: str, level: str = "warning") -> None:
        if self.relay is not None:
            self.relay.own(PROGRAM, level, message)
        else:
            logs.emit(PROGRAM, level, message, self.json_lines)


log = Log()


@dataclass(frozen=True)
class Probe:
    # The port accepted a connection: the instance has loaded its app (it listens only then),
    # even if its loop is blocked now (the kernel accepts into the listen queue).
    listening: bool
    # GET /healthz answered 200 in time.
    answered: bool


def probe(port: int, timeout: float = PROBE_TIMEOUT) -> Probe:
    """GET /healthz on the instance's own port, within `timeout`."""
    request = f"GET {HEALTH_PATH} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode()
    try:
        connection = socket.create_connection((LISTEN_ADDRESS, port), timeout=timeout)
    except OSError:
        return Probe(listening=False, answered=False)
    try:
        with connection:
            connection.settimeout(timeout)
            connection.sendall(request)
            status_line = connection.recv(64).split(b"\r\n", 1)[0]
    except OSError:
        return Probe(listening=True, answered=False)
    ok = status_line.startswith(b"HTTP/1.") and status_line[9:12] == b"200"
    return Probe(listening=True, answered=ok)


def resident_bytes(pid: int) -> int:
    """VmRSS of a process, 0 when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Instance:
    name: str
    port: int
    pid: int = 0
    # When this pid last answered (or was first seen RUNNING).
    last_answer: float = 0.0
    # Whether this pid has listened at all (its app is loaded): until then STARTUP_TIMEOUT
    # applies, not WATCHDOG_TIMEOUT.
    started: bool = False
    # When the instance (any pid) last answered: what the health report uses.
    healthy_at: float | None = None


class Watchdog:
    """`running()` gives Supervisor's RUNNING instances (name -> pid); `active()` is False once
    supervisord shuts down (then the watchdog leaves every process alone)."""

    def __init__(
        self,
        settings: Settings,
        ports: list[int],
        running: Callable[[], dict[str, int]],
        active: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.running = running
        self.active = active
        self.instances = {
            instance_name(port): Instance(instance_name(port), port) for port in ports
        }
        self.pool = ThreadPoolExecutor(max_workers=max(len(ports), 1))
        # The instance (name, old pid) restarted for its memory, until its successor answers.
        self.replacing: tuple[str, int] | None = None
        # Every pid that has listened and not yet exited (fail_fast asks, as it exits).
        self.started_pids: set[int] = set()

    def has_started(self, pid: int) -> bool:
        """Whether this process ever listened on its port (read from supervisord's loop)."""
        return pid in self.started_pids

    def forget(self, pid: int) -> None:
        self.started_pids.discard(pid)

    def check(self, now: float) -> None:
        for instance in self.instances.values():
            if instance.healthy_at is None:
                instance.healthy_at = now
        running = self.running()
        probed = [self.instances[name] for name in running if name in self.instances]
        results = list(self.pool.map(lambda instance: probe(instance.port), probed))
        for instance, result in zip(probed, results, strict=True):
            if running[instance.name] != instance.pid:
                # A new process: it gets its own WATCHDOG_TIMEOUT from now.
                instance.pid = running[instance.name]
                instance.last_answer = now
                instance.started = False
            if result.listening and not instance.started:
                # Started: from now on WATCHDOG_TIMEOUT, counted from here.
                instance.started = True
                instance.last_answer = now
                self.started_pids.add(instance.pid)
            if result.answered:
                instance.last_answer = instance.healthy_at = now
                replaced = self.replacing
                if replaced and replaced[0] == instance.name and replaced[1] != instance.pid:
                    self.replacing = None
        for name, instance in self.instances.items():
            if name not in running:
                # Stopped on purpose or restarting: Supervisor owns it, the report does not.
                instance.healthy_at = now
        self.report(now)
        for instance in probed:
            if self.active():
                self.act(instance, now)

    def act(self, instance: Instance, now: float) -> None:
        silent = now - instance.last_answer
        if not instance.started:
            if silent >= self.settings.startup_timeout:
                self.kill(instance, silent, f"STARTUP_TIMEOUT={self.settings.startup_timeout}s")
            return
        if self.settings.watchdog_timeout and silent >= self.settings.watchdog_timeout:
            self.kill(instance, silent, f"WATCHDOG_TIMEOUT={self.settings.watchdog_timeout}s")
            return
        limit = self.settings.instance_max_memory
        if limit is not None and self.replacing is None:
            size = resident_bytes(instance.pid)
            if size > limit:
                self.restart_gracefully(instance, size, limit)

    def kill(self, instance: Instance, silent: float, limit: str) -> None:
        why = (
            "its event loop is blocked or the process is stuck"
            if instance.started
            else "it has not finished loading its app since it started"
        )
        log(
            f"{instance.name} (pid {instance.pid}) has not answered {HEALTH_PATH} for "
            f"{silent:.1f}s ({limit}): {why}; its stacks follow, then it is killed and "
            "Supervisor starts a new one"
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(instance.pid, signal.SIGUSR1)
            time.sleep(DUMP_SECONDS)
            os.kill(instance.pid, signal.SIGKILL)
        # Not again for this pid: the next one gets its own WATCHDOG_TIMEOUT to answer.
        instance.last_answer = float("inf")

    def restart_gracefully(self, instance: Instance, size: int, limit: int) -> None:
        log(
            f"{instance.name} (pid {instance.pid}) uses {size / 2**20:.0f} MiB, above "
            f"INSTANCE_MAX_MEMORY={limit / 2**20:.0f}m; restarting it gracefully (drain)"
        )
        self.replacing = (instance.name, instance.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(instance.pid, signal.SIGTERM)

    def report(self, now: float) -> None:
        lines = []
        for name, instance in self.instances.items():
            silent = now - (now if instance.healthy_at is None else instance.healthy_at)
            # A starting instance is not reported before its STARTUP_TIMEOUT.
            after = (
                self.settings.watchdog_timeout or REPORT_AFTER_WHEN_OFF
                if instance.started
                else self.settings.startup_timeout
            )
            if silent > after:
                lines.append(f"{name} {silent:.1f}\n")
        write_atomically(REPORT, "".join(lines))

    def run_forever(self) -> None:
        while self.active():
            started = time.monotonic()
            try:
                self.check(started)
            except Exception as error:  # noqa: BLE001 - the loop must go on; the log says why
                log(f"error: {type(error).__name__}: {error}", "error")
            time.sleep(max(0.0, PERIOD - (time.monotonic() - started)))


def start(
    settings: Settings,
    running: Callable[[], dict[str, int]],
    active: Callable[[], bool],
) -> Watchdog:
    """Starts the watchdog thread for the instances of these settings; returns the watchdog."""
    log.json_lines = settings.log_format == "json"
    ports = list(settings.ports)
    timeout = settings.watchdog_timeout
    mode = f"restarts after {timeout}s" if timeout else "restarts off"
    memory = settings.instance_max_memory
    limit = f"{memory / 2**20:.0f} MiB" if memory else "off"
    start = f"{settings.startup_timeout}s to start"
    log(f"watching {len(ports)} instance(s): {start}, {mode}, memory limit {limit}", "info")
    watchdog = Watchdog(settings, ports, running, active)
    thread = threading.Thread(target=watchdog.run_forever, name=PROGRAM, daemon=True)
    thread.start()
    return watchdog
