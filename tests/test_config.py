"""Unit tests of tornado_bundle/config.py: environment validation, the app's static settings and
the rendered nginx files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tornado.web

from tornado_bundle import app_loader, config
from tornado_bundle.app_loader import AppError
from tornado_bundle.config import ConfigError, Settings, StaticFiles, parse_settings, render

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = (ROOT / "tornado.conf").read_text()
STATIC_TEMPLATE = (ROOT / "container" / "static-files.conf").read_text()


def rendered(**env: str) -> str:
    return render(TEMPLATE, parse_settings(env))


def test_dockerfile_env_agrees_with_the_defaults() -> None:
    """The Dockerfile repeats the defaults that supervisord.conf expands; config.py owns them."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    env_block = re.search(r"^ENV (.*?)\n\n", dockerfile, re.S | re.M)
    assert env_block, "no ENV block in the Dockerfile"
    pairs = dict(re.findall(r"([A-Z_]+)=(\S+?)\s*\\?$", env_block.group(1), re.M))
    repeated = {name: value for name, value in pairs.items() if name in config.DEFAULTS}
    assert repeated, pairs
    assert repeated == {name: config.DEFAULTS[name] for name in repeated}
    supervisord = (ROOT / "supervisord.conf").read_text()
    for name in re.findall(r"%\(ENV_([A-Z_]+)\)s", supervisord):
        assert name in repeated, f"supervisord.conf expands {name}, which the image does not set"
    exposed = re.search(r"^EXPOSE (.*)$", dockerfile, re.M)
    assert exposed
    ports = ("LISTEN_PORT", "TLS_PORT", "METRICS_PORT")
    assert exposed.group(1).split() == [config.DEFAULTS[name] for name in ports]


def test_defaults_reproduce_two_instances_round_robin_on_80() -> None:
    assert parse_settings({}) == Settings(
        workers=2,
        base_port=8000,
        lb_method="round_robin",
        weights=(),
        listen_port=80,
        client_max_body_size="1m",
        proxy_read_timeout=120,
        real_ip_from=(),
        diagnostics=False,
        tls=None,
        log_format="text",
        access_log=True,
        metrics_port=9145,
    )
    site = rendered()
    assert "server 127.0.0.1:8000 max_fails=0;\n    server 127.0.0.1:8001 max_fails=0;" in site
    assert "listen 80 default_server backlog=" in site
    assert "client_max_body_size 1m;" in site
    assert "proxy_read_timeout 120s;" in site
    for absent in ("least_conn", "ip_hash", "hash $request_uri", "real_ip", "X-Upstream", "@"):
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
    assert [f"server 127.0.0.1:{port} max_fails=0;" in site for port in (9100, 9102, 9103)] == [
        True,
        True,
        False,
    ]


def test_proxy_read_timeout_is_nginx_s_and_sets_the_websocket_ping() -> None:
    assert "proxy_read_timeout 3s;" in rendered(PROXY_READ_TIMEOUT="3")
    assert config.instance_settings({"PROXY_READ_TIMEOUT": "3"}).websocket_ping_interval == 1


def test_requests_are_retried_on_errors_only_never_on_timeouts() -> None:
    directives = re.findall(r"^\s*proxy_next_upstream (.*);", rendered(), re.M)
    assert directives == ["error"]


def test_websocket_upgrade_only_when_asked() -> None:
    site = rendered()
    assert re.search(
        r"map \$http_upgrade \$connection_upgrade \{\s*default upgrade;\s*'' '';", site
    )
    assert "proxy_set_header Connection $connection_upgrade;" in site
    assert "proxy_set_header Upgrade $http_upgrade;" in site


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
        parse_settings(env)
        config.instance_settings(env)
        config.watchdog_settings(env)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_output_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "nginx" / "tornado.conf"
    config.write_atomically(target, "one")
    # Whatever is written, the target itself is only ever replaced by a rename, never opened.
    opened: list[Path] = []
    original = Path.write_text

    def spy(path: Path, *args: object, **kwargs: object) -> int:
        opened.append(path)
        return original(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_text", spy)
    config.write_atomically(target, "two")
    assert target.read_text() == "two"
    assert target not in opened and opened, opened
    assert sorted(p.name for p in target.parent.iterdir()) == ["tornado.conf"]


def app_with(tmp_path: Path, **settings: object) -> tornado.web.Application:
    return tornado.web.Application([], **settings)


def test_no_static_path_no_static_location(tmp_path: Path) -> None:
    assert app_loader.static_files(app_with(tmp_path), "x:y") is None
    assert "location" not in config.render_static(STATIC_TEMPLATE, None)


def test_static_location_comes_from_the_app_settings(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    app = app_with(tmp_path, static_path=str(tmp_path / "assets"), static_url_prefix="/assets/")
    static = app_loader.static_files(app, "x:y")
    assert static == StaticFiles(url_prefix="/assets/", path=f"{tmp_path}/assets/")
    text = config.render_static(STATIC_TEMPLATE, static)
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
    assert config.watchdog_settings({}) == config.WatchdogSettings(10, None)
    assert config.watchdog_settings({"INSTANCE_MAX_MEMORY": "1g"}).max_memory_bytes == 2**30
    assert config.watchdog_settings({"INSTANCE_MAX_MEMORY": "300m"}).max_memory_bytes == (
        300 * 2**20
    )
    assert config.instance_settings({}).blocked_loop_warning == 1
    assert config.instance_settings({"BLOCKED_LOOP_WARNING": "0"}).blocked_loop_warning == 0
    assert config.instance_settings({"BLOCKED_LOOP_WARNING": "0.25"}).blocked_loop_warning == 0.25


def test_connection_limits_come_from_the_open_file_limit() -> None:
    limits = config.Capacity(open_files=20_000, listen_backlog=4096)
    assert (limits.worker_connections, limits.max_active_requests) == (18_976, 7_116)
    text = config.render_limits((ROOT / "container" / "limits.conf").read_text(), limits)
    assert "worker_rlimit_nofile 20000;" in text
    assert "worker_connections 18976;" in text
    site = render(TEMPLATE, parse_settings({}), limits)
    assert "listen 80 default_server backlog=4096;" in site
    assert "limit_conn active_requests 7116;" in site
    assert "@" not in text + site


def test_the_health_check_script_asks_for_the_path_the_runner_serves() -> None:
    script = (ROOT / "container" / "bin" / "healthcheck").read_text()
    assert f"GET {config.HEALTH_PATH} HTTP/1.0" in script
    deployment = (ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text()
    assert re.findall(r"^\s+path: (\S+)", deployment, re.M) == [config.HEALTH_PATH] * 2
