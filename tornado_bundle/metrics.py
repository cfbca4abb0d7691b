"""The Prometheus endpoint on METRICS_PORT (default 9145; 0 = off), served by a thread of
supervisord's own process (PID 1; tornado_bundle/fail_fast.py starts it), never by nginx's public
listener:

- tornado_requests_total and tornado_request_duration_seconds, by method, handler and status,
  added up across every Tornado instance: each instance writes prometheus_client's multiprocess
  files (tornado_bundle/request_metrics.py), and the files of an instance that has exited stay
  and still count, so a counter does not go back when an instance restarts;
- tornado_bundle_process_up, _restarts_total and _uptime_seconds per Supervisor process;
- nginx_connections_* and nginx_http_requests_total from nginx's stub_status, which listens on
  a socket file only (tornado.conf), and nginx_up.

GET / or /metrics on the port; the start hook empties the multiprocess directory.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from tornado_bundle.names import METRICS_DIR, NGINX_STATUS_PATH, NGINX_STATUS_SOCKET

ProcessStates = Callable[[], list[tuple[str, bool, float, int]]]


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


def registry(states: ProcessStates) -> CollectorRegistry:
    collectors = CollectorRegistry()
    MultiProcessCollector(collectors, path=str(METRICS_DIR))
    collectors.register(SupervisorCollector(states))
    collectors.register(NginxCollector())
    return collectors


def start(port: int, states: ProcessStates) -> None:
    """Serves the metrics on 0.0.0.0:port from a daemon thread."""
    start_http_server(port, addr="0.0.0.0", registry=registry(states))
