"""The Prometheus endpoint on METRICS_PORT (0 = off; its default: settings.py), from a thread of
supervisord's own process (PID 1; tornado_bundle/fail_fast.py starts it), never by nginx's public
listener:

- tornado_requests_total and tornado_request_duration_seconds, by method, handler and status,
  added up across every Tornado instance: each instance writes prometheus_client's multiprocess
  files (tornado_bundle/request_metrics.py), and the files of an instance that has exited stay
  and still count, so a counter does not go back when an instance restarts;
- tornado_bundle_process_up, _restarts_total and _uptime_seconds per Supervisor process;
- nginx_connections_* and nginx_http_requests_total from nginx's stub_status, which listens on
  a socket file only (tornado.conf), and nginx_up.

GET / or /metrics on METRICS_ADDRESS:METRICS_PORT; the start hook empties the multiprocess
directory. One thread serves every connection (asyncio), so no client can add a thread to PID 1:
a connection has READ_TIMEOUT seconds to send its request and is closed after the answer, and
past MAX_CONNECTIONS the oldest connection still waiting for its request is closed.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from tornado_bundle.names import METRICS_DIR, NGINX_STATUS_PATH, NGINX_STATUS_SOCKET

ProcessStates = Callable[[], list[tuple[str, bool, float, int]]]
# A scraper sends its request at once; an idle client is dropped after this long.
READ_TIMEOUT = 2.0
MAX_CONNECTIONS = 256
# The request line and headers of a scrape: Prometheus sends a few hundred bytes.
MAX_REQUEST_HEAD = 8192


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def nginx_status(path: str = str(NGINX_STATUS_SOCKET), timeout: float = 1.0) -> dict[str, int]:
    """stub_status's numbers: active, accepts, handled, requests, reading, writing, waiting."""
    connection = _UnixConnection(path, timeout)
    try:
        connection.request("GET", NGINX_STATUS_PATH)
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    return parse_stub_status(text)


def parse_stub_status(text: str) -> dict[str, int]:
    lines = text.splitlines()
    accepts, handled, requests = (int(word) for word in lines[2].split())
    words = lines[3].split()
    return {
        "active": int(lines[0].split(":")[1]),
        "accepts": accepts,
        "handled": handled,
        "requests": requests,
        "reading": int(words[1]),
        "writing": int(words[3]),
        "waiting": int(words[5]),
    }


class SupervisorCollector(Collector):
    def __init__(self, states: ProcessStates) -> None:
        self.states = states

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "tornado_bundle_process_up",
            "1 while Supervisor has the process RUNNING",
            labels=["process"],
        )
        restarts = CounterMetricFamily(
            "tornado_bundle_process_restarts",
            "Starts of the process after its first one",
            labels=["process"],
        )
        uptime = GaugeMetricFamily(
            "tornado_bundle_process_uptime_seconds",
            "Seconds since the running process started (0 when not running)",
            labels=["process"],
        )
        for name, running, seconds, starts in self.states():
            up.add_metric([name], 1 if running else 0)
            restarts.add_metric([name], max(starts - 1, 0))
            uptime.add_metric([name], round(seconds, 3))
        yield from (up, restarts, uptime)


class NginxCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        try:
            status = nginx_status()
        except (OSError, http.client.HTTPException, ValueError, IndexError):
            yield GaugeMetricFamily("nginx_up", "1 when nginx's stub_status answered", value=0)
            return
        yield GaugeMetricFamily("nginx_up", "1 when nginx's stub_status answered", value=1)
        connections = GaugeMetricFamily(
            "nginx_connections", "Client connections by state", labels=["state"]
        )
        for state in ("active", "reading", "writing", "waiting"):
            connections.add_metric([state], status[state])
        yield connections
        for name, key, help_text in (
            ("nginx_connections_accepted", "accepts", "Client connections accepted"),
            ("nginx_connections_handled", "handled", "Client connections handled"),
            ("nginx_http_requests", "requests", "Client requests"),
        ):
            yield CounterMetricFamily(name, help_text, value=status[key])


class DroppedLinesCollector(Collector):
    def __init__(self, dropped: Callable[[], int]) -> None:
        self.dropped = dropped

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "tornado_bundle_log_lines_dropped",
            "Lines of output dropped while nobody read the container's output",
            value=self.dropped(),
        )


def registry(states: ProcessStates, dropped: Callable[[], int] = lambda: 0) -> CollectorRegistry:
    collectors = CollectorRegistry()
    MultiProcessCollector(collectors, path=str(METRICS_DIR))
    collectors.register(SupervisorCollector(states))
    collectors.register(DroppedLinesCollector(dropped))
    collectors.register(NginxCollector())
    return collectors


class Endpoint:
    """The metrics endpoint's connections, all in one asyncio loop."""

    def __init__(self, collectors: CollectorRegistry) -> None:
        self.collectors = collectors
        # Connections that have not sent their request yet, oldest first.
        self.waiting: dict[asyncio.StreamWriter, None] = {}
        self.open = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.waiting[writer] = None
        if self.open > MAX_CONNECTIONS:
            next(iter(self.waiting)).close()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            self.waiting.pop(writer, None)
            writer.write(self.answer(head.split(b"\r\n", 1)[0]))
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self.waiting.pop(writer, None)
            self.open -= 1
            writer.close()

    def answer(self, request_line: bytes) -> bytes:
        parts = request_line.split(b" ")
        if (
            len(parts) != 3
            or parts[0] != b"GET"
            or parts[1].split(b"?")[0] not in (b"/", b"/metrics")
        ):
            return _response(b"404 Not Found", b"text/plain", b"GET /metrics\n")
        return _response(b"200 OK", CONTENT_TYPE_LATEST.encode(), generate_latest(self.collectors))


def _response(status: bytes, content_type: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type
        + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
        + body
    )  # fmt: skip


def start(
    address: str, port: int, states: ProcessStates, dropped: Callable[[], int] = lambda: 0
) -> threading.Thread:
    """Serves the metrics on address:port from one daemon thread; raises OSError when the port
    cannot be bound (here, before the thread starts)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    listener = socket.create_server((address, port), family=family, backlog=MAX_CONNECTIONS)
    endpoint = Endpoint(registry(states, dropped))

    async def serve() -> None:
        server = await asyncio.start_server(endpoint.handle, sock=listener, limit=MAX_REQUEST_HEAD)
        await server.serve_forever()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="metrics", daemon=True)
    thread.start()
    return thread
