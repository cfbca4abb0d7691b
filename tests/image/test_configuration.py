"""Configuration by environment, in a real container each: worker count, every load-balancing
strategy, listen port, body limit, trusted proxies, and the one-line errors for wrong values."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

import pytest

from harness import IMAGE, LOOPBACK, Response, docker, http_get, running
from tornado_bundle.names import instance_name

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("image")]

A, B = "127.0.0.1:8000", "127.0.0.1:8001"


def test_workers_4_runs_four_instances_and_spreads_requests_evenly() -> None:
    with running({"WORKERS": "4", "DIAGNOSTICS": "on"}) as bundle:
        names = [instance_name(port) for port in range(8000, 8004)]
        status = bundle.wait_running(*names)
        assert sorted(status) == sorted(["nginx", *names])
        counts = bundle.upstream_counts(200)
        assert set(counts) == {f"127.0.0.1:{port}" for port in range(8000, 8004)}
        assert all(44 <= n <= 56 for n in counts.values()), counts


def test_weighted_3_7_splits_200_requests_60_140() -> None:
    env = {"LB_METHOD": "weighted", "LB_WEIGHTS": "3,7", "DIAGNOSTICS": "on"}
    with running(env) as bundle:
        counts = bundle.upstream_counts(200)
        assert 50 <= counts[A] <= 70 and 130 <= counts[B] <= 150, counts


def test_least_conn_sends_quick_requests_away_from_the_busy_instance() -> None:
    with running({"LB_METHOD": "least_conn", "DIAGNOSTICS": "on"}) as bundle:
        slow: list[Response] = []
        thread = threading.Thread(
            target=lambda: slow.append(http_get(bundle.port, "/slow?seconds=3", timeout=10))
        )
        thread.start()
        # The first few may race the slow request to nginx; after that none may go to its instance.
        bundle.upstream_counts(3)
        quick = bundle.upstream_counts(20)
        assert not slow, "the slow request ended before the quick ones: the test proves nothing"
        thread.join(10)
        busy = slow[0].headers["X-Upstream"]
        assert busy in (A, B)
        assert quick == {({A, B} - {busy}).pop(): 20}, (busy, quick)


def bridge_subnet() -> str:
    """The default bridge network's subnet: where docker-proxy's connections to nginx come from."""
    networks = json.loads(docker("network", "inspect", "bridge").stdout)
    return networks[0]["IPAM"]["Config"][0]["Subnet"]


def test_ip_hash_behind_a_trusted_proxy_keeps_each_client_on_one_instance() -> None:
    env = {"LB_METHOD": "ip_hash", "REAL_IP_FROM": bridge_subnet(), "DIAGNOSTICS": "on"}
    with running(env) as bundle:
        used = set()
        for client in range(1, 21):
            # ip_hash keys on the first three octets of an IPv4 address: vary the third.
            forwarded = {"X-Forwarded-For": f"198.51.{client}.7"}
            counts = bundle.upstream_counts(5, headers=forwarded)
            assert len(counts) == 1, (forwarded, counts)
            used |= set(counts)
        assert used == {A, B}


def test_ip_hash_ignores_x_forwarded_for_from_untrusted_clients() -> None:
    with running({"LB_METHOD": "ip_hash", "DIAGNOSTICS": "on"}) as bundle:
        used = set()
        for client in range(1, 11):
            used |= set(
                bundle.upstream_counts(1, headers={"X-Forwarded-For": f"198.51.{client}.7"})
            )
        assert len(used) == 1, used


def test_uri_hash_pins_each_uri_to_one_instance_and_uses_all() -> None:
    with running({"LB_METHOD": "uri_hash", "WORKERS": "3", "DIAGNOSTICS": "on"}) as bundle:
        used = set()
        for n in range(50):
            counts = bundle.upstream_counts(3, path=f"/?item={n}")
            assert len(counts) == 1, (n, counts)
            used |= set(counts)
        assert used == {A, B, "127.0.0.1:8002"}


def test_listen_port_8080() -> None:
    with running({"LISTEN_PORT": "8080"}, container_port=8080) as bundle:
        assert bundle.get("/").body == b"Hello, Tornado\n"
        assert "listen 8080 default_server backlog=" in bundle.exec("nginx", "-T").stdout
        assert bundle.exec("healthcheck").returncode == 0


def post_status(port: int, size: int) -> int:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        connection.request("POST", "/", body=b"x" * size)
        return connection.getresponse().status
    finally:
        connection.close()


def test_client_max_body_size_10k() -> None:
    with running({"CLIENT_MAX_BODY_SIZE": "10k"}) as bundle:
        assert post_status(bundle.port, 11 * 1024) == 413
        # Under the limit the body reaches Tornado, which has no POST handler for /.
        assert post_status(bundle.port, 9 * 1024) == 405


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORKERS": "abc"}, "WORKERS='abc' is not allowed: a whole number from 1 to 32"),
        ({"WORKERS": "0"}, "WORKERS='0' is not allowed: a whole number from 1 to 32"),
        ({"WORKERS": "33"}, "WORKERS='33' is not allowed: a whole number from 1 to 32"),
        ({"LB_METHOD": "fair"}, "LB_METHOD='fair' is not allowed: one of round_robin, weighted,"),
        (
            {"LB_METHOD": "weighted", "LB_WEIGHTS": "3,7,1"},
            "LB_WEIGHTS='3,7,1' is not allowed: 2 comma-separated whole numbers",
        ),
        ({"REAL_IP_FROM": "10.0.0.0/33"}, "REAL_IP_FROM='10.0.0.0/33' is not allowed"),
        ({"LISTEN_PORT": "70000"}, "LISTEN_PORT='70000' is not allowed: a whole number from 1"),
        ({"CLIENT_MAX_BODY_SIZE": "lots"}, "CLIENT_MAX_BODY_SIZE='lots' is not allowed"),
        ({"PROXY_READ_TIMEOUT": "2m"}, "PROXY_READ_TIMEOUT='2m' is not allowed: a whole number"),
        ({"INSTANCE_BASE_PORT": "80"}, "INSTANCE_BASE_PORT='80' is not allowed: a whole number"),
        (
            {"WATCHDOG_TIMEOUT": "ten"},
            "WATCHDOG_TIMEOUT='ten' is not allowed: a whole number from 0",
        ),
        ({"BLOCKED_LOOP_WARNING": "1s"}, "BLOCKED_LOOP_WARNING='1s' is not allowed: seconds from"),
        ({"INSTANCE_MAX_MEMORY": "10m"}, "INSTANCE_MAX_MEMORY='10m' is not allowed: a size of at"),
        ({"APP": "main"}, "APP='main' is not allowed: module:attribute, e.g. main:make_app"),
    ],
)
def test_invalid_value_exits_within_5_seconds_with_one_line(
    env: dict[str, str], message: str
) -> None:
    env_options = [f"--env={key}={value}" for key, value in env.items()]
    started = time.monotonic()
    result = docker("run", "--rm", *env_options, IMAGE, check=False, timeout=30)
    assert time.monotonic() - started < 5
    assert result.returncode == 1
    lines = (result.stdout + result.stderr).splitlines()
    assert lines == [f"tornado-bundle: error: {lines[0].split('error: ', 1)[-1]}"], lines
    assert message in lines[0]


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("nomodule:make_app", "APP='nomodule:make_app': no module named 'nomodule'"),
        ("main:nothing", "APP='main:nothing': module 'main' has no attribute 'nothing'"),
        ("main:HelloHandler", "APP='main:HelloHandler': calling HelloHandler() failed:"),
        (
            "tornado.web:HTTPError",
            "APP='tornado.web:HTTPError': HTTPError() gave a HTTPError, not a tornado.web.Ap",
        ),
        ("tornado.test.nonexistent:x", "APP='tornado.test.nonexistent:x': no module named 'torn"),
    ],
)
def test_an_app_that_cannot_load_stops_the_container_within_10_seconds(
    app: str, message: str
) -> None:
    # The instances load the app (the start hook does not import it): each says why, in a line
    # named after it, and the container exits 1 once they have failed their start attempts.
    started = time.monotonic()
    result = docker("run", "--rm", f"--env=APP={app}", IMAGE, check=False, timeout=30)
    assert time.monotonic() - started < 10
    assert result.returncode == 1
    lines = (result.stdout + result.stderr).splitlines()
    assert f"tornado-8000: error: {message}" in "\n".join(lines), lines
    assert lines[-1].startswith("supervisord-fail-fast: exiting with status 1: tornadoes:"), lines


def test_nginx_drop_ins_at_http_and_server_level_are_used_and_checked_at_start(
    tmp_path: Path,
) -> None:
    conf_d, server_d = tmp_path / "conf.d", tmp_path / "server.d"
    conf_d.mkdir()
    server_d.mkdir()
    (conf_d / "probe-map.conf").write_text(
        'map $http_x_probe $probe_answer {\n    default "none";\n    yes "mapped";\n}\n'
    )
    (server_d / "locations.conf").write_text(
        'location = /from-drop-in {\n    return 200 "$probe_answer\\n";\n}\n'
        # Locations of its own that forward as the bundle does (proxy.conf), one with a short
        # proxy_read_timeout (DIAGNOSTICS' /slow).
        "location /slow {\n    include /tmp/nginx/proxy.conf;\n    proxy_read_timeout 1s;\n}\n"
        "location /whoami {\n    include /tmp/nginx/proxy.conf;\n}\n"
    )
    mounts = ("-v", f"{conf_d}:/etc/nginx/conf.d:ro", "-v", f"{server_d}:/etc/nginx/server.d:ro")
    with running({"DIAGNOSTICS": "on"}, options=mounts) as bundle:
        assert bundle.get("/from-drop-in", {"X-Probe": "yes"}).body == b"mapped\n"
        started = time.monotonic()
        assert bundle.get("/slow?seconds=3").status == 504
        assert time.monotonic() - started < 2.5
        assert bundle.get("/").status == 200
        # The client's own Host and address reach the app, as through the bundle's location.
        seen = json.loads(bundle.get("/whoami", {"X-Forwarded-For": "6.6.6.6"}).body)
        assert seen["host"] == f"{LOOPBACK}:{bundle.port}"
        assert seen["remote_ip"] != "6.6.6.6"
    (server_d / "broken.conf").write_text("location /broken {\n    proxy_pass;\n}\n")
    result = docker("run", "--rm", *mounts, IMAGE, check=False, timeout=30)
    assert result.returncode == 1
    lines = (result.stdout + result.stderr).splitlines()
    assert any(
        "nginx rejects its configuration" in line and "/etc/nginx/server.d/broken.conf" in line
        for line in lines
    ), lines


def test_nginx_listens_on_ipv6_too_when_the_container_has_it() -> None:
    # --network host: the host's ::1 is the container's.
    with running({}, host_network=True) as bundle:
        connection = http.client.HTTPConnection("::1", bundle.port, timeout=5)
        try:
            connection.request("GET", "/")
            answer = connection.getresponse()
            assert (answer.status, answer.read()) == (200, b"Hello, Tornado\n")
        finally:
            connection.close()
        assert "(IPv4 and IPv6)" in bundle.logs()
    # Docker's default bridge network has no IPv6: nginx listens on IPv4 only, and says so.
    with running({}) as bundle:
        assert "listen [::]" not in bundle.exec("nginx", "-T").stdout
        assert "(IPv4 only)" in bundle.logs()
