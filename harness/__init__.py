"""Drives real containers of the bundle's image through the docker CLI, for the integration tests
(and for `make bench`).

Every container is published on 127.0.0.1 only (-p 127.0.0.1:0:PORT), or runs on the host network
with nginx and the instances on free 127.0.0.1 ports (`host_network=True`); all test traffic goes
to 127.0.0.1. Containers are named `tornado-bundle-test-<run>-<random>`, where <run> is this
process's own id, and are removed by that name: another run on the same engine is left alone.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tornado_bundle.names import instance_name
from tornado_bundle.settings import defaults

IMAGE = os.environ.get("IMAGE", "tornado-bundle:latest")
BUILDER_IMAGE = os.environ.get("BUILDER_IMAGE", "tornado-bundle:builder")
# This run's containers and images, and only them: `tornado-bundle-test-<run>-...`.
RUN_ID = uuid.uuid4().hex[:8]
NAME_PREFIX = f"tornado-bundle-test-{RUN_ID}-"
LOOPBACK = "127.0.0.1"
# The image's defaults (tornado_bundle/settings.py): two instances from port 8000.
DEFAULT_WORKERS = defaults().workers
DEFAULT_BASE_PORT = defaults().instance_base_port


def docker(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
        )
    return result


def wait_for(
    condition: Callable[[], object], timeout: float, interval: float = 0.05, what: str = ""
) -> object:
    """Polls `condition` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (OSError, http.client.HTTPException, AssertionError) as error:
            last_error = error
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or condition}: {last_error}"
    )


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def http_get(
    port: int, path: str = "/", headers: dict[str, str] | None = None, timeout: float = 5
) -> Response:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return Response(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports handed out by this process, never handed out twice: containers bind theirs late.
_GIVEN: set[int] = set()


def free_ports(count: int) -> int:
    """The first of `count` consecutive TCP ports free on 127.0.0.1, chosen below the kernel's
    ephemeral range (so that no client socket, wrk's included, can hold one meanwhile) and
    never one this process handed out before."""
    high = _ephemeral_start() - count
    for _ in range(500):
        first = random.randrange(10_000, high)
        ports = range(first, first + count)
        if _GIVEN.intersection(ports):
            continue
        try:
            for port in ports:
                with socket.socket() as taken:
                    taken.bind((LOOPBACK, port))
        except OSError:
            continue
        _GIVEN.update(ports)
        return first
    raise AssertionError(f"no {count} consecutive free ports on {LOOPBACK}")


@dataclass
class Container:
    name: str
    port: int
    container_port: int
    workers: int = DEFAULT_WORKERS
    base_port: int = DEFAULT_BASE_PORT

    @property
    def instance_ports(self) -> list[int]:
        return list(range(self.base_port, self.base_port + self.workers))

    @property
    def instances(self) -> list[str]:
        """Supervisor's names for the instances: tornadoes:tornado-<port>."""
        return [instance_name(port) for port in self.instance_ports]

    def exec(
        self, *command: str, check: bool = True, user: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        options = ["--user", user] if user else []
        return docker("exec", *options, self.name, *command, check=check, timeout=timeout)

    def get(
        self, path: str = "/", headers: dict[str, str] | None = None, timeout: float = 5
    ) -> Response:
        return http_get(self.port, path, headers, timeout)

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def inspect(self) -> dict:
        return json.loads(docker("inspect", self.name).stdout)[0]

    def supervisor_status(self) -> dict[str, tuple[str, int | None]]:
        """name -> (state, pid) from `supervisorctl status`."""
        output = self.exec("supervisorctl", "status", check=False).stdout
        status: dict[str, tuple[str, int | None]] = {}
        for line in output.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                pid = re.search(r"pid (\d+)", line)
                status[parts[0]] = (parts[1], int(pid.group(1)) if pid else None)
        return status

    def pid_of(self, process: str, timeout: float = 10) -> int:
        state, pid = self.wait_running(process, timeout=timeout)[process]
        assert pid is not None
        return pid

    def wait_running(
        self, *processes: str, timeout: float = 10
    ) -> dict[str, tuple[str, int | None]]:
        def all_running() -> dict[str, tuple[str, int | None]] | None:
            status = self.supervisor_status()
            ok = all(status.get(p, ("", None))[0] == "RUNNING" for p in processes)
            return status if ok else None

        return wait_for(all_running, timeout, 0.1, f"{processes} RUNNING")  # type: ignore[return-value]

    def wait_serving(self, timeout: float = 15, path: str = "/") -> None:
        wait_for(
            lambda: self.get(path, timeout=1).status == 200, timeout, what=f"GET {path} -> 200"
        )

    def wait_every_instance_healthy(self, timeout: float = 15) -> None:
        """Each Tornado instance answers /healthz on its own port (inside the container)."""

        def all_healthy() -> bool:
            checks = " && ".join(f"healthcheck {port}" for port in self.instance_ports)
            return self.exec("sh", "-c", checks, check=False).returncode == 0

        wait_for(all_healthy, timeout, 0.1, "every instance healthy")

    def upstream_counts(
        self, requests: int, path: str = "/", headers: dict[str, str] | None = None
    ) -> Counter[str]:
        """Which instance answered each request: X-Upstream's last address (DIAGNOSTICS=on)."""
        counts: Counter[str] = Counter()
        for _ in range(requests):
            response = self.get(path, headers)
            assert response.status == 200, response
            # "a, b" when nginx tried a first (refused) and b answered.
            counts[response.headers["X-Upstream"].split(", ")[-1]] += 1
        return counts


def _published_port(name: str, container_port: int) -> int:
    output = docker("port", name, f"{container_port}/tcp").stdout
    match = re.search(r"127\.0\.0\.1:(\d+)", output)
    assert match, f"no 127.0.0.1 port published for {name}: {output!r}"
    return int(match.group(1))


def start(
    env: dict[str, str] | None = None,
    options: tuple[str, ...] = (),
    container_port: int = 80,
    image: str = IMAGE,
    host_network: bool = False,
    command: tuple[str, ...] = (),
    name_prefix: str = NAME_PREFIX,
) -> Container:
    """`docker run -d` the image, published on 127.0.0.1:<random> (or on the host network, nginx
    and the instances on free 127.0.0.1 ports: LISTEN_PORT, INSTANCE_BASE_PORT); does not wait
    for it. `make bench` starts its contenders with this too."""
    name = name_prefix + uuid.uuid4().hex[:10]
    env = dict(env or {})
    workers = int(env.get("WORKERS", DEFAULT_WORKERS))
    if host_network:
        env.setdefault("LISTEN_PORT", str(free_ports(1)))
        env.setdefault("INSTANCE_BASE_PORT", str(free_ports(workers)))
        # The metrics endpoint binds a host port too (the default one is shared by every run).
        env.setdefault("METRICS_PORT", str(free_ports(1)))
        network = ["--network=host"]
    else:
        network = [f"--publish={LOOPBACK}:0:{container_port}"]
    base_port = int(env.get("INSTANCE_BASE_PORT", DEFAULT_BASE_PORT))
    env_options = [f"--env={key}={value}" for key, value in env.items()]
    docker("run", "--detach", "--name", name, *network, *env_options, *options, image, *command)
    port = int(env["LISTEN_PORT"]) if host_network else _published_port(name, container_port)
    return Container(name, port, container_port, workers, base_port)


def app_image(folder: str, extra: str = "") -> str:
    """tests/apps/<folder> built FROM the bundle (tests/apps/Dockerfile), as a user builds an app
    image; `extra`: another folder of tests/apps whose files go into /app too. Returns the tag;
    the caller removes it."""
    apps = Path(__file__).resolve().parents[1] / "tests" / "apps"
    tag = f"{NAME_PREFIX}{folder.replace('_', '-')}:{uuid.uuid4().hex[:8]}"
    extra_args = [f"--build-arg=EXTRA_FOLDER={extra}"] if extra else []
    docker(
        "build", "--quiet", f"--build-arg=BUNDLE_IMAGE={IMAGE}",
        f"--build-arg=BUNDLE_BUILDER={BUILDER_IMAGE}", f"--build-arg=APP_FOLDER={folder}",
        *extra_args, f"--tag={tag}", str(apps),
        timeout=900,
    )  # fmt: skip
    return tag


def remove(name: str) -> None:
    docker("rm", "--force", "--volumes", name, check=False)


@contextmanager
def running(
    env: dict[str, str] | None = None,
    options: tuple[str, ...] = (),
    container_port: int = 80,
    image: str = IMAGE,
    host_network: bool = False,
    ready: str = "/",
) -> Iterator[Container]:
    """A started container whose instances all answer; removed afterwards, whatever happens."""
    container = None
    try:
        container = start(env, options, container_port, image, host_network)
        # An app without a GET / of its own (an upload receiver) is ready when /healthz is.
        container.wait_serving(path=ready)
        # nginx starts once one instance listens; tests of the balancing need all of them.
        container.wait_every_instance_healthy()
        yield container
    finally:
        if container is not None:
            remove(container.name)


@dataclass
class LoadResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    retried: int = 0
    # The longest a successful request took, in seconds.
    slowest: float = 0.0

    @property
    def total(self) -> int:
        return self.ok + len(self.failures)


class LoadLoop:
    """Steady load (GET unless told) from `clients` threads on kept-alive connections, bounded in
    time and count.

    Like a browser (RFC 9112, 9.3.1): when a reused kept-alive connection is closed before any
    response byte arrives, the idempotent GET is retried once on a new connection; such retries
    are counted apart; other methods are never retried. Every other error and every status other
    than `expected_status` is a failure.
    """

    def __init__(
        self,
        port: int,
        clients: int = 4,
        path: str = "/",
        max_requests: int = 200_000,
        method: str = "GET",
        expected_status: int = 200,
        timeout: float = 10,
        tls_context: ssl.SSLContext | None = None,
        requests_per_connection: int = 0,
    ) -> None:
        # HTTPS with this context when given; a new connection every this many requests when
        # not 0 (so that TLS handshakes go on under load).
        self.tls_context = tls_context
        self.requests_per_connection = requests_per_connection
        self.port = port
        self.timeout = timeout
        self.clients = clients
        self.path = path
        self.method = method
        self.expected_status = expected_status
        self.max_requests = max_requests
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> LoadLoop:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        return self.result

    def run_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.05)

    def _record(
        self, failure: str | None = None, retried: bool = False, seconds: float = 0.0
    ) -> None:
        with self._lock:
            if failure is None:
                self.result.ok += 1
                self.result.slowest = max(self.result.slowest, seconds)
            else:
                self.result.failures.append(failure)
            self.result.retried += int(retried)

    def _connect(self) -> http.client.HTTPConnection:
        if self.tls_context is None:
            return http.client.HTTPConnection(LOOPBACK, self.port, timeout=self.timeout)
        return http.client.HTTPSConnection(
            LOOPBACK, self.port, timeout=self.timeout, context=self.tls_context
        )

    def _client(self) -> None:
        connection: http.client.HTTPConnection | None = None
        reused = False
        sent = 0
        while not self._stop.is_set() and self.result.total < self.max_requests:
            if connection is not None and sent == self.requests_per_connection:
                connection.close()
                connection = None
            if connection is None:
                connection = self._connect()
                reused = False
                sent = 0
            sent += 1
            started = time.monotonic()
            try:
                status, will_close = self._send(connection)
                retried = False
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as error:
                connection.close()
                connection = None
                if not reused or self.method != "GET":
                    self._record(f"{type(error).__name__}: {error}")
                    continue
                # The reused connection was closed before any response: retry once, fresh.
                connection = self._connect()
                reused = False
                sent = 1
                try:
                    status, will_close = self._send(connection)
                    retried = True
                except (OSError, http.client.HTTPException) as retry_error:
                    connection.close()
                    connection = None
                    self._record(f"retry {type(retry_error).__name__}: {retry_error}")
                    continue
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                connection = None
                self._record(f"{type(error).__name__}: {error}")
                continue
            # http.client reconnects by itself after "Connection: close": that one is fresh.
            reused = not will_close
            failure = None if status == self.expected_status else f"HTTP {status}"
            self._record(failure, retried, time.monotonic() - started)
        if connection is not None:
            connection.close()

    def _send(self, connection: http.client.HTTPConnection) -> tuple[int, bool]:
        body = b"x=1" if self.method == "POST" else None
        connection.request(self.method, self.path, body=body)
        response = connection.getresponse()
        response.read()
        return response.status, response.will_close


def wrk(
    port: int,
    connections: int,
    seconds: int,
    path: str = "/",
    threads: int = 1,
    timeout: float | None = None,
) -> dict[str, float]:
    """A wrk run against 127.0.0.1:PORT and its own figures: requests, req/s of 2xx answers only
    (a server that answers 502 fast must not win), p50/p99 latency in ms, socket errors and
    non-2xx answers. `timeout` is wrk's per-request timeout (its own default: 2 s)."""
    binary = shutil.which("wrk")
    assert binary, "wrk is not installed (apt-get install wrk)"
    options = [f"--threads={threads}", f"--connections={connections}", f"--duration={seconds}s"]
    if timeout is not None:
        options.append(f"--timeout={timeout:g}s")
    output = subprocess.run(
        [binary, *options, "--latency", f"http://{LOOPBACK}:{port}{path}"],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    socket_errors = sum(int(n) for n in errors.groups()) if errors else 0
    non_2xx_match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    non_2xx = int(non_2xx_match.group(1)) if non_2xx_match else 0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    return {
        "requests": requests,
        "rps": rps * (requests - non_2xx) / max(requests, 1),
        "p50_ms": _wrk_latency(output, "50%"),
        "p99_ms": _wrk_latency(output, "99%"),
        "socket_errors": socket_errors,
        "non_2xx": non_2xx,
        "errors": socket_errors + non_2xx,
    }


def _wrk_latency(output: str, percentile: str) -> float:
    value, unit = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
