"""Serves any Tornado application as one instance of the bundle.

    python -m tornado_bundle.runner --port=8000        # the app named by APP (main:make_app)
    python main.py --port=8000                         # the same, from the app's own file

It loads the app on its own running loop (app_loader.py: an Application, a function, an async
function, an async context manager), writes the nginx lines of the app's static files, and only
then listens, on 127.0.0.1 only (nginx in the same container is the only way in). It trusts the
X-Real-IP/X-Forwarded-* headers that nginx sets (xheaders), takes request bodies up to
CLIENT_MAX_BODY_SIZE like nginx, and on SIGTERM drains (drain.py): WebSockets closed with 1001,
in-flight requests finished (at most --drain_timeout seconds), then the app's async context
manager (if any) is exited, then exit 0. What it adds to the app: /healthz, WebSocket pings,
request metrics (request_metrics.py), the blocked-loop warning (loop_monitor.py), the log
format (instance_logs.py).
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tornado.httputil
import tornado.web

from tornado_bundle import diagnostics, drain, nginx, settings
from tornado_bundle.app_loader import AppError, opened, static_files
from tornado_bundle.files import write_atomically
from tornado_bundle.instance_logs import REQUEST_ID, configure_logging, log
from tornado_bundle.limits import capacity
from tornado_bundle.loop_monitor import BlockedLoopMonitor
from tornado_bundle.names import (
    HEALTH_PATH,
    LISTEN_ADDRESS,
    NGINX_APP_DIR,
    SETTINGS_FILE,
    TEMPLATES,
    process_name,
)
from tornado_bundle.request_metrics import instrument

# Apps read the request's ID from here (README: Request IDs).
__all__ = ["REQUEST_ID", "main"]
MAX_DRAIN_TIMEOUT = 60.0
# Tornado's max_body_size for CLIENT_MAX_BODY_SIZE=0 (no limit): more than any body.
NO_BODY_LIMIT = 2**62


class UsageError(Exception):
    """A command-line value that is not allowed; the message says what is."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line instead of argparse's usage block
        raise UsageError(f"{message}; allowed: --port=1-65535 --drain_timeout=0-60")


def parse_arguments(argv: list[str]) -> tuple[int, float]:
    """--port and --drain_timeout from argv (without the program name); raises UsageError."""
    parser = _Parser(description="Serve a Tornado app on 127.0.0.1:PORT with a graceful drain.")
    parser.add_argument("--port", type=int, default=8000, help="TCP port on 127.0.0.1 (1-65535)")
    parser.add_argument(
        "--drain_timeout",
        type=float,
        default=3.0,
        help="seconds that in-flight requests may take to finish after SIGTERM (0-60)",
    )
    arguments = parser.parse_args(argv)
    if not 1 <= arguments.port <= 65535:
        raise UsageError(f"--port={arguments.port} is out of range; allowed: 1-65535")
    if not 0 <= arguments.drain_timeout <= MAX_DRAIN_TIMEOUT:
        raise UsageError(
            f"--drain_timeout={arguments.drain_timeout:g} is out of range; allowed: 0-60"
        )
    return arguments.port, arguments.drain_timeout


class HealthHandler(tornado.web.RequestHandler):
    """200 while the instance's event loop runs: what the bundle's health checks need."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.write("ok\n")


def _handler_of(app: tornado.web.Application, path: str) -> type | None:
    """The handler class that the app's own routes give `path` (for any Host), or None."""
    request = tornado.httputil.HTTPServerRequest(
        headers=tornado.httputil.HTTPHeaders({"Host": "localhost"}),
        start_line=tornado.httputil.RequestStartLine("GET", path, "HTTP/1.1"),
    )
    found = app.find_handler(request).handler_class
    not_found = (tornado.web.ErrorHandler, app.settings.get("default_handler_class"))
    return None if found in not_found else found


def routes_path(app: tornado.web.Application, path: str) -> bool:
    """True when the app has a route of its own for `path`: not a catch-all such as `/(.*)`
    (Tornado's file_upload demo), which gives any other path the same handler."""
    own = _handler_of(app, path)
    return own is not None and own is not _handler_of(app, f"{path}-{uuid.uuid4().hex}")


def prepare(app: tornado.web.Application, bundle: settings.Settings) -> drain.InFlightRequests:
    """What the bundle adds to any app: drain tracking, WebSocket pings, /healthz when the app
    has none, request metrics, and the diagnostics routes when they are on."""
    tracker = drain.InFlightRequests()
    app.add_transform(tracker.transform)  # type: ignore[arg-type]
    drain.track_websockets()
    # Pings keep an idle WebSocket from reaching nginx's proxy_read_timeout, and a dead peer is
    # dropped after one unanswered ping. An app's own values win.
    app.settings.setdefault("websocket_ping_interval", bundle.websocket_ping_interval)
    app.settings.setdefault("websocket_ping_timeout", bundle.websocket_ping_interval)
    if not routes_path(app, HEALTH_PATH):
        # Rules added this way come before the app's own wildcard-host ones (Tornado), so a
        # catch-all route of the app does not take the health check.
        app.add_handlers(r".*", [(HEALTH_PATH, HealthHandler)])
    if bundle.diagnostics:
        diagnostics.add_routes(app)
    if bundle.metrics_port:
        instrument(app)
    return tracker


async def serve(
    app: tornado.web.Application, port: int, drain_timeout: float, bundle: settings.Settings
) -> None:
    tracker = prepare(app, bundle)
    # Again, now that the app is loaded: an app may install its own SIGUSR1 handler (Jupyter
    # Server does), and the watchdog's stack dump must still work.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # Whatever nginx lets through (CLIENT_MAX_BODY_SIZE), Tornado takes too: its own default
    # (100 MB) would turn a larger upload that nginx streams to it into a 400.
    limit = bundle.client_max_body_bytes or NO_BODY_LIMIT
    server = drain.DrainingHTTPServer(app, xheaders=True, max_body_size=limit)
    try:
        # The kernel's maximum queue (Tornado's default is 128): a crowd that nginx sends at once
        # waits to be accepted instead of timing out in nginx's connect.
        server.listen(port, address=LISTEN_ADDRESS, backlog=capacity().listen_backlog)
    except OSError as error:
        raise SystemExit(
            f"{_program()}: cannot listen on {LISTEN_ADDRESS}:{port}: {error.strerror}"
        ) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # supervisord sends SIGUSR2 as the container stops, before nginx goes: WebSocket clients
    # hear 1001 (going away) through nginx, as in a rolling restart, instead of a cut.
    loop.add_signal_handler(signal.SIGUSR2, drain.close_websockets)
    if bundle.blocked_loop_warning:
        BlockedLoopMonitor(bundle.blocked_loop_warning).start(loop)
    log.info("listening on http://%s:%d", LISTEN_ADDRESS, port)
    await stop.wait()
    log.info("draining (at most %gs)", drain_timeout)
    await drain.drain(server, tracker, drain_timeout)
    log.info("stopped")


def publish_static_files(
    app: tornado.web.Application, spec: str, bundle: settings.Settings
) -> None:
    """The app's static_path, for nginx to serve (NGINX_APP_DIR, before this instance listens
    and so before nginx starts); only in the bundle (the start hook wrote SETTINGS_FILE), not
    when run by hand. Raises AppError for a static_path that nginx cannot serve."""
    static = static_files(app, spec)
    if static is None or not SETTINGS_FILE.exists():
        return
    read = lambda name: (TEMPLATES / name).read_text()  # noqa: E731 - one use
    write_atomically(
        NGINX_APP_DIR / nginx.STATIC_FILES, nginx.render_static(read, bundle, capacity(), static)
    )
    log.info("static files: %s from %s, served by nginx", static.url_prefix, static.path)


async def run(
    target: object | None, port: int, drain_timeout: float, bundle: settings.Settings
) -> None:
    """Loads the app on this loop, serves it until SIGTERM, drains, then lets the app close."""
    async with opened(bundle.app, target) as app:
        publish_static_files(app, bundle.app, bundle)
        await serve(app, port, drain_timeout, bundle)


def _program() -> str:
    return Path(sys.argv[0]).name or "tornado_bundle.runner"


def main(argv: list[str] | None = None, app_factory: Callable[[], object] | None = None) -> int:
    """Runs one instance: `app_factory`'s app (any of APP's forms), or the one APP names. Exit
    codes: 0 after a drain, 1 when the app cannot be loaded or closed or the port cannot be
    bound, 2 for a bad flag or environment value."""
    try:
        port, drain_timeout = parse_arguments(sys.argv[1:] if argv is None else argv)
        # The start hook's settings; without it (python main.py), the environment's.
        bundle = settings.load()
    except (UsageError, settings.ConfigError) as error:
        print(f"{_program()}: error: {error}", file=sys.stderr)
        return 2
    configure_logging(port, bundle.log_format)
    # The watchdog sends SIGUSR1 before it kills a hung instance: the stacks of every thread go
    # to stderr (docker logs) from C, even while Python code cannot run.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        asyncio.run(run(app_factory, port, drain_timeout, bundle))
    except AppError as error:
        # Named like the process in supervisorctl: two instances may say it at once.
        print(f"{process_name(port)}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
