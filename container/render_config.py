"""Validates the bundle's environment and renders the nginx site from tornado.conf.

Runs once at container start, before any process (docker-entrypoint.d/10-render-config.sh).
A wrong value stops the container with one line: the variable, the bad value, what is allowed.
The Tornado ports come from supervisord.conf (numprocs_start), so the Supervisor side and the
nginx upstream cannot drift apart.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SUPERVISORD_CONF = Path("/etc/supervisor/supervisord.conf")
TEMPLATE = Path("/etc/nginx/templates/tornado.conf")
OUTPUT = Path("/tmp/nginx/tornado.conf")
TORNADO_PROGRAM = "program:tornado"

MAX_WORKERS = 32
MAX_WEIGHT = 1000
LB_DIRECTIVES = {
    "round_robin": "",
    "weighted": "",
    "least_conn": "least_conn;",
    "ip_hash": "ip_hash;",
    "uri_hash": "hash $request_uri consistent;",
}
DEFAULTS = {
    "WORKERS": "2",
    "LB_METHOD": "round_robin",
    "LB_WEIGHTS": "",
    "LISTEN_PORT": "80",
    "CLIENT_MAX_BODY_SIZE": "1m",
    "REAL_IP_FROM": "",
    "DIAGNOSTICS": "off",
}
NGINX_SIZE = re.compile(r"[0-9]{1,9}[kKmMgG]?")


class ConfigError(ValueError):
    """One line for the user: which variable, which value, what is allowed."""

    def __init__(self, name: str, value: str, allowed: str) -> None:
        super().__init__(f"{name}={value!r} is not allowed: {allowed}")


@dataclass(frozen=True)
class Settings:
    workers: int
    lb_method: str
    weights: tuple[int, ...]
    listen_port: int
    client_max_body_size: str
    real_ip_from: tuple[str, ...]
    diagnostics: bool


def _whole_number(name: str, value: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]+", value) or not low <= int(value) <= high:
        raise ConfigError(name, value, f"a whole number from {low} to {high}")
    return int(value)


def _weights(value: str, lb_method: str, workers: int) -> tuple[int, ...]:
    if lb_method != "weighted":
        if value:
            raise ConfigError("LB_WEIGHTS", value, "only with LB_METHOD=weighted")
        return ()
    allowed = (
        f"{workers} comma-separated whole numbers from 1 to {MAX_WEIGHT}, "
        f"one per worker (WORKERS={workers}), e.g. {','.join(['1'] * workers)}"
    )
    parts = value.split(",") if value else []
    if len(parts) != workers or not all(
        re.fullmatch(r"[0-9]+", p.strip()) and 1 <= int(p) <= MAX_WEIGHT for p in parts
    ):
        raise ConfigError("LB_WEIGHTS", value, allowed)
    return tuple(int(p) for p in parts)


def _networks(value: str) -> tuple[str, ...]:
    networks = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        try:
            networks.append(str(ipaddress.ip_network(part, strict=True)))
        except ValueError:
            raise ConfigError(
                "REAL_IP_FROM",
                value,
                "comma-separated IP addresses or CIDRs with no host bits set, "
                "e.g. 10.0.0.0/8,192.168.1.10",
            ) from None
    return tuple(networks)


def parse_settings(environ: Mapping[str, str], first_port: int) -> Settings:
    """The validated settings; raises ConfigError on the first wrong value."""
    env = {name: environ.get(name, default) for name, default in DEFAULTS.items()}
    workers = _whole_number("WORKERS", env["WORKERS"], 1, MAX_WORKERS)
    lb_method = env["LB_METHOD"]
    if lb_method not in LB_DIRECTIVES:
        raise ConfigError("LB_METHOD", lb_method, "one of " + ", ".join(LB_DIRECTIVES))
    listen_port = _whole_number("LISTEN_PORT", env["LISTEN_PORT"], 1, 65535)
    tornado_ports = range(first_port, first_port + workers)
    if listen_port in tornado_ports:
        raise ConfigError(
            "LISTEN_PORT",
            env["LISTEN_PORT"],
            f"a port from 1 to 65535 outside the Tornado ports "
            f"{tornado_ports.start}-{tornado_ports.stop - 1}",
        )
    if not NGINX_SIZE.fullmatch(env["CLIENT_MAX_BODY_SIZE"]):
        raise ConfigError(
            "CLIENT_MAX_BODY_SIZE",
            env["CLIENT_MAX_BODY_SIZE"],
            "an nginx size: digits with an optional k, m or g suffix, e.g. 1m, 512k "
            "(0 disables the check)",
        )
    if env["DIAGNOSTICS"] not in ("on", "off"):
        raise ConfigError("DIAGNOSTICS", env["DIAGNOSTICS"], "on or off")
    return Settings(
        workers=workers,
        lb_method=lb_method,
        weights=_weights(env["LB_WEIGHTS"], lb_method, workers),
        listen_port=listen_port,
        client_max_body_size=env["CLIENT_MAX_BODY_SIZE"],
        real_ip_from=_networks(env["REAL_IP_FROM"]),
        diagnostics=env["DIAGNOSTICS"] == "on",
    )


def first_tornado_port(supervisord_conf: str) -> int:
    """numprocs_start of [program:tornado]: the first instance's port."""
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read_string(supervisord_conf)
    return int(parser.get(TORNADO_PROGRAM, "numprocs_start"))


def _indented(lines: list[str], depth: int) -> str:
    return "\n".join(" " * depth + line for line in lines)


def render(template: str, settings: Settings, first_port: int) -> str:
    """The nginx site for these settings."""
    servers = []
    for index in range(settings.workers):
        weight = f" weight={settings.weights[index]}" if settings.weights else ""
        servers.append(f"server 127.0.0.1:{first_port + index}{weight} max_fails=0;")
    real_ip = []
    if settings.real_ip_from:
        real_ip = [f"set_real_ip_from {network};" for network in settings.real_ip_from]
        real_ip += ["real_ip_header X-Forwarded-For;", "real_ip_recursive on;"]
    diagnostics = []
    if settings.diagnostics:
        # DIAGNOSTICS=on only: tells tests which instance answered. Never in production.
        diagnostics = ["add_header X-Upstream $upstream_addr always;"]
    values = {
        "LB_METHOD_DIRECTIVE": _indented([LB_DIRECTIVES[settings.lb_method]], 4),
        "UPSTREAM_SERVERS": _indented(servers, 4),
        "LISTEN_PORT": str(settings.listen_port),
        "CLIENT_MAX_BODY_SIZE": settings.client_max_body_size,
        "REAL_IP": _indented(real_ip, 4),
        "DIAGNOSTICS": _indented(diagnostics, 8),
    }
    placeholders = re.compile("@(" + "|".join(values) + ")@")
    rendered = placeholders.sub(lambda match: values[match.group(1)], template)
    # Placeholders that render to nothing leave whitespace-only lines behind.
    return re.sub(r"(?m)^[ \t]+$\n", "", rendered)


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    partial.replace(path)


def main() -> int:
    program = Path(sys.argv[0]).name
    try:
        first_port = first_tornado_port(SUPERVISORD_CONF.read_text())
        settings = parse_settings(os.environ, first_port)
    except ConfigError as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return 1
    try:
        write_atomically(OUTPUT, render(TEMPLATE.read_text(), settings, first_port))
    except OSError as error:
        print(
            f"{program}: error: cannot write {OUTPUT}: {error.strerror}; /tmp must be writable "
            "(with --read-only, add --tmpfs /tmp)",
            file=sys.stderr,
        )
        return 1
    method = settings.lb_method + (f" {settings.weights}" if settings.weights else "")
    print(
        f"{program}: {settings.workers} Tornado instance(s) on ports {first_port}-"
        f"{first_port + settings.workers - 1}, {method}, nginx on :{settings.listen_port}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
