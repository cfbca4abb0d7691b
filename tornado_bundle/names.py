"""The names every part of the bundle shares: paths, Supervisor's group and process names, the
instances' address. One owner for each; the shell scripts read what the start hook writes from
them (the instances file, bundle.env), and tests/unit/test_names.py checks the few copies that
shell and Supervisor's config must spell out.

Imports nothing: PID 1, every instance, the start hook and the tests all import this module.
"""

from __future__ import annotations

from pathlib import Path

PROGRAM = "tornado-bundle"
# Where each instance listens: nginx in the same container is the only way in.
LISTEN_ADDRESS = "127.0.0.1"
# What the HEALTHCHECK, rolling-restart and the watchdog ask every instance for.
HEALTH_PATH = "/healthz"

# Supervisor's names (supervisord.conf): the group, its program, and one process per port.
GROUP = "tornadoes"
PROGRAM_NAME = "tornado"
NGINX_PROCESS = "nginx"

# The request methods that reach the app: HTTP's own (RFC 9110) less CONNECT and TRACE, PATCH
# (RFC 5789), and WebDAV's (RFC 4918). nginx answers 501 to any other (tornado.conf), and the
# request metrics label any other as "other".
KNOWN_METHODS = (
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH",
    "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK",
)  # fmt: skip

# The image's files.
TEMPLATES = Path("/etc/nginx/templates")
# The app's own one-time step before any instance starts (container/entrypoint.d/40-prestart.sh).
PRESTART = Path("/app/prestart.sh")
# nginx drop-ins of the user's (empty in the image): http level, and inside the server.
NGINX_CONF_D = Path("/etc/nginx/conf.d")
NGINX_SERVER_D = Path("/etc/nginx/server.d")
# Everything written at start lives under /tmp: the one writable path (also --read-only).
RUN_DIR = Path("/tmp/tornado-bundle")
# The validated settings (tornado_bundle/settings.py), written once by the start hook.
SETTINGS_FILE = RUN_DIR / "settings.json"
# The same, for shell and for supervisord.conf's %(ENV_...)s: BUNDLE_* lines.
SHELL_SETTINGS_FILE = RUN_DIR / "bundle.env"
# One line per instance, "name port": what rolling-restart and wait-for-tornado read.
INSTANCES_FILE = RUN_DIR / "instances"
# prometheus_client's multiprocess files, one set per instance process; emptied at every start.
METRICS_DIR = RUN_DIR / "metrics"
# The watchdog's report on unresponsive instances, read by the HEALTHCHECK.
UNRESPONSIVE_FILE = RUN_DIR / "unresponsive"
# The rendered nginx files, which nginx.conf and tornado.conf include.
NGINX_RUN_DIR = Path("/tmp/nginx")
# The nginx lines that the app's own settings give (its static files), written by an instance
# once it has loaded the app; tornado.conf includes whatever is there.
NGINX_APP_DIR = NGINX_RUN_DIR / "app.d"
# nginx's stub_status, for the metrics endpoint only: a socket file, never a TCP port.
NGINX_STATUS_SOCKET = NGINX_RUN_DIR / "status.sock"
NGINX_STATUS_PATH = "/stub_status"
# LB_METHOD=sticky: the cookie that keeps a client on its instance (a random key, no secret).
STICKY_COOKIE = "tornado_bundle_route"
# One size-capped file per program (supervisorctl tail), and supervisord's own (maintail).
LOG_DIR = Path("/tmp/log")


def process_name(port: int) -> str:
    """Supervisor's name for the instance on `port`: tornado-8000."""
    return f"{PROGRAM_NAME}-{port}"


def instance_name(port: int) -> str:
    """The full name supervisorctl takes: tornadoes:tornado-8000."""
    return f"{GROUP}:{process_name(port)}"
