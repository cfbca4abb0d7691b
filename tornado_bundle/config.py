"""Environment -> validated settings -> the rendered nginx site and the instances file.

The settings and renderings that tornado_bundle/start.py (the start hook) writes, and that the
runner and the watchdog read. A wrong value is a ConfigError: one line with the variable, the bad
value, what is allowed. Nothing here imports Tornado or the app: PID 1 imports this module.

Defaults are the DEFAULTS below; the Dockerfile's ENV repeats those that supervisord.conf
expands, and tests/test_config.py checks that the two agree.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import resource
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

APP_ENV = "APP"
DEFAULT_APP = "main:make_app"
# Where each instance listens, and what the HEALTHCHECK, rolling-restart and the watchdog ask
# every instance for (container/bin/healthcheck repeats the path; tests/test_config.py checks).
LISTEN_ADDRESS = "127.0.0.1"
HEALTH_PATH = "/healthz"

TEMPLATES = Path("/etc/nginx/templates")
SITE_TEMPLATE = "tornado.conf"
STATIC_TEMPLATE = "static-files.conf"
LIMITS_TEMPLATE = "limits.conf"
TLS_TEMPLATE = "tls.conf"
# Everything written at start lives here: /tmp is the one writable path (also --read-only).
RUNTIME = Path("/tmp/nginx")
SITE = RUNTIME / SITE_TEMPLATE
STATIC = RUNTIME / STATIC_TEMPLATE
LIMITS = RUNTIME / LIMITS_TEMPLATE
TLS = RUNTIME / TLS_TEMPLATE
# nginx's stub_status, for the metrics endpoint only: a socket file, never a TCP port.
NGINX_STATUS_SOCKET = RUNTIME / "status.sock"
NGINX_STATUS_PATH = "/stub_status"
SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
# Open files nginx keeps for what is not a connection: static files, logs, temporary files.
FILES_RESERVE = 1024
# The instances' ports, one per line: what rolling-restart and wait-for-tornado read.
INSTANCES = Path("/tmp/tornado-bundle/instances")
# prometheus_client's multiprocess files, one set per instance process; emptied at every start.
METRICS_DIR = INSTANCES.parent / "metrics"
# One size-capped file per program (supervisorctl tail), and supervisord's own (maintail).
LOG_DIR = Path("/tmp/log")
PROGRAM = "tornado-bundle"

MAX_WORKERS = 32
MAX_WEIGHT = 1000
MAX_PROXY_READ_TIMEOUT = 3600
LB_DIRECTIVES = {
    "round_robin": "",
    "weighted": "",
    "least_conn": "least_conn;",
    "ip_hash": "ip_hash;",
    "uri_hash": "hash $request_uri consistent;",
}
DEFAULTS = {
    "WORKERS": "2",
    "INSTANCE_BASE_PORT": "8000",
    "LB_METHOD": "round_robin",
    "LB_WEIGHTS": "",
    "LISTEN_PORT": "80",
    "CLIENT_MAX_BODY_SIZE": "1m",
    "PROXY_READ_TIMEOUT": "120",
    "REAL_IP_FROM": "",
    "DIAGNOSTICS": "off",
    "WATCHDOG_TIMEOUT": "10",
    "BLOCKED_LOOP_WARNING": "1",
    "INSTANCE_MAX_MEMORY": "off",
    "TLS_CERT_FILE": "",
    "TLS_KEY_FILE": "",
    "TLS_PORT": "443",
    "TLS_HSTS": "off",
    "TLS_REDIRECT": "off",
    "LOG_FORMAT": "text",
    "ACCESS_LOG": "on",
    "METRICS_PORT": "9145",
    APP_ENV: DEFAULT_APP,
}
LOG_FORMATS = ("text", "json")
# Strict-Transport-Security with TLS_HSTS=on: two years, Mozilla's recommendation.
HSTS_MAX_AGE = 63072000
NGINX_SIZE = re.compile(r"[0-9]{1,9}[kKmMgG]?")
MEMORY_SIZE = re.compile(r"([0-9]{1,6})([mMgG])")
MIN_MEMORY_MIB = 32
MAX_WATCHDOG_TIMEOUT = 300
MAX_BLOCKED_LOOP_WARNING = 60
# What may stand unquoted in an nginx path or location: nothing that ends a directive.
NGINX_SAFE_PATH = re.compile(r"/[A-Za-z0-9._~/-]*")


class ConfigError(ValueError):
    """One line for the user: which variable, which value, what is allowed."""

    def __init__(self, name: str, value: str, allowed: str) -> None:
        super().__init__(f"{name}={value!r} is not allowed: {allowed}")


class FileError(ConfigError):
    """One line for the user: which variable, which file, what is wrong with it."""

    def __init__(self, name: str, value: str, problem: str) -> None:
        ValueError.__init__(self, f"{name}={value!r}: {problem}")


@dataclass(frozen=True)
class Tls:
    """HTTPS on its own port, from a mounted certificate and key."""

    cert_file: str
    key_file: str
    port: int
    hsts: bool
    redirect: bool


@dataclass(frozen=True)
class Settings:
    workers: int
    base_port: int
    lb_method: str
    weights: tuple[int, ...]
    listen_port: int
    client_max_body_size: str
    proxy_read_timeout: int
    real_ip_from: tuple[str, ...]
    diagnostics: bool
    tls: Tls | None = None
    log_format: str = "text"
    access_log: bool = True
    metrics_port: int = 0

    @property
    def ports(self) -> range:
        return range(self.base_port, self.base_port + self.workers)


@dataclass(frozen=True)
class InstanceSettings:
    """What each Tornado instance needs to know of the environment."""

    diagnostics: bool
    websocket_ping_interval: float
    blocked_loop_warning: float = 0.0
    log_format: str = "text"
    metrics: bool = False


@dataclass(frozen=True)
class WatchdogSettings:
    """What the watchdog (tornado_bundle/watchdog.py) needs to know of the environment."""

    timeout: int
    max_memory_bytes: int | None


@dataclass(frozen=True)
class StaticFiles:
    """The app's static_path, served by nginx at its static_url_prefix."""

    url_prefix: str
    path: str


def environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Every variable the bundle reads, with its default where it is not set."""
    return {name: environ.get(name, default) for name, default in DEFAULTS.items()}


def _whole_number(name: str, value: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]+", value) or not low <= int(value) <= high:
        raise ConfigError(name, value, f"a whole number from {low} to {high}")
    return int(value)


def _on_off(name: str, value: str) -> bool:
    if value not in ("on", "off"):
        raise ConfigError(name, value, "on or off")
    return value == "on"


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


def _proxy_read_timeout(env: Mapping[str, str]) -> int:
    return _whole_number("PROXY_READ_TIMEOUT", env["PROXY_READ_TIMEOUT"], 1, MAX_PROXY_READ_TIMEOUT)


def parse_settings(environ: Mapping[str, str]) -> Settings:
    """The validated settings; raises ConfigError on the first wrong value."""
    env = environment(environ)
    workers = _whole_number("WORKERS", env["WORKERS"], 1, MAX_WORKERS)
    base_port = _whole_number(
        "INSTANCE_BASE_PORT", env["INSTANCE_BASE_PORT"], 1024, 65535 - workers
    )
    lb_method = env["LB_METHOD"]
    if lb_method not in LB_DIRECTIVES:
        raise ConfigError("LB_METHOD", lb_method, "one of " + ", ".join(LB_DIRECTIVES))
    listen_port = _whole_number("LISTEN_PORT", env["LISTEN_PORT"], 1, 65535)
    if listen_port in range(base_port, base_port + workers):
        last = base_port + workers - 1
        raise ConfigError(
            "LISTEN_PORT",
            env["LISTEN_PORT"],
            f"a port from 1 to 65535 outside the Tornado ports {base_port}-{last}",
        )
    if not NGINX_SIZE.fullmatch(env["CLIENT_MAX_BODY_SIZE"]):
        raise ConfigError(
            "CLIENT_MAX_BODY_SIZE",
            env["CLIENT_MAX_BODY_SIZE"],
            "an nginx size: digits with an optional k, m or g suffix, e.g. 1m, 512k "
            "(0 disables the check)",
        )
    tls = _tls(env)
    metrics_port = _metrics_port(env)
    _distinct_ports(env, range(base_port, base_port + workers), tls, metrics_port)
    if tls:
        check_certificate(tls.cert_file, tls.key_file)
    return Settings(
        workers=workers,
        base_port=base_port,
        lb_method=lb_method,
        weights=_weights(env["LB_WEIGHTS"], lb_method, workers),
        listen_port=listen_port,
        client_max_body_size=env["CLIENT_MAX_BODY_SIZE"],
        proxy_read_timeout=_proxy_read_timeout(env),
        real_ip_from=_networks(env["REAL_IP_FROM"]),
        diagnostics=_on_off("DIAGNOSTICS", env["DIAGNOSTICS"]),
        tls=tls,
        log_format=_log_format(env),
        access_log=_on_off("ACCESS_LOG", env["ACCESS_LOG"]),
        metrics_port=metrics_port,
    )


def _log_format(env: Mapping[str, str]) -> str:
    if env["LOG_FORMAT"] not in LOG_FORMATS:
        raise ConfigError("LOG_FORMAT", env["LOG_FORMAT"], "text or json")
    return env["LOG_FORMAT"]


def log_format(environ: Mapping[str, str]) -> str:
    """LOG_FORMAT, or text when it is wrong (the start hook has stopped the container then)."""
    value = environ.get("LOG_FORMAT", DEFAULTS["LOG_FORMAT"])
    return value if value in LOG_FORMATS else "text"


def _metrics_port(env: Mapping[str, str]) -> int:
    return _whole_number("METRICS_PORT", env["METRICS_PORT"], 0, 65535)


def metrics_port(environ: Mapping[str, str]) -> int:
    """METRICS_PORT (0: no metrics); raises ConfigError."""
    return _metrics_port(environment(environ))


def _distinct_ports(
    env: Mapping[str, str], instances: range, tls: Tls | None, metrics: int
) -> None:
    """TLS_PORT and METRICS_PORT each differ from every other port of the container."""
    taken = {int(env["LISTEN_PORT"]): "LISTEN_PORT"}
    taken.update({port: "the Tornado instances" for port in instances})
    for name, port in (("TLS_PORT", tls.port if tls else 0), ("METRICS_PORT", metrics)):
        if port and port in taken:
            raise ConfigError(
                name, env[name], f"a port that {taken[port]} does not use ({port} is taken)"
            )
        taken[port] = name


def _tls(env: Mapping[str, str]) -> Tls | None:
    cert, key = env["TLS_CERT_FILE"], env["TLS_KEY_FILE"]
    hsts = _on_off("TLS_HSTS", env["TLS_HSTS"])
    redirect = _on_off("TLS_REDIRECT", env["TLS_REDIRECT"])
    port = _whole_number("TLS_PORT", env["TLS_PORT"], 1, 65535)
    if not cert and not key:
        for name, on in (("TLS_HSTS", hsts), ("TLS_REDIRECT", redirect)):
            if on:
                raise ConfigError(name, "on", "only with TLS_CERT_FILE and TLS_KEY_FILE")
        return None
    if not cert or not key:
        missing, given = (
            ("TLS_CERT_FILE", "TLS_KEY_FILE") if key else ("TLS_KEY_FILE", "TLS_CERT_FILE")
        )
        raise ConfigError(missing, "", f"a file path whenever {given} is set (both or neither)")
    for name, path in (("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", key)):
        if not NGINX_SAFE_PATH.fullmatch(path):
            raise ConfigError(name, path, "an absolute path of letters, digits and ._~/-")
    return Tls(cert_file=cert, key_file=key, port=port, hsts=hsts, redirect=redirect)


def _readable(name: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise FileError(
            name, path, "no such file (mount it, e.g. -v ./certs:/run/secrets:ro)"
        ) from None
    except PermissionError:
        raise FileError(
            name, path, f"permission denied: the image's user (uid {os.getuid()}) cannot read it"
        ) from None
    except IsADirectoryError:
        raise FileError(name, path, "is a directory, not a file") from None


def check_certificate(cert: str, key: str, now: datetime.datetime | None = None) -> None:
    """Raises FileError when the certificate or key cannot serve HTTPS: missing, unreadable,
    not PEM, expired, or not a pair."""
    _readable("TLS_CERT_FILE", cert)
    _readable("TLS_KEY_FILE", key)
    try:
        # The leaf certificate's fields, as Python's ssl module decodes them (its own tests use
        # this function; the public API offers no other way to read a certificate file).
        fields = ssl._ssl._test_decode_cert(cert)  # type: ignore[attr-defined]
    except (ssl.SSLError, ValueError):
        raise FileError("TLS_CERT_FILE", cert, "not a PEM certificate") from None
    expires = datetime.datetime.fromtimestamp(
        ssl.cert_time_to_seconds(fields["notAfter"]), datetime.UTC
    )
    if expires <= (now or datetime.datetime.now(datetime.UTC)):
        raise FileError(
            "TLS_CERT_FILE", cert, f"the certificate expired on {expires:%Y-%m-%d %H:%M} UTC"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # A password-protected key fails here too: nginx would ask for the password on a tty.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as error:
        if "KEY_VALUES_MISMATCH" in str(error):
            raise FileError(
                "TLS_KEY_FILE", key, f"does not match the certificate in {cert}"
            ) from None
        raise FileError(
            "TLS_KEY_FILE",
            key,
            "not an unencrypted PEM private key (" + (error.reason or str(error)) + ")",
        ) from None


def _blocked_loop_warning(env: Mapping[str, str]) -> float:
    value = env["BLOCKED_LOOP_WARNING"]
    if not re.fullmatch(r"[0-9]{1,2}(\.[0-9]{1,3})?", value) or not (
        float(value) == 0 or 0.05 <= float(value) <= MAX_BLOCKED_LOOP_WARNING
    ):
        raise ConfigError(
            "BLOCKED_LOOP_WARNING",
            value,
            f"seconds from 0.05 to {MAX_BLOCKED_LOOP_WARNING} (e.g. 1 or 0.5), or 0 for off",
        )
    return float(value)


def _max_memory(env: Mapping[str, str]) -> int | None:
    value = env["INSTANCE_MAX_MEMORY"]
    if value == "off":
        return None
    match = MEMORY_SIZE.fullmatch(value)
    mib = int(match.group(1)) * (1024 if match.group(2) in "gG" else 1) if match else 0
    if mib < MIN_MEMORY_MIB:
        raise ConfigError(
            "INSTANCE_MAX_MEMORY",
            value,
            f"a size of at least {MIN_MEMORY_MIB}m with an m or g suffix (e.g. 300m, 1g), or off",
        )
    return mib * 1024 * 1024


def watchdog_settings(environ: Mapping[str, str]) -> WatchdogSettings:
    env = environment(environ)
    return WatchdogSettings(
        timeout=_whole_number("WATCHDOG_TIMEOUT", env["WATCHDOG_TIMEOUT"], 0, MAX_WATCHDOG_TIMEOUT),
        max_memory_bytes=_max_memory(env),
    )


def instance_settings(environ: Mapping[str, str]) -> InstanceSettings:
    """The part of the settings that a Tornado instance uses; raises ConfigError."""
    env = environment(environ)
    return InstanceSettings(
        diagnostics=_on_off("DIAGNOSTICS", env["DIAGNOSTICS"]),
        # Three pings per nginx read timeout: an idle WebSocket is never cut by nginx, and one
        # lost ping is not yet a timeout.
        websocket_ping_interval=_proxy_read_timeout(env) / 3,
        blocked_loop_warning=_blocked_loop_warning(env),
        log_format=_log_format(env),
        metrics=_metrics_port(env) != 0,
    )


@dataclass(frozen=True)
class Capacity:
    """What the container's limits allow: open files per process, and the listen queue."""

    open_files: int
    listen_backlog: int

    @property
    def worker_connections(self) -> int:
        return max(self.open_files - FILES_RESERVE, 512)

    @property
    def max_active_requests(self) -> int:
        # An active request holds two connections (the client's and one to an instance); a
        # quarter of them stays free for idle keep-alive clients and for the 503s past this.
        return self.worker_connections * 3 // 8


def capacity() -> Capacity:
    """From this process's hard RLIMIT_NOFILE and the kernel's net.core.somaxconn."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    open_files = 1_048_576 if hard == resource.RLIM_INFINITY else min(hard, 1_048_576)
    try:
        backlog = int(SOMAXCONN.read_text())
    except (OSError, ValueError):
        backlog = 4096
    return Capacity(open_files=open_files, listen_backlog=backlog)


def render_limits(template: str, limits: Capacity) -> str:
    return _fill(
        template,
        {
            "OPEN_FILES": str(limits.open_files),
            "WORKER_CONNECTIONS": str(limits.worker_connections),
            "FILES_RESERVE": str(FILES_RESERVE),
        },
    )


def _indented(lines: list[str], depth: int) -> str:
    return "\n".join(" " * depth + line for line in lines)


def _fill(template: str, values: dict[str, str]) -> str:
    # A placeholder alone on its line that renders to nothing takes its line with it.
    empty = [name for name, value in values.items() if not value]
    if empty:
        template = re.sub(r"(?m)^[ \t]*@(" + "|".join(empty) + r")@[ \t]*\n", "", template)
    placeholders = re.compile("@(" + "|".join(values) + ")@")
    filled = placeholders.sub(lambda match: values[match.group(1)], template)
    # Placeholders that render to nothing leave whitespace-only lines behind.
    return re.sub(r"(?m)^[ \t]+$\n", "", filled)


def render(template: str, settings: Settings, limits: Capacity | None = None) -> str:
    """The nginx site for these settings."""
    limits = limits or capacity()
    servers = []
    for index, port in enumerate(settings.ports):
        weight = f" weight={settings.weights[index]}" if settings.weights else ""
        servers.append(f"server 127.0.0.1:{port}{weight} max_fails=0;")
    real_ip = []
    if settings.real_ip_from:
        real_ip = [f"set_real_ip_from {network};" for network in settings.real_ip_from]
        real_ip += ["real_ip_header X-Forwarded-For;", "real_ip_recursive on;"]
    trusted = [f"{network} 1;" for network in settings.real_ip_from]
    access_log = "access_log off;"
    if settings.access_log:
        log_name = "bundle_json" if settings.log_format == "json" else "bundle"
        access_log = f"access_log /dev/stdout {log_name} buffer=32k flush=1s;"
    status_server = []
    if settings.metrics_port:
        # stub_status for the metrics endpoint (tornado_bundle/metrics.py), on a socket file.
        status_server = [
            "server {",
            f"    listen unix:{NGINX_STATUS_SOCKET};",
            "    access_log off;",
            f"    location = {NGINX_STATUS_PATH} {{",
            "        stub_status;",
            "    }",
            "}",
        ]
    diagnostics = []
    if settings.diagnostics:
        # DIAGNOSTICS=on only: tells tests which instance answered. Never in production.
        diagnostics = ["add_header X-Upstream $upstream_addr always;"]
    return _fill(
        template,
        {
            "LB_METHOD_DIRECTIVE": _indented([LB_DIRECTIVES[settings.lb_method]], 4),
            "UPSTREAM_SERVERS": _indented(servers, 4),
            "LISTEN_PORT": str(settings.listen_port),
            "LISTEN_BACKLOG": str(limits.listen_backlog),
            "MAX_ACTIVE_REQUESTS": str(limits.max_active_requests),
            "CLIENT_MAX_BODY_SIZE": settings.client_max_body_size,
            "PROXY_READ_TIMEOUT": f"{settings.proxy_read_timeout}s",
            "REAL_IP": _indented(real_ip, 4),
            "DIAGNOSTICS": _indented(diagnostics, 8),
            "TRUSTED_PROXIES": _indented(trusted, 4),
            "HEALTH_PATH": HEALTH_PATH,
            "HSTS_MAX_AGE": str(HSTS_MAX_AGE),
            "ACCESS_LOG": access_log,
            "STATUS_SERVER": "\n".join(status_server),
        },
    )


def render_tls(template: str, settings: Settings, limits: Capacity) -> str:
    """The HTTPS part of the server, or a comment when no certificate is mounted."""
    tls = settings.tls
    if tls is None:
        return "# No TLS_CERT_FILE/TLS_KEY_FILE: plain HTTP only.\n"
    redirect = ""
    if tls.redirect:
        port = "" if tls.port == 443 else f":{tls.port}"
        redirect = (
            "# TLS_REDIRECT=on: plain HTTP answers 308 (method and body kept) to the same URL.\n"
            f"if ($to_https) {{\n    return 308 https://$host{port}$request_uri;\n}}"
        )
    return _fill(
        template,
        {
            "TLS_PORT": str(tls.port),
            "LISTEN_BACKLOG": str(limits.listen_backlog),
            "TLS_CERT_FILE": tls.cert_file,
            "TLS_KEY_FILE": tls.key_file,
            "TLS_REDIRECT": redirect,
        },
    )


def render_response_headers(settings: Settings) -> str:
    """The headers that nginx adds to every response (included by each location)."""
    lines = [
        "add_header X-Request-ID $bundle_request_id always;",
        # Browsers must not guess a type other than Content-Type says; "nosniff" is the only
        # value there is, so the app's own copy (hidden in tornado.conf) loses nothing.
        "add_header X-Content-Type-Options nosniff always;",
    ]
    if settings.tls and settings.tls.hsts:
        # Only on HTTPS answers ($https is empty on plain HTTP, and add_header skips empties).
        lines.append("add_header Strict-Transport-Security $hsts always;")
    return "\n".join(lines) + "\n"


def render_static(template: str, static: StaticFiles | None) -> str:
    """The static-files location, or a comment saying that the app has none."""
    if static is None:
        return "# The app has no static_path: every request goes to Tornado.\n"
    return _fill(template, {"STATIC_URL_PREFIX": static.url_prefix, "STATIC_PATH": static.path})


def write_atomically(path: Path, text: str) -> None:
    """Readers (nginx -s reload, a second start) see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    partial.replace(path)
