"""The start hook (docker-entrypoint.d/10-render-config.sh runs it before any process):

    python -m tornado_bundle.start

A wrong value stops the container with one line. It never imports the app: an instance loads
it, on its own running loop (tornado_bundle/app_loader.py), and says why when it cannot. The
hook writes, all under /tmp:
- the settings, parsed once (tornado_bundle/settings.py), for every process to read;
- bundle.env, the same for the shell scripts and supervisord.conf (BUNDLE_* lines);
- the instances file, one "name port" line per instance;
- the nginx files (tornado_bundle/nginx.py), and an empty folder for the ones an instance
  writes from the app's own settings (its static files).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from tornado_bundle import logs, nginx, settings
from tornado_bundle.certificates import CertificateError
from tornado_bundle.files import write_atomically
from tornado_bundle.limits import Capacity, capacity
from tornado_bundle.names import (
    INSTANCES_FILE,
    LOG_DIR,
    METRICS_DIR,
    NGINX_APP_DIR,
    NGINX_RUN_DIR,
    PROGRAM,
    SETTINGS_FILE,
    SHELL_SETTINGS_FILE,
    TEMPLATES,
    instance_name,
)


def fail(message: str) -> None:
    logs.emit(PROGRAM, "error", message, logs.json_wanted(), stream=sys.stderr)


def outputs(parsed: settings.Settings, limits: Capacity) -> dict[Path, str]:
    """Every file the hook writes, with its text."""
    rendered = nginx.render(lambda name: (TEMPLATES / name).read_text(), parsed, limits)
    return {
        SETTINGS_FILE: settings.to_json(parsed),
        SHELL_SETTINGS_FILE: settings.shell_lines(parsed),
        INSTANCES_FILE: "".join(f"{instance_name(port)} {port}\n" for port in parsed.ports),
        **{NGINX_RUN_DIR / name: text for name, text in rendered.items()},
    }


def summary(parsed: settings.Settings, limits: Capacity) -> str:
    method = parsed.lb_method + (f" {parsed.lb_weights}" if parsed.lb_weights else "")
    https = f", HTTPS on :{parsed.tls_port}" if parsed.tls else ""
    ip = "IPv4 and IPv6" if nginx.listens_on_ipv6(parsed, limits) else "IPv4 only"
    metrics = f", metrics on :{parsed.metrics_port}" if parsed.metrics_port else ""
    return (
        f"APP={parsed.app}, {parsed.workers} Tornado instance(s) on ports "
        f"{parsed.ports.start}-{parsed.ports.stop - 1}, {method}, nginx on "
        f":{parsed.listen_port} ({ip}){https}{metrics}; {limits.worker_connections} "
        f"connections (open files {limits.open_files}), {limits.max_active_requests} requests at "
        f"once, {nginx.per_client(parsed, limits) or 'no limit'} per client, listen backlog "
        f"{limits.listen_backlog}"
    )


def main() -> int:
    try:
        parsed = settings.parse(os.environ)
    except (settings.ConfigError, CertificateError) as error:
        fail(f"error: {error}")
        return 1
    limits = capacity()
    path = SETTINGS_FILE
    try:
        for path, text in outputs(parsed, limits).items():
            write_atomically(path, text)
        # The counters and app files of a previous run of this container are not this run's.
        for path in (METRICS_DIR, NGINX_APP_DIR):
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
        path = LOG_DIR
        LOG_DIR.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        fail(
            f"error: cannot write {path}: {error.strerror}; /tmp must be writable "
            "(with --read-only, add --tmpfs /tmp)"
        )
        return 1
    logs.emit(PROGRAM, "info", summary(parsed, limits), parsed.log_format == "json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
