"""The start hook: validates the environment, loads the app once, writes the nginx files and the
instances file into /tmp (docker-entrypoint.d/10-render-config.sh runs it before any process):

    python -m tornado_bundle.start

A wrong value, or an APP that cannot give an Application, stops the container with one line;
loading the app here also gives nginx the app's own static_path at its static_url_prefix.
"""

from __future__ import annotations

import os
import sys

from tornado_bundle.app_loader import AppError, load_app, static_files
from tornado_bundle.config import (
    APP_ENV,
    INSTANCES,
    LIMITS,
    LIMITS_TEMPLATE,
    PROGRAM,
    SITE,
    SITE_TEMPLATE,
    STATIC,
    STATIC_TEMPLATE,
    TEMPLATES,
    ConfigError,
    capacity,
    environment,
    instance_settings,
    parse_settings,
    render,
    render_limits,
    render_static,
    watchdog_settings,
    write_atomically,
)


def main() -> int:
    try:
        settings = parse_settings(os.environ)
        instance_settings(os.environ)
        watchdog_settings(os.environ)
        spec = environment(os.environ)[APP_ENV]
        static = static_files(load_app(spec), spec)
    except (ConfigError, AppError) as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 1
    limits = capacity()
    outputs = {
        SITE: render((TEMPLATES / SITE_TEMPLATE).read_text(), settings, limits),
        STATIC: render_static((TEMPLATES / STATIC_TEMPLATE).read_text(), static),
        LIMITS: render_limits((TEMPLATES / LIMITS_TEMPLATE).read_text(), limits),
        INSTANCES: "".join(f"{port}\n" for port in settings.ports),
    }
    for path, text in outputs.items():
        try:
            write_atomically(path, text)
        except OSError as error:
            print(
                f"{PROGRAM}: error: cannot write {path}: {error.strerror}; /tmp must be writable "
                "(with --read-only, add --tmpfs /tmp)",
                file=sys.stderr,
            )
            return 1
    method = settings.lb_method + (f" {settings.weights}" if settings.weights else "")
    where = f", static files {static.url_prefix} from {static.path}" if static else ""
    print(
        f"{PROGRAM}: APP={spec}, {settings.workers} Tornado instance(s) on ports "
        f"{settings.ports.start}-{settings.ports.stop - 1}, {method}, nginx on "
        f":{settings.listen_port}{where}; {limits.worker_connections} connections "
        f"(open files {limits.open_files}), listen backlog {limits.listen_backlog}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
