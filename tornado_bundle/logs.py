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

import datetime
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

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


def wrap(source: str, line: bytes) -> bytes:
    """A line of a program's output as a JSON object, unless it is one already."""
    stripped = line.rstrip(b"\r\n")
    if stripped.startswith(b"{") and stripped.endswith(b"}"):
        return stripped + b"\n"
    level = "info"
    match = NGINX_LEVEL.match(stripped)
    if match:
        level = LEVELS.get(match.group(1), "info")
    message = stripped.decode("utf-8", errors="replace")
    return json_line(source, level, message).encode() + b"\n"


class Relay:
    """Writes the programs' output (Supervisor's PROCESS_LOG events) to the container's output.

    text: the bytes as they come. json: line by line, each wrapped when it is not JSON; a line
    that arrives in pieces is held until its end (per program and stream)."""

    def __init__(self, json_lines: bool, write: Callable[[int, bytes], Any] = os.write) -> None:
        self.json_lines = json_lines
        self._write = write
        self._partial: dict[tuple[str, int], bytes] = {}

    def output(self, source: str, fd: int, data: bytes) -> None:
        if not self.json_lines:
            self._write_all(fd, data)
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
            self._write_all(fd, b"".join(wrap(source, line) for line in lines))

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._write(fd, view) :]


# Supervisor's level names -> the ones used everywhere else (Python's, in lower case).
SUPERVISOR_LEVELS = {"CRIT": "critical", "ERRO": "error", "WARN": "warning", "DEBG": "debug"}


def supervisor_json(record: Mapping[str, str]) -> str:
    """A supervisord log record (its asdict()) as a JSON object."""
    name = record["levelname"]
    level = SUPERVISOR_LEVELS.get(name, name.lower())
    return json_line("supervisord", level, record["message"].rstrip("\n"))
