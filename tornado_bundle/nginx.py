"""The nginx files for a Settings: every nginx line is in a template (tornado.conf and
container/nginx/*.conf.template, in the image under /etc/nginx/templates); this module only
chooses the values and which lines and files apply. Three rules, nothing more:

- `@NAME@` is replaced by its value;
- a line with a placeholder whose value is a list is written once per item (none: no line);
- a line that starts with `@?FLAG@` is kept only when FLAG is true, `@!FLAG@` only when false.

A placeholder or flag that the template names and this module does not know is an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tornado_bundle.limits import FILES_RESERVE, Capacity
from tornado_bundle.names import (
    HEALTH_PATH,
    KNOWN_METHODS,
    LISTEN_ADDRESS,
    NGINX_APP_DIR,
    NGINX_RUN_DIR,
    NGINX_SERVER_D,
    NGINX_STATUS_PATH,
    NGINX_STATUS_SOCKET,
    STICKY_COOKIE,
)
from tornado_bundle.settings import Settings

# Strict-Transport-Security with TLS_HSTS=on: two years, Mozilla's recommendation.
HSTS_MAX_AGE = 63072000
PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")
GUARD = re.compile(r"^@([?!])([A-Z][A-Z0-9_]*)@")
Value = str | Sequence[str]


@dataclass(frozen=True)
class StaticFiles:
    """The app's static_path, served by nginx at its static_url_prefix."""

    url_prefix: str
    path: str


def fill(template: str, values: Mapping[str, Value], flags: Mapping[str, bool]) -> str:
    """The template with the three rules above applied; raises KeyError for an unknown name."""
    lines = []
    for line in template.splitlines(keepends=True):
        guard = GUARD.match(line)
        if guard:
            wanted, flag = guard.group(1) == "?", guard.group(2)
            if flags[flag] != wanted:
                continue
            line = line[guard.end() :]
        names = PLACEHOLDER.findall(line)
        lists = {name: values[name] for name in names if not isinstance(values[name], str)}
        count = min((len(items) for items in lists.values()), default=1)
        for index in range(count):
            lines.append(
                PLACEHOLDER.sub(lambda match, i=index: _one(values[match.group(1)], i), line)
            )
    return "".join(lines)


def _one(value: Value, index: int) -> str:
    return value if isinstance(value, str) else value[index]


def listens_on_ipv6(settings: Settings, limits: Capacity) -> bool:
    """LISTEN_IPV6: on, off, or auto (when the container has an IPv6 address)."""
    return settings.listen_ipv6 == "on" or (settings.listen_ipv6 == "auto" and limits.ipv6)


def per_client(settings: Settings, limits: Capacity) -> int:
    """Requests at once per client address (0: no limit)."""
    chosen = settings.max_requests_per_client
    return limits.per_client_auto if chosen is None else chosen


def _values(
    settings: Settings, limits: Capacity, static: StaticFiles | None = None
) -> dict[str, Value]:
    weights = settings.lb_weights or (1,) * settings.workers
    return {
        "LISTEN_PORT": str(settings.listen_port),
        "LISTEN_BACKLOG": str(limits.listen_backlog),
        "MAX_ACTIVE_REQUESTS": str(limits.max_active_requests),
        "OPEN_FILES": str(limits.open_files),
        "WORKER_CONNECTIONS": str(limits.worker_connections),
        "FILES_RESERVE": str(FILES_RESERVE),
        "INSTANCE_ADDRESS": LISTEN_ADDRESS,
        "INSTANCE_PORT": [str(port) for port in settings.ports],
        "INSTANCE_WEIGHT": [str(weight) for weight in weights],
        "CLIENT_MAX_BODY_SIZE": settings.client_max_body_size,
        "PROXY_READ_TIMEOUT": f"{settings.proxy_read_timeout}s",
        "REAL_IP_FROM": list(settings.real_ip_from),
        "HEALTH_PATH": HEALTH_PATH,
        "KNOWN_METHODS": "|".join(KNOWN_METHODS),
        "HSTS_MAX_AGE": str(HSTS_MAX_AGE),
        "MAX_REQUESTS_PER_CLIENT": str(per_client(settings, limits)),
        "RATE_LIMIT": settings.rate_limit,
        "RATE_BURST": str(2 * int(settings.rate_limit.split("r/")[0] or 0)),
        "ACCESS_LOG_FORMAT": "bundle_json" if settings.log_format == "json" else "bundle",
        "RUN_DIR": str(NGINX_RUN_DIR),
        "APP_DIR": str(NGINX_APP_DIR),
        "SERVER_D": str(NGINX_SERVER_D),
        "STICKY_COOKIE": STICKY_COOKIE,
        "STATUS_SOCKET": str(NGINX_STATUS_SOCKET),
        "STATUS_PATH": NGINX_STATUS_PATH,
        "TLS_PORT": str(settings.tls_port),
        "TLS_PORT_SUFFIX": "" if settings.tls_port == 443 else f":{settings.tls_port}",
        "TLS_CERT_FILE": settings.tls_cert_file,
        "TLS_KEY_FILE": settings.tls_key_file,
        "STATIC_URL_PREFIX": static.url_prefix if static else "",
        "STATIC_PATH": static.path if static else "",
    }


def _flags(settings: Settings, limits: Capacity) -> dict[str, bool]:
    return {
        "LEAST_CONN": settings.lb_method == "least_conn",
        "IP_HASH": settings.lb_method == "ip_hash",
        "URI_HASH": settings.lb_method == "uri_hash",
        "STICKY": settings.lb_method == "sticky",
        "IPV6": listens_on_ipv6(settings, limits),
        "REAL_IP": bool(settings.real_ip_from),
        "ACCESS_LOG": settings.access_log,
        "DIAGNOSTICS": settings.diagnostics,
        "PER_CLIENT": per_client(settings, limits) != 0,
        "RATE_LIMIT": bool(settings.rate_limit),
        "METRICS": settings.metrics_port != 0,
        "TLS": settings.tls,
        "TLS_HSTS": settings.tls_hsts,
        "TLS_REDIRECT": settings.tls_redirect,
    }


# Rendered file -> its template, and whether it applies.
FILES = {
    "limits.conf": "limits.conf.template",
    "tornado.conf": "tornado.conf",
    "response-headers.conf": "response-headers.conf.template",
    "proxy.conf": "proxy.conf.template",
    "status-server.conf": "status-server.conf.template",
    "tls.conf": "tls.conf.template",
}
WHEN = {"status-server.conf": "METRICS", "tls.conf": "TLS"}
# What an instance writes into NGINX_APP_DIR once it has loaded the app (the start hook never
# imports it): the app's own static_path, served by nginx.
STATIC_FILES = "static-files.conf"
STATIC_TEMPLATE = "static-files.conf.template"


def render(read: Callable[[str], str], settings: Settings, limits: Capacity) -> dict[str, str]:
    """Rendered file name -> its text, for the files these settings use (tornado.conf includes
    the optional ones only when their flag is on). `read` gives a template's text by its name."""
    values, flags = _values(settings, limits), _flags(settings, limits)
    return {
        name: fill(read(template), values, flags)
        for name, template in FILES.items()
        if name not in WHEN or flags[WHEN[name]]
    }


def render_static(
    read: Callable[[str], str], settings: Settings, limits: Capacity, static: StaticFiles
) -> str:
    """The text of NGINX_APP_DIR/static-files.conf for the app's static files."""
    return fill(read(STATIC_TEMPLATE), _values(settings, limits, static), _flags(settings, limits))
