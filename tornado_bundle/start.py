"""The start hook (docker-entrypoint.d/10-render-config.sh runs it before any process):

    python -m tornado_bundle.start

A wrong value, or an APP that cannot give an Application, stops the container with one line.
Otherwise it writes, all under /tmp:
- the settings, parsed once (tornado_bundle/settings.py), for every process to read;
- bundle.env, the same for the shell scripts and supervisord.conf (BUNDLE_* lines);
- the instances file, one "name port" line per instance;
- the nginx files (tornado_bundle/nginx.py), with the app's own static_path at its
  static_url_prefix, read from the app loaded here once.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from tornado_bundle import logs, nginx, settings
from tornado_bundle.app_loader import AppError, load_app, static_files
from tornado_bundle.certificates import CertificateError
from tornado_bundle.files import write_atomically
from tornado_bundle.limits import Capacity, capacity
from tornado_bundle.names import (
    INSTANCES_FILE,
    LOG_DIR,
    METRICS_DIR,
    NGINX_RUN_DIR,
    PROGRAM,
    SETTINGS_FILE,
    SHELL_SETTINGS_FILE,
    TEMPLATES,
    instance_name,
)


def fail(message: str) -> None:
    logs.emit(PROGRAM, "error", message, logs.json_wanted(), stream=sys.stderr)


def outputs(
    parsed: settings.Settings, limits: Capacity, static: nginx.StaticFiles | None
) -> dict[Path, str]:
    """Every file the hook writes, with its text."""
    rendered = nginx.render(lambda name: (TEMPLATES / name).read_text(), parsed, limits, static)
    return {
        SETTINGS_FILE: settings.to_json(parsed),
        SHELL_SETTINGS_FILE: settings.shell_lines(parsed),
        INSTANCES_FILE: "".join(f"{instance_name(port)} {port}\n" for port in parsed.ports),
        **{NGINX_RUN_DIR / name: text for name, text in rendered.items()},
    }


def summary(parsed: settings.Settings, limits: Capacity, static: nginx.StaticFiles | None) -> str:
    method = parsed.lb_method + (f" {parsed.lb_weights}" if parsed.lb_weights else "")
    where = f", static files {static.url_prefix} from {static.path}" if static else ""
    https = f", HTTPS on :{parsed.tls_port}" if parsed.tls else ""
    metrics = f", metrics on :{parsed.metrics_port}" if parsed.metrics_port else ""
    return (
        f"APP={parsed.app}, {parsed.workers} Tornado instance(s) on ports "
        f"{parsed.ports.start}-{parsed.ports.stop - 1}, {method}, nginx on "
        f":{parsed.listen_port}{https}{where}{metrics}; {limits.worker_connections} "
        f"connections (open files {limits.open_files}), {limits.max_active_requests} requests at "
        f"once, {nginx.per_client(parsed, limits) or 'no limit'} per client, listen backlog "
        f"{limits.listen_backlog}"
    )


def main() -> int:
    try:
        parsed = settings.parse(os.environ)
        static = static_files(load_app(parsed.app), parsed.app)
    except (settings.ConfigError, CertificateError, AppError) as error:
        fail(f"error: {error}")
        return 1
    limits = capacity()
    path = SETTINGS_FILE
    try:
        for path, text in outputs(parsed, limits, static).items():
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
    logs.emit(PROGRAM, "info", summary(parsed, limits, static), parsed.log_format == "json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
