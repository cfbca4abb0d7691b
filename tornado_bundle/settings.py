"""Every environment variable the bundle reads: one entry each in TABLE (name, default, what is
allowed, what it does, its section), in the spirit of gunicorn's config.py.

The start hook (tornado_bundle/start.py) parses the environment once into a frozen Settings and
writes it to SETTINGS_FILE; every process reads that file (load()), never the environment again.
docs/configuration.md is generated from TABLE (`make docs`, or `python -m tornado_bundle.settings`)
and tests/unit/test_settings.py fails when the two differ.

A wrong value is a ConfigError: one line with the variable, the bad value and what is allowed.
Nothing here imports Tornado or the app: PID 1 imports this module.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tornado_bundle import certificates
from tornado_bundle.names import SETTINGS_FILE

MAX_WORKERS = 32
MAX_WEIGHT = 1000
MIN_MEMORY_MIB = 32
NGINX_SIZE = re.compile(r"[0-9]{1,9}[kKmMgG]?")
MEMORY_SIZE = re.compile(r"([0-9]{1,6})([mMgG])")
# What may stand unquoted in an nginx path or location: nothing that ends a directive.
NGINX_SAFE_PATH = re.compile(r"/[A-Za-z0-9._~/-]*")
LB_METHODS = ("round_robin", "weighted", "least_conn", "ip_hash", "uri_hash", "sticky")
# APP: a module path and an attribute name (what the instances import is checked as they load it).
APP_SPEC = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


class ConfigError(ValueError):
    """One line for the user: which variable, which value, what is allowed."""

    def __init__(self, name: str, value: str, allowed: str) -> None:
        super().__init__(f"{name}={value!r} is not allowed: {allowed}")


class NotAllowed(ValueError):
    """Raised by a parser: the value is not what its entry allows."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    section: str
    # What is allowed, for the error line and the documentation.
    allowed: str
    doc: str
    parse: Callable[[str], Any]

    @property
    def field(self) -> str:
        return self.name.lower()


def _whole_number(low: int, high: int) -> tuple[str, Callable[[str], int]]:
    def parse(value: str) -> int:
        if not re.fullmatch(r"[0-9]+", value) or not low <= int(value) <= high:
            raise NotAllowed
        return int(value)

    return f"a whole number from {low} to {high}", parse


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise NotAllowed
    return value == "on"


def _one_of(*choices: str) -> tuple[str, Callable[[str], str]]:
    def parse(value: str) -> str:
        if value not in choices:
            raise NotAllowed
        return value

    return "one of " + ", ".join(choices), parse


def _text(pattern: re.Pattern[str] | None = None) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if pattern is not None and value and not pattern.fullmatch(value):
            raise NotAllowed
        return value

    return parse


def _weights(value: str) -> tuple[int, ...]:
    parts = value.split(",") if value else []
    if not all(re.fullmatch(r"[0-9]+", p.strip()) and 1 <= int(p) <= MAX_WEIGHT for p in parts):
        raise NotAllowed
    return tuple(int(p) for p in parts)


def _networks(value: str) -> tuple[str, ...]:
    try:
        parts = (p.strip() for p in value.split(","))
        networks = [ipaddress.ip_network(p, strict=True) for p in parts if p]
    except ValueError:
        raise NotAllowed from None
    # 0.0.0.0/0 or ::/0 would let every client choose its own address and request ID.
    if any(network.prefixlen == 0 for network in networks):
        raise NotAllowed
    return tuple(map(str, networks))


def _address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise NotAllowed from None


def _auto_or_number(value: str) -> int | None:
    """None for auto (decided from the container's limits when nginx's files are rendered)."""
    if value == "auto":
        return None
    return _whole_number(0, 1_000_000)[1](value)


def _rate(value: str) -> str:
    if value == "off":
        return ""
    match = re.fullmatch(r"([0-9]{1,6})r/[sm]", value)
    if not match or not 1 <= int(match.group(1)) <= 100_000:
        raise NotAllowed
    return value


def _seconds_or_off(value: str) -> float:
    if not re.fullmatch(r"[0-9]{1,2}(\.[0-9]{1,3})?", value) or not (
        float(value) == 0 or 0.05 <= float(value) <= 60
    ):
        raise NotAllowed
    return float(value)


def _memory(value: str) -> int | None:
    if value == "off":
        return None
    match = MEMORY_SIZE.fullmatch(value)
    mib = int(match.group(1)) * (1024 if match.group(2) in "gG" else 1) if match else 0
    if mib < MIN_MEMORY_MIB:
        raise NotAllowed
    return mib * 1024 * 1024


def _entry(
    name: str, default: str, section: str, doc: str, rule: tuple[str, Callable[[str], Any]]
) -> Setting:
    allowed, parse = rule
    return Setting(name, default, section, allowed, doc, parse)


ON_OFF = ("on or off", _on_off)
PORT = _whole_number(1, 65535)
INSTANCES = "Instances"
NGINX = "nginx"
HTTPS = "HTTPS"
OBSERVING = "Logs and metrics"

TABLE: tuple[Setting, ...] = (
    _entry(
        "APP", "main:make_app", INSTANCES,
        "The app every instance serves: a module importable from /app and, in it, an "
        "Application, a class or function returning one, an async function returning one, or "
        "an async context manager yielding one (README: Bring your app). Each instance loads "
        "it on its own event loop; the start hook does not import it.",
        ("module:attribute, e.g. main:make_app", _text(APP_SPEC)),
    ),
    _entry(
        "WORKERS", "2", INSTANCES,
        "How many Tornado instances, one process per port, named tornadoes:tornado-PORT.",
        _whole_number(1, MAX_WORKERS),
    ),
    _entry(
        "INSTANCE_BASE_PORT", "8000", INSTANCES,
        "The first instance's port on 127.0.0.1; the others follow. With --network host, keep "
        "them apart from the host's own ports.",
        _whole_number(1024, 65535),
    ),
    _entry(
        "STARTUP_TIMEOUT", "60", INSTANCES,
        "Seconds an instance may take from its start until it listens (importing the app, its "
        "async setup; nginx sends it nothing before, and WATCHDOG_TIMEOUT applies only after). "
        "Past it, its stacks are logged and it is killed; two failed starts in a row stop the "
        "container with exit code 1.",
        _whole_number(1, 3600),
    ),
    _entry(
        "WATCHDOG_TIMEOUT", "10", INSTANCES,
        "Seconds an instance may go without answering /healthz before its stacks are logged and "
        "it is killed and replaced; 0: never.",
        _whole_number(0, 300),
    ),
    _entry(
        "BLOCKED_LOOP_WARNING", "1", INSTANCES,
        "Seconds an instance's event loop may be blocked before the instance logs what blocks "
        "it; 0: off.",
        ("seconds from 0.05 to 60 (e.g. 1 or 0.5), or 0 for off", _seconds_or_off),
    ),
    _entry(
        "INSTANCE_MAX_MEMORY", "off", INSTANCES,
        "An instance whose resident memory is above this is restarted gracefully (drained).",
        (
            f"a size of at least {MIN_MEMORY_MIB}m with an m or g suffix (e.g. 300m, 1g), or off",
            _memory,
        ),
    ),
    _entry(
        "LISTEN_PORT", "80", NGINX,
        "nginx's HTTP port, the container's way in (not one of the instances' ports).",
        PORT,
    ),
    _entry(
        "LISTEN_IPV6", "auto", NGINX,
        "Whether nginx listens on IPv6 ([::]) too, on LISTEN_PORT and TLS_PORT: auto when the "
        "container has an IPv6 address (--network host, an IPv6-enabled network), on, or off.",
        _one_of("auto", "on", "off"),
    ),
    _entry(
        "LB_METHOD", "round_robin", NGINX,
        "How nginx spreads requests over the instances; sticky keeps each browser on one "
        "instance by a cookie (docs/operating.md: Load-balancing strategies).",
        _one_of(*LB_METHODS),
    ),
    _entry(
        "LB_WEIGHTS", "", NGINX,
        "With LB_METHOD=weighted only: one weight per instance, e.g. 3,7.",
        (f"comma-separated whole numbers from 1 to {MAX_WEIGHT}, one per instance", _weights),
    ),
    _entry(
        "MAX_REQUESTS_PER_CLIENT", "auto", NGINX,
        "Requests (and WebSockets) one client address may have open at once; past it, 503. "
        "auto: half of the limit for all together (from the open-file limit), so that no one "
        "address can deny the others; 0: no limit per client. Behind a proxy, set "
        "REAL_IP_FROM, or every client counts as the proxy's address.",
        ("auto, or a whole number from 0 to 1000000", _auto_or_number),
    ),
    _entry(
        "RATE_LIMIT", "off", NGINX,
        "Requests per second (r/s) or minute (r/m) one client address may send, with a burst of "
        "twice as many; past it, 429. The health check is outside it.",
        ("off, or a whole number from 1 to 100000 followed by r/s or r/m, e.g. 20r/s", _rate),
    ),
    _entry(
        "CLIENT_MAX_BODY_SIZE", "1m", NGINX,
        "The largest request body accepted; above it, 413 from nginx. The instances take the "
        "same limit (Tornado's max_body_size); bodies are streamed to them as they arrive "
        "(docs/apps.md: Uploads).",
        (
            "an nginx size: digits with an optional k, m or g suffix, e.g. 1m, 512k "
            "(0 disables the check)",
            _text(NGINX_SIZE),
        ),
    ),
    _entry(
        "PROXY_READ_TIMEOUT", "120", NGINX,
        "Seconds nginx waits between two reads from an instance (long polls, quiet streams); "
        "then 504. Idle WebSockets are pinged three times within it.",
        _whole_number(1, 3600),
    ),
    _entry(
        "REAL_IP_FROM", "", NGINX,
        "The proxies whose X-Forwarded-For (and X-Request-ID) are believed: the client address "
        "the app sees is then the one they name.",
        (
            "comma-separated IP addresses or CIDRs with no host bits set, none of them all "
            "addresses (/0), e.g. 10.0.0.0/8,192.168.1.10",
            _networks,
        ),
    ),
    _entry(
        "TLS_CERT_FILE", "", HTTPS,
        "A PEM certificate (chain) readable by uid 10001: HTTPS and HTTP/2 on TLS_PORT. Set "
        "both files or neither.",
        ("an absolute path of letters, digits and ._~/-", _text(NGINX_SAFE_PATH)),
    ),
    _entry(
        "TLS_KEY_FILE", "", HTTPS,
        "The certificate's unencrypted PEM private key, readable by uid 10001.",
        ("an absolute path of letters, digits and ._~/-", _text(NGINX_SAFE_PATH)),
    ),
    _entry("TLS_PORT", "443", HTTPS, "nginx's HTTPS port, with a certificate.", PORT),
    _entry(
        "TLS_HSTS", "off", HTTPS,
        "on: Strict-Transport-Security (two years) on HTTPS answers.",
        ON_OFF,
    ),
    _entry(
        "TLS_REDIRECT", "off", HTTPS,
        "on: plain HTTP answers 308 to the same URL over HTTPS (except the health check).",
        ON_OFF,
    ),
    _entry(
        "LOG_FORMAT", "text", OBSERVING,
        "text, or json: one JSON object per line from every process.",
        ("text or json", _one_of("text", "json")[1]),
    ),
    _entry(
        "ACCESS_LOG", "on", OBSERVING,
        "off: no line per request (warnings and errors stay).",
        ON_OFF,
    ),
    _entry(
        "METRICS_PORT", "9145", OBSERVING,
        "Prometheus metrics on this port only, never on LISTEN_PORT; 0: off.",
        _whole_number(0, 65535),
    ),
    _entry(
        "METRICS_ADDRESS", "0.0.0.0", OBSERVING,
        "The address the metrics endpoint listens on: 0.0.0.0 for Prometheus on the container's "
        "network, 127.0.0.1 for a scraper in the same network namespace only, :: for IPv6 too.",
        ("an IPv4 or IPv6 address of this container, e.g. 0.0.0.0, 127.0.0.1, ::", _address),
    ),
    _entry(
        "DIAGNOSTICS", "off", OBSERVING,
        "on: /slow, /block, /grow and /whoami in the app and an X-Upstream header, for tests "
        "and demos only.",
        ON_OFF,
    ),
)  # fmt: skip
BY_NAME = {setting.name: setting for setting in TABLE}


@dataclass(frozen=True)
class Settings:
    """The parsed value of every entry of TABLE, by its name in lower case."""

    app: str
    workers: int
    instance_base_port: int
    startup_timeout: int
    watchdog_timeout: int
    blocked_loop_warning: float
    instance_max_memory: int | None
    listen_port: int
    listen_ipv6: str
    lb_method: str
    lb_weights: tuple[int, ...]
    max_requests_per_client: int | None
    rate_limit: str
    client_max_body_size: str
    proxy_read_timeout: int
    real_ip_from: tuple[str, ...]
    tls_cert_file: str
    tls_key_file: str
    tls_port: int
    tls_hsts: bool
    tls_redirect: bool
    log_format: str
    access_log: bool
    metrics_port: int
    metrics_address: str
    diagnostics: bool

    @property
    def ports(self) -> range:
        return range(self.instance_base_port, self.instance_base_port + self.workers)

    @property
    def client_max_body_bytes(self) -> int | None:
        """CLIENT_MAX_BODY_SIZE in bytes, as nginx counts it (k, m, g: powers of 1024); None for
        0, no limit."""
        number, unit = re.fullmatch(r"([0-9]+)([kKmMgG]?)", self.client_max_body_size).groups()
        size = int(number) * 1024 ** " kmg".index(unit.lower() or " ")
        return size or None

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)

    @property
    def websocket_ping_interval(self) -> float:
        # Three pings per nginx read timeout: an idle WebSocket is never cut by nginx, and one
        # lost ping is not yet a timeout.
        return self.proxy_read_timeout / 3


def parse(environ: Mapping[str, str]) -> Settings:
    """The validated settings; raises ConfigError on the first wrong value."""
    raw = {setting.name: environ.get(setting.name, setting.default) for setting in TABLE}
    values = {}
    for setting in TABLE:
        try:
            values[setting.field] = setting.parse(raw[setting.name])
        except NotAllowed:
            raise ConfigError(setting.name, raw[setting.name], setting.allowed) from None
    settings = Settings(**values)
    # The rules that join several settings, after each one alone is right.
    for check in (_instance_ports, _weights_per_instance, _tls_pair, _distinct_ports):
        check(settings, raw)
    if settings.tls:
        # Raises certificates.CertificateError: a missing, unreadable or expired file.
        certificates.check(settings.tls_cert_file, settings.tls_key_file)
    return settings


def defaults() -> Settings:
    return parse({})


def _instance_ports(s: Settings, raw: Mapping[str, str]) -> None:
    if s.instance_base_port + s.workers - 1 > 65535:
        allowed = _whole_number(1024, 65535 - s.workers)[0]
        raise ConfigError("INSTANCE_BASE_PORT", raw["INSTANCE_BASE_PORT"], allowed)
    if s.listen_port in s.ports:
        raise ConfigError(
            "LISTEN_PORT",
            raw["LISTEN_PORT"],
            f"a port from 1 to 65535 outside the Tornado ports {s.ports[0]}-{s.ports[-1]}",
        )


def _weights_per_instance(s: Settings, raw: Mapping[str, str]) -> None:
    given = raw["LB_WEIGHTS"]
    if s.lb_method != "weighted":
        if s.lb_weights:
            raise ConfigError("LB_WEIGHTS", given, "only with LB_METHOD=weighted")
        return
    if len(s.lb_weights) != s.workers:
        raise ConfigError(
            "LB_WEIGHTS",
            given,
            f"{s.workers} comma-separated whole numbers from 1 to {MAX_WEIGHT}, one per worker "
            f"(WORKERS={s.workers}), e.g. {','.join(['1'] * s.workers)}",
        )


def _tls_pair(s: Settings, raw: Mapping[str, str]) -> None:
    cert, key = s.tls_cert_file, s.tls_key_file
    if not cert and not key:
        for name, on in (("TLS_HSTS", s.tls_hsts), ("TLS_REDIRECT", s.tls_redirect)):
            if on:
                raise ConfigError(name, "on", "only with TLS_CERT_FILE and TLS_KEY_FILE")
    elif not cert or not key:
        missing, given = (
            ("TLS_CERT_FILE", "TLS_KEY_FILE") if key else ("TLS_KEY_FILE", "TLS_CERT_FILE")
        )
        raise ConfigError(missing, "", f"a file path whenever {given} is set (both or neither)")


def _distinct_ports(s: Settings, raw: Mapping[str, str]) -> None:
    """TLS_PORT and METRICS_PORT each differ from every other port of the container."""
    taken = {s.listen_port: "LISTEN_PORT"}
    taken.update({port: "the Tornado instances" for port in s.ports})
    for name, port in (("TLS_PORT", s.tls_port if s.tls else 0), ("METRICS_PORT", s.metrics_port)):
        if port and port in taken:
            raise ConfigError(
                name, raw[name], f"a port that {taken[port]} does not use ({port} is taken)"
            )
        taken[port] = name


def to_json(settings: Settings) -> str:
    return json.dumps(dataclasses.asdict(settings), indent=1, sort_keys=True) + "\n"


def from_json(text: str) -> Settings:
    values = json.loads(text)
    return Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def load(path: Path = SETTINGS_FILE, environ: Mapping[str, str] = os.environ) -> Settings:
    """What the start hook wrote; an instance started by hand, without the hook (python main.py),
    parses its environment instead. Raises ConfigError."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return parse(environ)
    return from_json(text)


def shell_lines(settings: Settings) -> str:
    """BUNDLE_* lines for shell scripts and supervisord.conf (whole numbers and names only)."""
    values = {
        "BUNDLE_WORKERS": settings.workers,
        "BUNDLE_BASE_PORT": settings.instance_base_port,
        "BUNDLE_LISTEN_PORT": settings.listen_port,
        "BUNDLE_STARTUP_TIMEOUT": settings.startup_timeout,
        # The bundle's own settings named *_FILE (paths), which secrets-from-files leaves alone.
        "BUNDLE_FILE_SETTINGS": " ".join(s.name for s in TABLE if s.name.endswith("_FILE")),
    }
    return "".join(f"{name}='{value}'\n" for name, value in values.items())


def reference() -> str:
    """docs/configuration.md: every entry of TABLE, by section."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `tornado_bundle/settings.py` (`make docs`); do not edit by hand.",
        "Every setting is an environment variable (`docker run -e NAME=value`). A value that is",
        "not allowed stops the container at start with one line naming the variable, the value",
        "and what is allowed.",
    ]
    for section in dict.fromkeys(setting.section for setting in TABLE):
        lines += ["", f"## {section}", "", "| variable | default | allowed | what it does |"]
        lines.append("|---|---|---|---|")
        for s in (setting for setting in TABLE if setting.section == section):
            default = f"`{s.default}`" if s.default else "(empty)"
            lines.append(f"| `{s.name}` | {default} | {s.allowed} | {s.doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
