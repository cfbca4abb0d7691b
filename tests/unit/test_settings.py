"""Unit tests of tornado_bundle/settings.py and nginx.py: environment validation, the app's static
settings and the rendered nginx files."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import tornado.web
from repo import ROOT, template

from tornado_bundle import app_loader, nginx
from tornado_bundle.app_loader import AppError
from tornado_bundle.files import write_atomically
from tornado_bundle.limits import Capacity
from tornado_bundle.names import HEALTH_PATH
from tornado_bundle.nginx import StaticFiles
from tornado_bundle.settings import ConfigError, parse

LIMITS = Capacity(open_files=20_000, listen_backlog=4096)


# Where an instance writes the app's static-files location (tornado_bundle/runner.py).
STATIC = f"app.d/{nginx.STATIC_FILES}"


def rendered_files(static: StaticFiles | None = None, **env: str) -> dict[str, str]:
    """The start hook's files, and the one an instance adds for the app's static files."""
    parsed = parse(env)
    files = nginx.render(template, parsed, LIMITS)
    if static is not None:
        files[STATIC] = nginx.render_static(template, parsed, LIMITS, static)
    return files


def rendered(**env: str) -> str:
    """The site as nginx reads it: tornado.conf, and proxy.conf that its location / includes."""
    files = rendered_files(**env)
    return files["tornado.conf"] + files["proxy.conf"]


def test_defaults_reproduce_two_instances_round_robin_on_80() -> None:
    defaults = parse({})
    assert (defaults.workers, list(defaults.ports), defaults.lb_method) == (
        2,
        [8000, 8001],
        "round_robin",
    )
    assert (defaults.listen_port, defaults.metrics_port, defaults.tls) == (80, 9145, False)
    site = rendered()
    servers = re.findall(r"^    server (.*);$", site, re.M)
    assert servers == ["127.0.0.1:8000 weight=1 max_fails=0", "127.0.0.1:8001 weight=1 max_fails=0"]
    assert "listen 80 default_server backlog=" in site
    assert "client_max_body_size 1m;" in site
    assert "proxy_read_timeout 120s;" in site
    assert not nginx.PLACEHOLDER.search(site)
    for absent in ("least_conn", "ip_hash", "hash $request_uri", "real_ip", "X-Upstream"):
        assert absent not in site


@pytest.mark.parametrize(
    ("method", "directive"),
    [
        ("least_conn", "least_conn;"),
        ("ip_hash", "ip_hash;"),
        ("uri_hash", "hash $request_uri consistent;"),
    ],
)
def test_each_strategy_renders_its_directive(method: str, directive: str) -> None:
    assert "upstream tornadoes {\n    # The strategy from LB_METHOD" in rendered(LB_METHOD=method)
    assert f"\n    {directive}\n" in rendered(LB_METHOD=method)


def test_weighted_puts_one_weight_on_each_server() -> None:
    site = rendered(WORKERS="3", LB_METHOD="weighted", LB_WEIGHTS="3,7,1")
    assert "server 127.0.0.1:8000 weight=3 max_fails=0;" in site
    assert "server 127.0.0.1:8001 weight=7 max_fails=0;" in site
    assert "server 127.0.0.1:8002 weight=1 max_fails=0;" in site


def test_workers_sets_the_server_list() -> None:
    site = rendered(WORKERS="4")
    assert [f"127.0.0.1:{port}" in site for port in range(8000, 8005)] == [True] * 4 + [False]


def test_instance_base_port_moves_every_server() -> None:
    site = rendered(INSTANCE_BASE_PORT="9100", WORKERS="3")
    assert [
        f"server 127.0.0.1:{port} weight=1 max_fails=0;" in site for port in (9100, 9102, 9103)
    ] == [
        True,
        True,
        False,
    ]


def test_proxy_read_timeout_is_nginx_s_and_sets_the_websocket_ping() -> None:
    assert "proxy_read_timeout 3s;" in rendered(PROXY_READ_TIMEOUT="3")
    assert parse({"PROXY_READ_TIMEOUT": "3"}).websocket_ping_interval == 1


def test_requests_are_retried_on_errors_only_never_on_timeouts() -> None:
    directives = re.findall(r"^\s*proxy_next_upstream (.*);", rendered(), re.M)
    # location / (proxy.conf) and the health check's location.
    assert directives == ["error", "error"]


def test_websocket_upgrade_only_when_asked() -> None:
    site = rendered()
    maps = (("connection_upgrade", "upgrade"), ("websocket_upgrade", "$http_upgrade"))
    for variable, value in maps:
        assert re.search(
            rf"map \$http_upgrade \${variable} \{{\s*default '';\s*\"~\*\^websocket\$\" "
            rf"{re.escape(value)};\s*}}",
            site,
        ), variable
    assert "proxy_set_header Connection $connection_upgrade;" in site
    assert "proxy_set_header Upgrade $websocket_upgrade;" in site


def test_real_ip_from_trusts_those_proxies_only() -> None:
    site = rendered(REAL_IP_FROM="10.0.0.0/8, 192.168.1.10")
    assert "set_real_ip_from 10.0.0.0/8;" in site
    assert "set_real_ip_from 192.168.1.10/32;" in site
    assert "real_ip_header X-Forwarded-For;" in site


def test_diagnostics_adds_the_upstream_header() -> None:
    assert "add_header X-Upstream $upstream_addr always;" in rendered(DIAGNOSTICS="on")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORKERS": "abc"}, "WORKERS='abc' is not allowed: a whole number from 1 to 32"),
        ({"WORKERS": "0"}, "WORKERS='0' is not allowed: a whole number from 1 to 32"),
        ({"WORKERS": "33"}, "WORKERS='33' is not allowed: a whole number from 1 to 32"),
        ({"WORKERS": ""}, "WORKERS='' is not allowed"),
        ({"LB_METHOD": "fair"}, "LB_METHOD='fair' is not allowed: one of round_robin, weighted"),
        ({"LB_METHOD": "weighted", "LB_WEIGHTS": "3"}, "LB_WEIGHTS='3' is not allowed: 2 comma"),
        ({"LB_METHOD": "weighted"}, "LB_WEIGHTS='' is not allowed: 2 comma-separated"),
        ({"LB_METHOD": "weighted", "LB_WEIGHTS": "3,x"}, "LB_WEIGHTS='3,x' is not allowed"),
        ({"LB_METHOD": "weighted", "LB_WEIGHTS": "0,1"}, "LB_WEIGHTS='0,1' is not allowed"),
        ({"LB_WEIGHTS": "3,7"}, "LB_WEIGHTS='3,7' is not allowed: only with LB_METHOD=weighted"),
        ({"LISTEN_PORT": "0"}, "LISTEN_PORT='0' is not allowed: a whole number from 1 to 65535"),
        ({"LISTEN_PORT": "65536"}, "LISTEN_PORT='65536' is not allowed"),
        ({"LISTEN_PORT": "8001"}, "outside the Tornado ports 8000-8001"),
        ({"CLIENT_MAX_BODY_SIZE": "10 MB"}, "CLIENT_MAX_BODY_SIZE='10 MB' is not allowed"),
        ({"REAL_IP_FROM": "10.0.0.1/8"}, "REAL_IP_FROM='10.0.0.1/8' is not allowed"),
        ({"REAL_IP_FROM": "not-an-ip"}, "REAL_IP_FROM='not-an-ip' is not allowed"),
        ({"REAL_IP_FROM": "0.0.0.0/0"}, "REAL_IP_FROM='0.0.0.0/0' is not allowed: comma"),
        ({"REAL_IP_FROM": "10.0.0.0/8,::/0"}, "none of them all addresses (/0)"),
        ({"DIAGNOSTICS": "yes"}, "DIAGNOSTICS='yes' is not allowed: on or off"),
        ({"PROXY_READ_TIMEOUT": "0"}, "PROXY_READ_TIMEOUT='0' is not allowed: a whole number"),
        ({"PROXY_READ_TIMEOUT": "2m"}, "PROXY_READ_TIMEOUT='2m' is not allowed: a whole number"),
        ({"INSTANCE_BASE_PORT": "80"}, "INSTANCE_BASE_PORT='80' is not allowed: a whole number"),
        ({"INSTANCE_BASE_PORT": "x"}, "INSTANCE_BASE_PORT='x' is not allowed"),
        ({"WATCHDOG_TIMEOUT": "301"}, "WATCHDOG_TIMEOUT='301' is not allowed: a whole number"),
        ({"WATCHDOG_TIMEOUT": "-1"}, "WATCHDOG_TIMEOUT='-1' is not allowed"),
        ({"BLOCKED_LOOP_WARNING": "0.01"}, "BLOCKED_LOOP_WARNING='0.01' is not allowed: seconds"),
        ({"BLOCKED_LOOP_WARNING": "61"}, "BLOCKED_LOOP_WARNING='61' is not allowed"),
        ({"INSTANCE_MAX_MEMORY": "300"}, "INSTANCE_MAX_MEMORY='300' is not allowed: a size of"),
        ({"INSTANCE_MAX_MEMORY": "31m"}, "INSTANCE_MAX_MEMORY='31m' is not allowed"),
        ({"INSTANCE_MAX_MEMORY": "1.5g"}, "INSTANCE_MAX_MEMORY='1.5g' is not allowed"),
        ({"LOG_FORMAT": "JSON"}, "LOG_FORMAT='JSON' is not allowed: text or json"),
        ({"ACCESS_LOG": "false"}, "ACCESS_LOG='false' is not allowed: on or off"),
        ({"METRICS_PORT": "99999"}, "METRICS_PORT='99999' is not allowed: a whole number from 0"),
        ({"METRICS_PORT": "80"}, "METRICS_PORT='80' is not allowed: a port that LISTEN_PORT does"),
        ({"METRICS_PORT": "8001"}, "METRICS_PORT='8001' is not allowed: a port that the Tornado"),
        ({"TLS_PORT": "0"}, "TLS_PORT='0' is not allowed: a whole number from 1 to 65535"),
        ({"TLS_HSTS": "on"}, "TLS_HSTS='on' is not allowed: only with TLS_CERT_FILE and TLS_KEY"),
        ({"TLS_REDIRECT": "on"}, "TLS_REDIRECT='on' is not allowed: only with TLS_CERT_FILE"),
        ({"TLS_REDIRECT": "yes"}, "TLS_REDIRECT='yes' is not allowed: on or off"),
        ({"TLS_CERT_FILE": "/c.pem"}, "TLS_KEY_FILE='' is not allowed: a file path whenever"),
        (
            {"TLS_CERT_FILE": "/a b.pem", "TLS_KEY_FILE": "/k.pem"},
            "TLS_CERT_FILE='/a b.pem' is not allowed: an absolute path of letters",
        ),
        (
            {"TLS_CERT_FILE": "/c.pem", "TLS_KEY_FILE": "/k.pem", "TLS_PORT": "80"},
            "TLS_PORT='80' is not allowed: a port that LISTEN_PORT does not use",
        ),
    ],
)
def test_bad_values_name_the_variable_the_value_and_what_is_allowed(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        parse(env)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_output_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "nginx" / "tornado.conf"
    write_atomically(target, "one")
    # Whatever is written, the target itself is only ever replaced by a rename, never opened.
    opened: list[Path] = []
    original = Path.write_text

    def spy(path: Path, *args: object, **kwargs: object) -> int:
        opened.append(path)
        return original(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_text", spy)
    write_atomically(target, "two")
    assert target.read_text() == "two"
    assert target not in opened and opened, opened
    assert sorted(p.name for p in target.parent.iterdir()) == ["tornado.conf"]


def app_with(tmp_path: Path, **settings: object) -> tornado.web.Application:
    return tornado.web.Application([], **settings)


def test_no_static_path_no_static_location(tmp_path: Path) -> None:
    assert app_loader.static_files(app_with(tmp_path), "x:y") is None
    files = rendered_files()
    assert not any("static" in name for name in files)
    # What the instances write (nothing, here) is included: an empty folder is no error.
    assert "    include /tmp/nginx/app.d/*.conf;" in files["tornado.conf"]


def test_static_location_comes_from_the_app_settings(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    app = app_with(tmp_path, static_path=str(tmp_path / "assets"), static_url_prefix="/assets/")
    static = app_loader.static_files(app, "x:y")
    assert static == StaticFiles(url_prefix="/assets/", path=f"{tmp_path}/assets/")
    files = rendered_files(static)
    assert "    include /tmp/nginx/app.d/*.conf;" in files["tornado.conf"]
    text = files[STATIC]
    assert "location ^~ /assets/ {" in text
    assert f"alias {tmp_path}/assets/;" in text
    assert "@" not in text
    default = app_loader.static_files(app_with(tmp_path, static_path=str(tmp_path)), "x:y")
    assert default is not None and default.url_prefix == "/static/"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"static_path": "/no/such/dir"}, "static_path '/no/such/dir' is not a directory"),
        ({"static_url_prefix": "/static"}, "static_url_prefix '/static' is not a path that"),
        ({"static_url_prefix": "/"}, "static_url_prefix '/' is not a path that"),
        ({"static_url_prefix": "/a b/"}, "static_url_prefix '/a b/' is not a path that"),
    ],
)
def test_static_settings_nginx_cannot_serve_are_one_line(
    tmp_path: Path, settings: dict[str, str], message: str
) -> None:
    app = app_with(tmp_path, **{"static_path": str(tmp_path), **settings})
    with pytest.raises(AppError) as error:
        app_loader.static_files(app, "x:y")
    assert str(error.value).startswith("APP='x:y': ")
    assert message in str(error.value)


def test_static_path_with_nginx_syntax_is_refused(tmp_path: Path) -> None:
    odd = tmp_path / "a;b"
    odd.mkdir()
    with pytest.raises(AppError, match="has characters nginx cannot take"):
        app_loader.static_files(app_with(tmp_path, static_path=str(odd)), "x:y")


def test_watchdog_and_instance_settings() -> None:
    assert (parse({}).watchdog_timeout, parse({}).instance_max_memory) == (10, None)
    assert parse({"INSTANCE_MAX_MEMORY": "1g"}).instance_max_memory == 2**30
    assert parse({"INSTANCE_MAX_MEMORY": "300m"}).instance_max_memory == 300 * 2**20
    assert parse({}).blocked_loop_warning == 1
    assert parse({"BLOCKED_LOOP_WARNING": "0"}).blocked_loop_warning == 0
    assert parse({"BLOCKED_LOOP_WARNING": "0.25"}).blocked_loop_warning == 0.25


def test_connection_limits_come_from_the_open_file_limit() -> None:
    limits = LIMITS
    assert (limits.worker_connections, limits.max_active_requests) == (18_976, 7_116)
    text = rendered_files()["limits.conf"]
    assert "worker_rlimit_nofile 20000;" in text
    assert "worker_connections 18976;" in text
    site = rendered()
    assert "listen 80 default_server backlog=4096;" in site
    assert "limit_conn active_requests 7116;" in site
    assert not nginx.PLACEHOLDER.search(text + site)


def test_the_health_check_script_asks_for_the_path_the_runner_serves() -> None:
    script = (ROOT / "container" / "bin" / "healthcheck").read_text()
    assert f"GET {HEALTH_PATH} HTTP/1.0" in script
    deployment = (ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text()
    # startupProbe, readinessProbe, livenessProbe
    assert re.findall(r"^\s+path: (\S+)", deployment, re.M) == [HEALTH_PATH] * 3


def test_per_client_limits_and_the_health_check_outside_them() -> None:
    site = rendered()
    # auto: half of the 7,116 requests at once that 20,000 open files allow.
    assert "    limit_conn per_client 3558;" in site
    assert "    limit_conn per_client 256;" in rendered(MAX_REQUESTS_PER_CLIENT="256")
    assert "limit_req " not in site.replace("limit_req_status", "")
    health = site[site.index("location = /healthz {") :]
    health = health[: health.index("}")]
    assert "limit_conn health_checks 64;" in health and "per_client" not in health
    limited = rendered_files(
        StaticFiles("/static/", "/app/static/"), RATE_LIMIT="20r/m", MAX_REQUESTS_PER_CLIENT="0"
    )
    assert "limit_conn per_client" not in limited["tornado.conf"]
    assert "limit_req_zone $binary_remote_addr zone=rate:10m rate=20r/m;" in limited["tornado.conf"]
    for name in ("tornado.conf", STATIC):
        assert "limit_req zone=rate burst=40 nodelay;" in limited[name]
    with pytest.raises(ConfigError, match="RATE_LIMIT='20/s' is not allowed: off, or a whole"):
        parse({"RATE_LIMIT": "20/s"})


@pytest.mark.parametrize(
    ("value", "has_ipv6", "listens"),
    [("auto", True, True), ("auto", False, False), ("on", False, True), ("off", True, False)],
)
def test_listen_ipv6_adds_the_ipv6_listen_lines(value: str, has_ipv6: bool, listens: bool) -> None:
    limits = dataclasses.replace(LIMITS, ipv6=has_ipv6)
    site = nginx.render(template, parse({"LISTEN_IPV6": value}), limits)["tornado.conf"]
    assert ("    listen [::]:80 default_server backlog=" in site) is listens
    assert "    listen 80 default_server backlog=" in site
