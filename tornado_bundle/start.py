"""The start hook: validates the environment, loads the app once, writes the nginx files and the
instances file into /tmp (docker-entrypoint.d/10-render-config.sh runs it before any process):

    python -m tornado_bundle.start

A wrong value, or an APP that cannot give an Application, stops the container with one line;
loading the app here also gives nginx the app's own static_path at its static_url_prefix.
"""

from __future__ import annotations

import os
import shutil
import sys

from tornado_bundle import logs
from tornado_bundle.app_loader import AppError, load_app, static_files
from tornado_bundle.config import (
    APP_ENV,
    INSTANCES,
    LIMITS,
    LIMITS_TEMPLATE,
    LOG_DIR,
    METRICS_DIR,
    PROGRAM,
    RUNTIME,
    SITE,
    SITE_TEMPLATE,
    STATIC,
    STATIC_TEMPLATE,
    TEMPLATES,
    TLS,
    TLS_TEMPLATE,
    ConfigError,
    capacity,
    environment,
    instance_settings,
    parse_settings,
    render,
    render_limits,
    render_response_headers,
    render_static,
    render_tls,
    watchdog_settings,
    write_atomically,
)


def fail(message: str) -> None:
    logs.emit(PROGRAM, "error", message, stream=sys.stderr)


def main() -> int:
    try:
        settings = parse_settings(os.environ)
        instance_settings(os.environ)
        watchdog_settings(os.environ)
        spec = environment(os.environ)[APP_ENV]
        static = static_files(load_app(spec), spec)
    except (ConfigError, AppError) as error:
        fail(f"error: {error}")
        return 1
    limits = capacity()
    outputs = {
        SITE: render((TEMPLATES / SITE_TEMPLATE).read_text(), settings, limits),
        STATIC: render_static((TEMPLATES / STATIC_TEMPLATE).read_text(), static),
        LIMITS: render_limits((TEMPLATES / LIMITS_TEMPLATE).read_text(), limits),
        TLS: render_tls((TEMPLATES / TLS_TEMPLATE).read_text(), settings, limits),
        RUNTIME / "response-headers.conf": render_response_headers(settings),
        INSTANCES: "".join(f"{port}\n" for port in settings.ports),
    }
    path = SITE
    try:
        for path, text in outputs.items():
            write_atomically(path, text)
        # The counters of a previous run of this container are not this run's.
        path = METRICS_DIR
        shutil.rmtree(METRICS_DIR, ignore_errors=True)
        METRICS_DIR.mkdir(parents=True)
        path = LOG_DIR
        LOG_DIR.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        fail(
            f"error: cannot write {path}: {error.strerror}; /tmp must be writable "
            "(with --read-only, add --tmpfs /tmp)"
        )
        return 1
    method = settings.lb_method + (f" {settings.weights}" if settings.weights else "")
    where = f", static files {static.url_prefix} from {static.path}" if static else ""
    https = f", HTTPS on :{settings.tls.port}" if settings.tls else ""
    metrics = f", metrics on :{settings.metrics_port}" if settings.metrics_port else ""
    logs.emit(
        PROGRAM,
        "info",
        f"APP={spec}, {settings.workers} Tornado instance(s) on ports "
        f"{settings.ports.start}-{settings.ports.stop - 1}, {method}, nginx on "
        f":{settings.listen_port}{https}{where}{metrics}; {limits.worker_connections} "
        f"connections (open files {limits.open_files}), listen backlog {limits.listen_backlog}",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
