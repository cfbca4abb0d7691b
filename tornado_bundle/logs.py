"""The container's output: one format for every line, LOG_FORMAT=text or json.

With json, every line on the container's stdout and stderr is one JSON object with at least
time, level, source and message. Each writer makes its own: nginx's access log (escape=json,
nginx.conf), Tornado (python-json-logger, tornado_bundle/runner.py), supervisord and the
bundle's scripts (here). Whatever a program writes that is not JSON already (nginx's error log,
a faulthandler stack dump, an app's print) is wrapped by the relay below, line by line.

The relay runs in supervisord's own process (PID 1): Supervisor writes each program's output to
a size-capped file in /tmp/log (for `supervisorctl tail`) and announces it as a PROCESS_LOG event
(stdout_events_enabled in supervisord.conf); the relay writes it to the container's stdout.
"""

from __future__ import annotations

import collections
import datetime
import io
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

# Output waiting to be written to the container's, at most; past it the oldest is dropped.
MAX_QUEUED = 4 * 1024 * 1024
RELAY = "log-relay"
# A line longer than this without a newline is written out in pieces (a program that never
# ends its line must not grow PID 1's memory).
MAX_LINE = 64 * 1024
# nginx's error log levels, as "[error]" after the date; Python's and Supervisor's level names.
NGINX_LEVEL = re.compile(rb"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\]")
LEVELS = {
    b"emerg": "critical",
    b"alert": "critical",
    b"crit": "critical",
    b"error": "error",
    b"warn": "warning",
    b"notice": "info",
    b"info": "info",
    b"debug": "debug",
}


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def json_line(source: str, level: str, message: str, **fields: Any) -> str:
    record = {"time": now(), "level": level.lower(), "source": source, "message": message}
    record.update(fields)
    return json.dumps(record, ensure_ascii=False)


def formatted(source: str, level: str, message: str, json_lines: bool) -> str:
    """One line of the bundle's own: "source: message" in text, a JSON object in json."""
    if json_lines:
        return json_line(source, level, message)
    return f"{source}: {message}"


def emit(
    source: str, level: str, message: str, json_lines: bool = False, stream: TextIO | None = None
) -> None:
    print(formatted(source, level, message, json_lines), file=stream or sys.stdout, flush=True)


def json_wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """LOG_FORMAT=json, for a line written before the settings are parsed (or when they are
    wrong: the start hook then stops the container with that very line)."""
    return environ.get("LOG_FORMAT") == "json"


def _own_record(source: str, line: bytes) -> bool:
    """A JSON object that names this program as its source: what the bundle's own log formats
    write (nginx.conf's bundle_json, the instances' JsonFormatter)."""
    if not (line.startswith(b"{") and line.endswith(b"}")):
        return False
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("source") == source


def wrap(source: str, line: bytes) -> bytes:
    """A line of a program's output as a JSON object of its own: the program's own records pass
    as they are; anything else, an app's own JSON too, becomes the message of a new record, so
    that no program can write a record that claims another source (supervisord, say)."""
    stripped = line.rstrip(b"\r\n")
    if _own_record(source, stripped):
        return stripped + b"\n"
    level = "info"
    match = NGINX_LEVEL.match(stripped)
    if match:
        level = LEVELS.get(match.group(1), "info")
    message = stripped.decode("utf-8", errors="replace")
    return json_line(source, level, message).encode() + b"\n"


class Relay:
    """Writes the programs' output (Supervisor's PROCESS_LOG events) and PID 1's own lines to the
    container's output, without ever making the caller wait.

    text: the bytes as they come. json: line by line, each wrapped unless it is the program's
    own record; a line that arrives in pieces is held until its end (per program and stream).

    Writing is a thread's job: supervisord's loop only queues, so a reader of the container's
    output that stops reading (a paused terminal, a blocking log driver) never stops it from
    reading the programs' pipes, and so never stops nginx or an instance from serving. The queue
    holds MAX_QUEUED bytes; past that the oldest output is dropped and counted, and one line says
    how much when writing resumes. With background=False every write happens at once (tests).
    """

    def __init__(
        self,
        json_lines: bool,
        write: Callable[[int, bytes], Any] = os.write,
        background: bool = True,
    ) -> None:
        self.json_lines = json_lines
        self._write = write
        self._partial: dict[tuple[str, int], bytes] = {}
        self._queue: collections.deque[tuple[int, bytes]] = collections.deque()
        self._queued = 0
        # Lines dropped in all, and since the last line that said so.
        self.dropped = 0
        self._unreported = 0
        self._ready = threading.Condition()
        self._background = background
        if background:
            threading.Thread(target=self._run, name="log-relay", daemon=True).start()

    def output(self, source: str, fd: int, data: bytes) -> None:
        if not self.json_lines:
            self.send(fd, data)
            return
        key = (source, fd)
        data = self._partial.pop(key, b"") + data
        *lines, rest = data.split(b"\n")
        if len(rest) > MAX_LINE:
            lines.append(rest)
            rest = b""
        if rest:
            self._partial[key] = rest
        if lines:
            self.send(fd, b"".join(wrap(source, line) for line in lines))

    def own(self, source: str, level: str, message: str, fd: int = 1) -> None:
        """One line of PID 1's own (the watchdog's, say), in the container's format."""
        self.send(fd, (formatted(source, level, message, self.json_lines) + "\n").encode())

    def send(self, fd: int, data: bytes) -> None:
        """Queues bytes for the container's output (fd 1 or 2); never waits."""
        if not self._background:
            self._write_all(fd, data)
            return
        with self._ready:
            self._queue.append((fd, data))
            self._queued += len(data)
            while self._queued > MAX_QUEUED and len(self._queue) > 1:
                _, old = self._queue.popleft()
                self._queued -= len(old)
                lines = old.count(b"\n") or 1
                self.dropped += lines
                self._unreported += lines
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
                fd, data = self._queue.popleft()
                self._queued -= len(data)
                unreported, self._unreported = self._unreported, 0
            if unreported:
                note = f"{unreported} line(s) of output dropped while the output was not read"
                self._write_all(
                    1, (formatted(RELAY, "warning", note, self.json_lines) + "\n").encode()
                )
            self._write_all(fd, data)

    def flush(self, timeout: float) -> None:
        """Waits at most `timeout` seconds for the queue to be written (before PID 1 exits)."""
        deadline = time.monotonic() + timeout
        while self._queue and time.monotonic() < deadline:
            time.sleep(0.01)

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._write(fd, view) :]


class RelayStream(io.TextIOBase):
    """supervisord's own log lines (its StreamHandler on stdout) into the relay's queue."""

    def __init__(self, relay: Relay) -> None:
        super().__init__()
        self.relay = relay

    def write(self, text: str) -> int:
        self.relay.send(1, text.encode())
        return len(text)

    def flush(self) -> None:
        pass


# Supervisor's level names -> the ones used everywhere else (Python's, in lower case).
SUPERVISOR_LEVELS = {"CRIT": "critical", "ERRO": "error", "WARN": "warning", "DEBG": "debug"}


def supervisor_json(record: Mapping[str, str]) -> str:
    """A supervisord log record (its asdict()) as a JSON object."""
    name = record["levelname"]
    level = SUPERVISOR_LEVELS.get(name, name.lower())
    return json_line("supervisord", level, record["message"].rstrip("\n"))
