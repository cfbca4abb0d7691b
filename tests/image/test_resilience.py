"""Nothing lost, no one in: zero failed requests under faults, graceful stop, fail-fast, least
privilege and health, each against the real image."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from harness import (
    IMAGE,
    Container,
    LoadLoop,
    LoadResult,
    Response,
    docker,
    http_get,
    remove,
    running,
    start,
    wait_for,
)

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("image")]

LOAD_SECONDS = 10
# 4 kept-alive clients for 10 s serve 15,000-26,000 requests on the 2-core machines measured
# (README); a CI machine that is busy with something else serves fewer. The floor is a third
# of the lowest seen: well above what a stalled bundle serves, below what a slow machine does.
MIN_REQUESTS = 5_000
APP_UID = "10001"
READ_ONLY = (
    "--read-only",
    "--tmpfs",
    "/tmp",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
)


def load_during(bundle: Container, fault: Callable[[], object], at: float = 2.0) -> LoadResult:
    """LOAD_SECONDS of GET / from 4 kept-alive clients, with `fault` run `at` seconds in."""
    with LoadLoop(bundle.port, clients=4) as load:
        load.run_for(at)
        fault()
        load.run_for(LOAD_SECONDS - at)
    result = load.result
    print(f"ok={result.ok} failures={len(result.failures)} retried={result.retried}")
    return result


def assert_no_failures(result: LoadResult) -> None:
    assert result.failures == [], f"{len(result.failures)} failed: {result.failures[:5]}"
    assert result.ok > MIN_REQUESTS, result


# --- 1. Zero failed requests under faults ----------------------------------------------------


def test_kill_9_of_one_instance_fails_no_request_and_it_is_back_within_3_seconds() -> None:
    with running({"DIAGNOSTICS": "on"}) as bundle:
        name, port = bundle.instances[0], bundle.instance_ports[0]
        pid = bundle.pid_of(name)

        def kill_and_wait_for_the_new_one() -> None:
            bundle.exec("kill", "-9", str(pid))
            killed_at = time.monotonic()
            wait_for(lambda: bundle.pid_of(name, timeout=3) != pid, 3)
            # ... and nginx sends it requests again (no 10 s penalty: max_fails=0).
            wait_for(lambda: f"127.0.0.1:{port}" in bundle.upstream_counts(4), 3, 0.05)
            assert time.monotonic() - killed_at < 3

        result = load_during(bundle, kill_and_wait_for_the_new_one)
        assert_no_failures(result)


def test_rolling_restart_fails_no_request_and_no_client_retries() -> None:
    with running() as bundle:
        before = {name: bundle.pid_of(name) for name in bundle.instances}
        output: list[str] = []

        def rolling_restart() -> None:
            output.append(bundle.exec("rolling-restart").stdout)

        result = load_during(bundle, rolling_restart)
        after = {name: bundle.pid_of(name) for name in bundle.instances}
        assert all(after[name] != before[name] for name in bundle.instances), (before, after)
        assert f"rolling-restart: {bundle.instances[-1]} is healthy" in output[0]
        assert_no_failures(result)
        # Not even a closed kept-alive connection that a client had to retry.
        assert result.retried == 0, result


def test_a_restarted_instance_finishes_its_in_flight_request() -> None:
    """The drain itself, without nginx in the way: a request straight to one instance, inside
    the container, while Supervisor restarts that instance."""
    with running({"DIAGNOSTICS": "on"}) as bundle:
        name, port = bundle.instances[0], bundle.instance_ports[0]
        fetch = (
            "import urllib.request; r = urllib.request.urlopen("
            f"'http://127.0.0.1:{port}/slow?seconds=2&token=drain', timeout=10); "
            "print(r.status, r.read().decode().strip(), r.headers['Connection'])"
        )
        replies: list[str] = []
        client = threading.Thread(
            target=lambda: replies.append(bundle.exec("python", "-c", fetch).stdout.strip())
        )
        client.start()
        wait_for(lambda: "token=drain" in bundle.logs(), 5)
        bundle.exec("supervisorctl", "restart", name)
        client.join(15)
        # The whole answer, with "Connection: close" (that the drain ends as soon as its last
        # connection is gone: tests/test_runner.py::test_sigterm_drains_and_exits_0).
        assert replies == ["200 slept 2s close"], replies


def test_rolling_restart_fails_no_post_either() -> None:
    """POSTs are never retried by nginx once sent: none may be sent on a connection that a
    restarting instance is closing. The app has no POST handler, so Tornado's own 405 proves
    that each request reached an instance."""
    with running() as bundle:
        with LoadLoop(bundle.port, clients=4, method="POST", expected_status=405) as load:
            load.run_for(2)
            for _ in range(3):
                bundle.exec("rolling-restart")
            load.run_for(1)
        print(f"ok={load.result.ok} failures={len(load.result.failures)}")
        assert load.result.failures == [], load.result.failures[:5]
        # ~10,000 POSTs measured over the three restarts; the same third as MIN_REQUESTS.
        assert load.result.ok > MIN_REQUESTS // 2, load.result


def test_nginx_reload_fails_no_request() -> None:
    with running() as bundle:
        master = bundle.pid_of("nginx")
        result = load_during(bundle, lambda: bundle.exec("supervisorctl", "signal", "HUP", "nginx"))
        assert bundle.pid_of("nginx") == master
        assert_no_failures(result)
        # nginx's old worker closes its idle kept-alive client connections: a client retries a
        # GET on such a connection (RFC 9112, 9.3.1), at most once per client.
        assert result.retried <= 4, result


# --- 2. Graceful stop ------------------------------------------------------------------------


def nginx_has_a_client(bundle: Container) -> bool:
    """An ESTABLISHED connection to nginx's port 80 (0050) inside the container."""
    table = bundle.exec("cat", "/proc/net/tcp", "/proc/net/tcp6").stdout
    return any(
        fields[1].endswith(":0050") and fields[3] == "01"
        for fields in (line.split() for line in table.splitlines()[1:])
        if len(fields) > 3
    )


def test_docker_stop_lets_the_slow_request_finish_and_exits_0_quickly() -> None:
    container = start({"DIAGNOSTICS": "on"})
    try:
        container.wait_serving()
        responses: list[Response] = []
        slow = threading.Thread(
            target=lambda: responses.append(http_get(container.port, "/slow?seconds=2", timeout=10))
        )
        slow.start()
        wait_for(lambda: nginx_has_a_client(container), 5, what="the slow request to reach nginx")
        started = time.monotonic()
        docker("stop", container.name, timeout=30)
        stop_seconds = time.monotonic() - started
        slow.join(10)
        print(f"docker stop took {stop_seconds:.2f}s")
        assert responses and (responses[0].status, responses[0].body) == (200, b"slept 2s\n")
        assert stop_seconds < 5
        assert container.inspect()["State"]["ExitCode"] == 0
    finally:
        remove(container.name)


# --- 3. Fail fast --------------------------------------------------------------------------------

# Kills the instance on port 8001 and takes its port, so that every restart fails to listen.
TAKE_PORT_8001 = """
import os, socket, sys, time
os.kill(int(sys.argv[1]), 9)
blocker = socket.socket()
# Like Tornado: the killed instance's closed connections leave port 8001 in TIME_WAIT.
blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
deadline = time.monotonic() + 5
while True:
    try:
        blocker.bind(("127.0.0.1", 8001))
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
blocker.listen()
time.sleep(120)
"""


def test_an_instance_that_cannot_stay_up_stops_the_container_non_zero() -> None:
    container = start()
    try:
        container.wait_serving()
        pid = container.pid_of("tornadoes:tornado-8001")
        docker("exec", "--detach", container.name, "python", "-c", TAKE_PORT_8001, str(pid))
        started = time.monotonic()
        # Measured: ~3 s idle (startretries=1: one retry after 1 s), ~8 s beside a CPU hog on
        # one of the two cores (three quick exits); the bound leaves room for a busier machine.
        wait_for(
            lambda: not container.inspect()["State"]["Running"], 20, 0.2, "the container to exit"
        )
        print(f"container exited {time.monotonic() - started:.1f}s after the fault")
        assert container.inspect()["State"]["ExitCode"] == 1
        last_lines = "\n".join(container.logs().splitlines()[-15:])
        assert "cannot listen on 127.0.0.1:8001: Address already in use" in container.logs()
        # FATAL (Supervisor's startsecs), or three quick exits in a row (a busy machine).
        assert "supervisord-fail-fast: exiting with status 1: tornadoes:tornado-8001 " in last_lines
    finally:
        remove(container.name)


# A wrong environment value stops the container before any process runs, with one line:
# tests/test_configuration.py::test_invalid_value_exits_within_5_seconds_with_one_line.


# --- 4. Least privilege ----------------------------------------------------------------------


def test_no_process_runs_as_root() -> None:
    with running() as bundle:
        bundle.wait_running("nginx", *bundle.instances)
        processes = bundle.exec("ps", "-eo", "uid=,args=").stdout.splitlines()
        assert len(processes) >= 6  # supervisord, 2 Tornado, nginx master + worker, ps
        assert all(line.split()[0] == APP_UID for line in processes), processes
        assert bundle.inspect()["Config"]["User"] == f"{APP_UID}:{APP_UID}"


def test_runs_unchanged_read_only_without_capabilities() -> None:
    with running(options=READ_ONLY) as bundle:
        status = bundle.wait_running("nginx", *bundle.instances)
        assert bundle.get("/").body == b"Hello, Tornado\n"
        pid = status[bundle.instances[0]][1]
        bundle.exec("kill", "-9", str(pid))
        wait_for(lambda: bundle.pid_of(bundle.instances[0]) != pid, 5)
        bundle.exec("rolling-restart")
        write = bundle.exec("touch", "/app/x", check=False)
        assert "Read-only file system" in write.stderr


def listening_sockets(bundle: Container) -> dict[int, str]:
    """port -> local address (hex, as in /proc/net/tcp) of every listening TCP socket."""
    table = bundle.exec("cat", "/proc/net/tcp").stdout.splitlines()[1:]
    sockets = {}
    for fields in (line.split() for line in table):
        if fields[3] == "0A":
            address, port = fields[1].split(":")
            sockets[int(port, 16)] = address
    return sockets


def test_tornado_listens_on_loopback_only_and_the_socket_is_private() -> None:
    with running() as bundle:
        sockets = listening_sockets(bundle)
        assert sockets[8000] == sockets[8001] == "0100007F"  # 127.0.0.1
        assert sockets[80] == "00000000"  # nginx: every interface
        assert bundle.exec("stat", "-c", "%a %u", "/tmp/supervisor.sock").stdout.split() == [
            "700",
            APP_UID,
        ]
        other_user = bundle.exec("supervisorctl", "status", user="12345", check=False)
        assert other_user.returncode != 0
        assert "Permission denied" in other_user.stdout + other_user.stderr


# --- 6. Health -------------------------------------------------------------------------------


def health(container: Container) -> str:
    return container.inspect()["State"]["Health"]["Status"]


def test_healthy_within_10_seconds_and_unhealthy_without_instances() -> None:
    started = time.monotonic()
    container = start()
    try:
        wait_for(lambda: health(container) == "healthy", 10, 0.2, "healthy")
        print(f"healthy after {time.monotonic() - started:.1f}s")
        container.exec("supervisorctl", "stop", "tornadoes:*")
        wait_for(lambda: health(container) == "unhealthy", 25, 0.5, "unhealthy")
        # A manual stop is not a failure: the container keeps running.
        assert container.inspect()["State"]["Running"]
        container.exec("supervisorctl", "start", "tornadoes:*")
        wait_for(lambda: health(container) == "healthy", 15, 0.2, "healthy again")
    finally:
        remove(container.name)


def test_read_only_without_a_writable_tmp_is_one_clear_line() -> None:
    result = docker("run", "--rm", "--read-only", IMAGE, check=False, timeout=30)
    assert result.returncode == 1
    assert (result.stdout + result.stderr).splitlines() == [
        "tornado-bundle: error: cannot write /tmp/tornado-bundle/settings.json: Read-only file "
        "system; "
        "/tmp must be writable (with --read-only, add --tmpfs /tmp)"
    ]
