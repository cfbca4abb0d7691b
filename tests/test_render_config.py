"""Unit tests of render_config.py: environment validation and the rendered nginx site."""

from __future__ import annotations

from pathlib import Path

import pytest

import render_config
from render_config import ConfigError, Settings, parse_settings, render

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = (ROOT / "tornado.conf").read_text()
FIRST_PORT = render_config.first_tornado_port((ROOT / "supervisord.conf").read_text())


def rendered(**env: str) -> str:
    return render(TEMPLATE, parse_settings(env, FIRST_PORT), FIRST_PORT)


def test_first_port_comes_from_supervisord_conf() -> None:
    assert FIRST_PORT == 8000


def test_defaults_reproduce_two_instances_round_robin_on_80() -> None:
    assert parse_settings({}, FIRST_PORT) == Settings(
        workers=2,
        lb_method="round_robin",
        weights=(),
        listen_port=80,
        client_max_body_size="1m",
        real_ip_from=(),
        diagnostics=False,
    )
    site = rendered()
    assert "server 127.0.0.1:8000 max_fails=0;\n    server 127.0.0.1:8001 max_fails=0;" in site
    assert "listen 80 default_server;" in site
    assert "client_max_body_size 1m;" in site
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
    ],
)
def test_bad_values_name_the_variable_the_value_and_what_is_allowed(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        parse_settings(env, FIRST_PORT)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_output_is_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "nginx" / "tornado.conf"
    render_config.write_atomically(target, "one")
    render_config.write_atomically(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["tornado.conf"]
