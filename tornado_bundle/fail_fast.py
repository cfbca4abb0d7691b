"""supervisord, but a process that cannot stay up stops the container with exit code 1.

It also starts the programs at once instead of after supervisord's first 1 s poll.

Plain supervisord keeps running when a program gives up (FATAL after startretries), so the
container looks alive while serving nothing; and when it does shut down it always exits 0, so
`--restart on-failure` and orchestrators never see a failure. This runs supervisord in this very
process (PID 1 in the container): on the first PROCESS_STATE_FATAL, or the third unexpected exit
in a row that comes within 15 s of the process's start (a crash loop that Supervisor's 1 s
startsecs misses on a busy machine), it logs which process failed, shuts down like on SIGTERM
(the others stop gracefully), then exits 1. A manual `supervisorctl stop` is neither, and does
not stop the container. It also runs the watchdog thread (tornado_bundle/watchdog.py), relays the
programs' output (tornado_bundle/logs.py) and serves the metrics (tornado_bundle/metrics.py).

Usage: supervisord-fail-fast [supervisord options], e.g. -c /etc/supervisor/supervisord.conf
(container/bin/supervisord-fail-fast runs `python -m tornado_bundle.fail_fast`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from typing import Any

from supervisor import events, loggers, supervisord
from supervisor.states import ProcessStates, SupervisorStates

from tornado_bundle import logs, settings, watchdog
from tornado_bundle.names import GROUP

PROGRAM = "supervisord-fail-fast"
# Supervisor counts a start as failed only when the process exits within startsecs (1 s); on a
# busy machine, or with an app that takes long to import, a process that can never start lives
# longer than that and is restarted forever. An unexpected exit this soon after its start counts
# as a failed start too; this many of them in a row are a crash loop.
QUICK_EXIT_SECONDS = 15.0
QUICK_EXITS = 3
# An instance's start attempts: Supervisor's first and its startretries (1, supervisord.conf).
FAILED_STARTS = 2


def full_name(process_name: str, group_name: str) -> str:
    return process_name if group_name == process_name else f"{group_name}:{process_name}"


def describe(process_name: str, group_name: str) -> str:
    return (
        f"{full_name(process_name, group_name)} entered FATAL: it exited too quickly on each of "
        "its start attempts (its own last lines above say why)"
    )


class FailFastSupervisor(supervisord.Supervisor):
    failure: str | None = None
    # What the start hook wrote, and the writer of the container's output (main() makes both
    # before supervisord starts).
    bundle: settings.Settings
    relay: logs.Relay

    def runforever(self) -> None:
        # Process name -> how many unexpected exits in a row came soon after a start.
        self.quick_exits: dict[str, int] = {}
        # Instance name -> how many exits in a row came before the instance ever listened.
        self.failed_starts: dict[str, int] = {}
        # Process name -> how many times it was started (the metrics' restarts).
        self.starts: dict[str, int] = {}
        events.subscribe(events.ProcessStateStartingEvent, self.on_starting)
        # Subscribed here because Supervisor.run() clears every subscription before it starts.
        events.subscribe(events.ProcessStateFatalEvent, self.on_fatal)
        events.subscribe(events.ProcessStateExitedEvent, self.on_exited)
        events.subscribe(events.SupervisorStoppingEvent, self.on_stopping)
        self.relay_output()
        # Before any instance runs: it is the one that knows whether an exiting one had started.
        self.start_watchdog()
        # supervisord's loop first waits up to 1 s for I/O, and only then spawns the programs:
        # spawn them now (in priority order, as the loop would), which takes ~1 s off every
        # container start.
        for group in sorted(self.process_groups.values()):
            group.transition()
        self.start_metrics()
        super().runforever()

    def relay_output(self) -> None:
        """Each program's output (also in its file in /tmp/log) to the container's output."""
        relay = self.relay

        def on_output(event: events.ProcessLogEvent) -> None:
            fd = 1 if isinstance(event, events.ProcessLogStdoutEvent) else 2
            relay.output(event.process.config.name, fd, event.data)

        events.subscribe(events.ProcessLogEvent, on_output)

    def start_metrics(self) -> None:
        port = self.bundle.metrics_port
        if port:
            # Imported only when on: prometheus_client costs PID 1 a few MB.
            from tornado_bundle import metrics

            address = self.bundle.metrics_address
            try:
                metrics.start(address, port, self.process_states, lambda: self.relay.dropped)
            except OSError as error:
                self.fail(f"METRICS_PORT={port}: cannot listen on {address}: {error.strerror}")

    def process_states(self) -> list[tuple[str, bool, float, int]]:
        """(name, running, seconds since its start, starts) of every program's processes."""
        now = time.time()
        states = []
        for group in list(self.process_groups.values()):
            for process in list(group.processes.values()):
                name = full_name(process.config.name, group.config.name)
                running = process.get_state() == ProcessStates.RUNNING
                uptime = now - process.laststart if running and process.laststart else 0.0
                states.append((name, running, uptime, self.starts.get(name, 0)))
        return states

    def on_starting(self, event: events.ProcessStateStartingEvent) -> None:
        process = event.process
        name = full_name(process.config.name, process.group.config.name)
        self.starts[name] = self.starts.get(name, 0) + 1

    def start_watchdog(self) -> None:
        watchdog.log.relay = self.relay
        self.watchdog = watchdog.start(self.bundle, self.running_instances, self.is_running)

    def running_instances(self) -> dict[str, int]:
        """Supervisor's RUNNING Tornado instances, name -> pid (read from the watchdog thread)."""
        group = self.process_groups.get(GROUP)
        if group is None:
            return {}
        return {
            f"{GROUP}:{name}": process.pid
            for name, process in list(group.processes.items())
            if process.get_state() == ProcessStates.RUNNING
        }

    def is_running(self) -> bool:
        return self.options.mood == SupervisorStates.RUNNING

    def on_stopping(self, event: events.SupervisorStoppingEvent) -> None:
        """The container stops (docker stop, a Kubernetes rollout): before Supervisor stops nginx
        and then the instances, each instance closes its WebSockets with 1001 (SIGUSR2), while
        nginx still carries the close frames to the clients."""
        for pid in self.running_instances().values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR2)

    def on_fatal(self, event: events.ProcessStateFatalEvent) -> None:
        process = event.process
        self.fail(describe(process.config.name, process.group.config.name))

    def on_exited(self, event: events.ProcessStateExitedEvent) -> None:
        process = event.process
        name = full_name(process.config.name, process.group.config.name)
        if process.group.config.name == GROUP:
            self.count_failed_start(name, dict(event.extra_values)["pid"])
        if event.expected or time.time() - process.laststart > QUICK_EXIT_SECONDS:
            self.quick_exits[name] = 0
            return
        self.quick_exits[name] = self.quick_exits.get(name, 0) + 1
        if self.quick_exits[name] >= QUICK_EXITS:
            self.fail(
                f"{name} exited {QUICK_EXITS} times in a row within {QUICK_EXIT_SECONDS:g}s of "
                "its start (a crash loop; its own last lines above say why)"
            )

    def count_failed_start(self, name: str, pid: int) -> None:
        """An instance that exits before it ever listened did not start (its app did not load),
        however long it tried (a slow import that fails, STARTUP_TIMEOUT): as many in a row as
        Supervisor's attempts (startretries=1: two) stop the container."""
        if self.watchdog.has_started(pid):
            self.failed_starts[name] = 0
        else:
            self.failed_starts[name] = self.failed_starts.get(name, 0) + 1
        self.watchdog.forget(pid)
        if self.failed_starts[name] >= FAILED_STARTS:
            self.fail(
                f"{name} exited {FAILED_STARTS} times in a row before it ever listened (its app "
                "did not load; its own last lines above say why)"
            )

    def fail(self, failure: str) -> None:
        if FailFastSupervisor.failure is not None:
            return
        FailFastSupervisor.failure = failure
        self.options.logger.critical(f"{PROGRAM}: {failure}; shutting down")
        # What supervisord's own SIGTERM handler does: stop every process, then return.
        self.options.mood = SupervisorStates.SHUTDOWN


def log_to_relay(relay: logs.Relay, json_lines: bool) -> None:
    """supervisord's own lines on stdout go through the relay (never a blocking write in its
    loop), as JSON objects with LOG_FORMAT=json (its file in /tmp/log stays text)."""
    as_dict = loggers.LogRecord.asdict

    def with_json(record: loggers.LogRecord) -> dict[str, Any]:
        fields = as_dict(record)
        if "json" not in fields:
            fields["json"] = logs.supervisor_json(fields)
        return fields

    def relayed_stdout(logger: loggers.Logger, fmt: str) -> None:
        handler = loggers.StreamHandler(logs.RelayStream(relay))
        handler.setFormat("%(json)s\n" if json_lines else fmt)
        handler.setLevel(logger.level)
        logger.addHandler(handler)

    if json_lines:
        loggers.LogRecord.asdict = with_json  # type: ignore[method-assign]
    loggers.handle_stdout = relayed_stdout


def main(arguments: list[str]) -> int:
    try:
        FailFastSupervisor.bundle = settings.load()
    except settings.ConfigError as error:
        # Only when run by hand without the start hook: the hook refuses this value first.
        logs.emit(PROGRAM, "critical", f"error: {error}", logs.json_wanted(), stream=sys.stderr)
        return 1
    json_lines = FailFastSupervisor.bundle.log_format == "json"
    FailFastSupervisor.relay = logs.Relay(json_lines)
    log_to_relay(FailFastSupervisor.relay, json_lines)
    # supervisord.main() builds its Supervisor through this module attribute.
    supervisord.Supervisor = FailFastSupervisor  # type: ignore[misc]
    supervisord.main(arguments)
    # What is still queued, if the output is read at all (docker stop's grace is the bound).
    FailFastSupervisor.relay.flush(timeout=1.0)
    if FailFastSupervisor.failure is None:
        return 0
    logs.emit(
        PROGRAM,
        "critical",
        f"exiting with status 1: {FailFastSupervisor.failure}",
        json_lines,
        stream=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
