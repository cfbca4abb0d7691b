"""The bundle in a real Docker engine: what a user does after `make run`."""

from __future__ import annotations

import json
import re
import time

import pytest

from harness import Container, docker, remove, running, start, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("image")]


def log_lines(bundle: Container, text: str, at_least: int) -> list[str] | None:
    lines = [line for line in bundle.logs().splitlines() if text in line]
    return lines if len(lines) >= at_least else None


def test_hello_and_health_through_nginx() -> None:
    with running() as bundle:
        hello = bundle.get("/")
        assert (hello.status, hello.body) == (200, b"Hello, Tornado\n")
        assert hello.headers["Server"] == "nginx"
        health = bundle.get("/healthz")
        assert (health.status, health.body) == (200, b"ok\n")
        assert bundle.get("/no-such-page").status == 404


def test_supervisorctl_lists_exactly_nginx_and_two_instances_running() -> None:
    with running() as bundle:
        processes = ("nginx", *bundle.instances)
        status = bundle.wait_running(*processes)
        assert sorted(status) == sorted(processes)
        output = bundle.exec("supervisorctl", "status").stdout
        assert re.search(r"^tornadoes:tornado-8000\s+RUNNING\s+pid \d+", output, re.M), output


def addresses(bundle: Container) -> set[str]:
    return {f"127.0.0.1:{port}" for port in bundle.instance_ports}


def test_round_robin_spreads_100_requests_50_50() -> None:
    with running({"DIAGNOSTICS": "on"}) as bundle:
        counts = bundle.upstream_counts(100)
        assert set(counts) == addresses(bundle), counts
        assert all(45 <= n <= 55 for n in counts.values()), counts


def test_internal_addresses_stay_hidden_and_diagnostics_are_off_by_default() -> None:
    with running() as bundle:
        response = bundle.get("/")
        assert "X-Upstream" not in response.headers
        assert b"127.0.0.1:800" not in response.body
        for path in ("/slow?seconds=0", "/block?seconds=0", "/grow?mb=0", "/whoami"):
            assert bundle.get(path).status == 404, path


def test_a_client_cannot_choose_its_own_address_or_scheme() -> None:
    forged = {
        "X-Real-IP": "6.6.6.6",
        "X-Forwarded-For": "6.6.6.6",
        "X-Scheme": "https",
        "X-Forwarded-Proto": "https",
    }
    with running({"DIAGNOSTICS": "on"}) as bundle:
        seen = json.loads(bundle.get("/whoami", forged).body)
        honest = json.loads(bundle.get("/whoami").body)
        assert seen["remote_ip"] == honest["remote_ip"] != "6.6.6.6", (seen, honest)
        assert seen["protocol"] == "http"
        assert seen["host"] == f"127.0.0.1:{bundle.port}"


def test_access_log_names_the_instance_for_each_request() -> None:
    with running() as bundle:
        for _ in range(10):
            assert bundle.get("/?from-access-log-test").status == 200
        # The access log is buffered for up to 1 s (flush=1s).
        lines = wait_for(lambda: log_lines(bundle, "GET /?from-access-log-test", 10), 5)
        upstreams = {re.search(r"upstream=(\S+)", line).group(1) for line in lines}  # type: ignore[union-attr]
        assert upstreams == addresses(bundle)


def test_stopping_one_instance_sends_everything_to_the_other() -> None:
    with running({"DIAGNOSTICS": "on"}) as bundle:
        first, second = bundle.instances
        bundle.exec("supervisorctl", "stop", second)
        assert bundle.supervisor_status()[second][0] == "STOPPED"
        counts = bundle.upstream_counts(50)
        assert counts == {f"127.0.0.1:{bundle.instance_ports[0]}": 50}, counts
        bundle.exec("supervisorctl", "start", second)
        bundle.wait_running(second)
        assert set(bundle.upstream_counts(10)) == addresses(bundle)


# kill -9 of an instance under load: tests/test_resilience.py (0 failures, revived within 3 s).


def test_kill_9_of_nginx_master_is_revived_within_3_seconds() -> None:
    with running() as bundle:
        old_pid = bundle.pid_of("nginx")
        bundle.exec("kill", "-9", str(old_pid))
        killed_at = time.monotonic()
        # The old worker may answer until it notices its master is gone; wait for the new master.
        wait_for(lambda: bundle.supervisor_status()["nginx"][1] not in (None, old_pid), 3, 0.05)
        bundle.wait_serving(timeout=3 - (time.monotonic() - killed_at))
        assert time.monotonic() - killed_at < 3


def test_docker_logs_hold_nginx_tornado_and_supervisor_lines() -> None:
    with running() as bundle:
        bundle.get("/")
        wait_for(lambda: log_lines(bundle, '"GET / HTTP/1.1" 200', 1), 5)
        logs = bundle.logs()
        assert "supervisord started with pid 1" in logs
        assert "listening on http://127.0.0.1:8000" in logs
        assert "listening on http://127.0.0.1:8001" in logs


def test_nginx_config_test_passes_in_the_image() -> None:
    with running() as bundle:
        result = bundle.exec("nginx", "-t")
        assert "test is successful" in result.stderr
        dump = bundle.exec("nginx", "-T").stdout
        assert "server 127.0.0.1:8000 weight=1 max_fails=0;" in dump
        assert "server 127.0.0.1:8001 weight=1 max_fails=0;" in dump
        assert "server_tokens off;" in dump


def test_docker_stop_returns_within_5_seconds_with_exit_code_0() -> None:
    container = start()
    try:
        container.wait_serving()
        started = time.monotonic()
        docker("stop", container.name, timeout=30)
        elapsed = time.monotonic() - started
        assert elapsed < 5, elapsed
        assert container.inspect()["State"]["ExitCode"] == 0
    finally:
        remove(container.name)


def test_no_log_file_grows_inside_the_container_outside_tmp_log() -> None:
    """Only /tmp/log holds log files, each capped (tests/test_production.py checks the cap)."""
    with running() as bundle:
        for _ in range(20):
            bundle.get("/")
        found = bundle.exec(
            "find", "/var/log", "/tmp", "/opt", "-path", "/tmp/log", "-prune", "-o",
            "-type", "f", "-size", "+0", "-name", "*.log", "-print",
        ).stdout  # fmt: skip
        assert found == "", found
