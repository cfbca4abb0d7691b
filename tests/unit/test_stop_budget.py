"""The stop budget, read from the real files: every number has one home, and this test holds
their order. nginx must let go of idle upstream connections before a draining instance gives up
on them; each program's drain must end before Supervisor's SIGKILL; the programs stop one group
after the other, and the sum must fit in what Docker, Compose and Kubernetes allow.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKER_STOP_TIMEOUT = 10  # `docker stop`'s default grace, before SIGKILL


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", value.strip())
    assert match, value
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1, "m": 60}[unit]


def nginx_directive(text: str, name: str, block: str | None = None) -> float:
    if block is not None:
        text = re.search(block + r"\s*\{(.*?)\n\}", text, re.S).group(1)  # type: ignore[union-attr]
    values = re.findall(rf"^\s*{name}\s+(\S+);", text, re.M)
    assert len(values) == 1, (name, values)
    return seconds(values[0])


def supervisor() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read_string((ROOT / "supervisord.conf").read_text())
    return parser


def budget() -> dict[str, float]:
    site = (ROOT / "tornado.conf").read_text()
    conf = supervisor()
    drain = re.search(r"--drain_timeout=(\S+)", conf.get("program:tornado", "command"))
    assert drain, "supervisord.conf passes no --drain_timeout"
    return {
        "upstream keepalive_timeout": nginx_directive(site, "keepalive_timeout", r"upstream \w+"),
        "nginx worker_shutdown_timeout": nginx_directive(
            (ROOT / "container" / "nginx" / "nginx.conf").read_text(), "worker_shutdown_timeout"
        ),
        "tornado drain": seconds(drain.group(1)),
        "tornado stopwaitsecs": float(conf.get("program:tornado", "stopwaitsecs")),
        "nginx stopwaitsecs": float(conf.get("program:nginx", "stopwaitsecs")),
    }


def test_each_drain_ends_before_the_step_after_it() -> None:
    b = budget()
    print(b)
    # An idle upstream connection is closed by nginx, not cut by the draining instance.
    assert b["upstream keepalive_timeout"] < b["tornado drain"]
    # Each drain ends before Supervisor's SIGKILL.
    assert b["tornado drain"] < b["tornado stopwaitsecs"]
    assert b["nginx worker_shutdown_timeout"] < b["nginx stopwaitsecs"]


def test_nginx_stops_before_the_instances_it_sends_requests_to() -> None:
    conf = supervisor()
    # Supervisor stops the highest priority number first.
    assert int(conf.get("program:nginx", "priority")) > int(conf.get("group:tornadoes", "priority"))


def stop_sum() -> float:
    b = budget()
    return b["nginx stopwaitsecs"] + b["tornado stopwaitsecs"]


def test_the_whole_stop_fits_in_docker_compose_and_kubernetes_grace() -> None:
    total = stop_sum()
    assert total < DOCKER_STOP_TIMEOUT
    compose = (ROOT / "deploy" / "compose.yaml").read_text()
    grace = re.search(r"^\s*stop_grace_period:\s*(\S+)", compose, re.M)
    assert grace and total < seconds(grace.group(1))
    deployment = (ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text()
    k8s = re.search(r"terminationGracePeriodSeconds:\s*(\d+)", deployment)
    # Kubernetes counts the preStop pause inside the grace period.
    pause = re.search(r'preStop:\s*exec:\s*command: \["sleep", "(\d+)"\]', deployment)
    assert k8s and pause and int(pause.group(1)) + total < int(k8s.group(1))


def test_the_runner_s_default_drain_is_the_one_supervisor_passes() -> None:
    from tornado_bundle.runner import parse_arguments

    assert parse_arguments([])[1] == budget()["tornado drain"]
