"""Serves any Tornado application as one instance of the bundle.

    python -m tornado_bundle.runner --port=8000        # the app named by APP (main:make_app)
    python main.py --port=8000                         # the same, from the app's own file

It listens on 127.0.0.1 only (nginx in the same container is the only way in), trusts the
X-Real-IP/X-Forwarded-* headers that nginx sets (xheaders), and on SIGTERM drains: it stops
listening, closes open WebSockets with 1001 (going away) so their clients reconnect to a live
instance, lets in-flight requests finish (at most --drain_timeout seconds), then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import tornado.httputil
import tornado.log
import tornado.web
import tornado.websocket
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream

from tornado_bundle import diagnostics
from tornado_bundle.app_loader import AppError, app_spec, load_app
from tornado_bundle.config import (
    HEALTH_PATH,
    LISTEN_ADDRESS,
    METRICS_DIR,
    ConfigError,
    InstanceSettings,
    capacity,
    instance_settings,
)

# What a draining instance tells its WebSocket clients (RFC 6455: 1001 "going away").
GOING_AWAY = 1001
MAX_DRAIN_TIMEOUT = 60.0

log = logging.getLogger("tornado_bundle")

# The ID of the request being handled (nginx's X-Request-ID): every log line written while
# handling it carries it. Set when Tornado creates the request's transforms, which is just before
# it starts the handler's task, so the task (and all it awaits) inherits it.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


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


class InFlightRequests:
    """Counts requests whose response has not been finished yet, for a graceful drain."""

    def __init__(self) -> None:
        # Set by drain(): from then on every response says "Connection: close".
        self.draining = False
        self._active: set[int] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._active)

    def started(self, key: int) -> None:
        self._active.add(key)
        self._idle.clear()

    def finished(self, key: int) -> None:
        self._active.discard(key)
        if not self._active:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True when every request finished within `timeout` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def transform(self, request: tornado.httputil.HTTPServerRequest) -> tornado.web.OutputTransform:
        """An OutputTransform factory: Tornado makes one per request, for every handler."""
        return _TrackingTransform(request, self)


class _TrackingTransform(tornado.web.OutputTransform):
    """Marks a request active when its handler runs and done when its last chunk is written."""

    def __init__(
        self, request: tornado.httputil.HTTPServerRequest, tracker: InFlightRequests
    ) -> None:
        super().__init__(request)
        self._tracker = tracker
        tracker.started(id(self))
        REQUEST_ID.set(request.headers.get("X-Request-ID", ""))

    def transform_first_chunk(
        self,
        status_code: int,
        headers: tornado.httputil.HTTPHeaders,
        chunk: bytes,
        finishing: bool,
    ) -> tuple[int, tornado.httputil.HTTPHeaders, bytes]:
        if self._tracker.draining and status_code != 101:
            # nginx then drops this upstream connection itself after the response, instead of
            # reusing it just as this instance closes it (a request lost on a POST).
            headers["Connection"] = "close"
        if finishing:
            self._tracker.finished(id(self))
        return status_code, headers, chunk

    def transform_chunk(self, chunk: bytes, finishing: bool) -> bytes:
        if finishing:
            self._tracker.finished(id(self))
        return chunk


# Every WebSocket handler that completed or is completing its handshake, whatever the app's
# handler classes: the drain closes them. Tornado keeps no such list itself, so the handshake
# method of the base class registers each one (weakly: a closed socket's handler goes away).
OPEN_WEBSOCKETS: weakref.WeakSet[tornado.websocket.WebSocketHandler] = weakref.WeakSet()
_handshake = tornado.websocket.WebSocketHandler.get


async def _registering_handshake(
    self: tornado.websocket.WebSocketHandler, *args: Any, **kwargs: Any
) -> None:
    OPEN_WEBSOCKETS.add(self)
    await _handshake(self, *args, **kwargs)


tornado.websocket.WebSocketHandler.get = _registering_handshake  # type: ignore[method-assign]


def close_websockets(reason: str = "server restarting") -> int:
    """Closes every open WebSocket with 1001 (going away); returns how many."""
    handlers = [handler for handler in OPEN_WEBSOCKETS if handler.ws_connection is not None]
    for handler in handlers:
        handler.close(GOING_AWAY, reason)
    return len(handlers)


class HealthHandler(tornado.web.RequestHandler):
    """200 while the instance's event loop runs: what the bundle's health checks need."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.write("ok\n")


def routes_path(app: tornado.web.Application, path: str) -> bool:
    """True when one of the app's own routes answers `path` (for any Host)."""
    request = tornado.httputil.HTTPServerRequest(
        headers=tornado.httputil.HTTPHeaders({"Host": "localhost"}),
        start_line=tornado.httputil.RequestStartLine("GET", path, "HTTP/1.1"),
    )
    found = app.find_handler(request).handler_class
    not_found = (tornado.web.ErrorHandler, app.settings.get("default_handler_class"))
    return found not in not_found


class DrainingHTTPServer(HTTPServer):
    """An HTTPServer that can tell how many client connections are still open."""

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self._streams: weakref.WeakSet[IOStream] = weakref.WeakSet()

    def handle_stream(self, stream: IOStream, address: tuple[str, int]) -> None:
        self._streams.add(stream)
        super().handle_stream(stream, address)

    def open_connections(self) -> int:
        return sum(1 for stream in self._streams if not stream.closed())


async def drain(server: DrainingHTTPServer, tracker: InFlightRequests, timeout: float) -> None:
    """Stop accepting, close WebSockets, finish in-flight requests within `timeout`, then close
    what is left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    server.stop()
    closed = close_websockets()
    if closed:
        log.info("drain: closed %d WebSocket(s) with %d (going away)", closed, GOING_AWAY)
    # Responses from now on say "Connection: close", so nginx drops its kept-alive connections
    # to this instance itself instead of racing the close below; no_keep_alive makes Tornado
    # close them too after requests that start from now on.
    tracker.draining = True
    server.conn_params.no_keep_alive = True
    if not await tracker.wait_idle(timeout):
        log.warning(
            "drain: %d request(s) still running after %gs; closing them", len(tracker), timeout
        )
    # Idle kept-alive connections go when nginx uses them (the answer says "Connection: close")
    # or closes them itself after its upstream keepalive_timeout, which is below the drain
    # timeout (tests/test_stop_budget.py). Closing one from this side instead could cut a
    # request that nginx is just sending on it, which nginx retries for a GET but not a POST.
    while server.open_connections() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    await server.close_all_connections()


class BlockedLoopMonitor:
    """Logs one warning, with the stack of the code that blocks it, whenever the event loop has
    not run for `threshold` seconds (a handler calling time.sleep, a slow C call, a CPU loop).

    The loop touches a heartbeat every threshold/4 seconds; a daemon thread looks at it as
    often. Cost in normal operation: one tiny callback and one thread wake-up per period.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.period = threshold / 4
        self.heartbeat = time.monotonic()
        self._loop_thread = threading.get_ident()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop_thread = threading.get_ident()
        loop.call_soon(self._beat, loop)
        threading.Thread(target=self._watch, name="blocked-loop-monitor", daemon=True).start()

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        self.heartbeat = time.monotonic()
        loop.call_later(self.period, self._beat, loop)

    def _watch(self) -> None:
        warned_for = 0.0
        while True:
            time.sleep(self.period)
            beat = self.heartbeat
            blocked = time.monotonic() - beat
            if blocked > self.threshold and beat != warned_for:
                warned_for = beat
                self.warn(blocked)

    def warn(self, blocked: float) -> None:
        frame = sys._current_frames().get(self._loop_thread)
        frames = traceback.extract_stack(frame) if frame else traceback.StackSummary()
        # What the loop runs: the frames below asyncio's callback runner (events.py, _run).
        starts = [i for i, f in enumerate(frames) if f.name == "_run" and "asyncio" in f.filename]
        shown = frames[starts[-1] + 1 :] if starts else frames
        stack = "".join(traceback.format_list(shown)) or "(no stack)\n"
        log.warning(
            "event loop blocked for %.1fs (BLOCKED_LOOP_WARNING=%gs); it is running:\n%s",
            blocked,
            self.threshold,
            stack.rstrip("\n"),
        )


def instrument(app: tornado.web.Application) -> None:
    """Request counts and durations by method, handler class and status, in prometheus_client's
    multiprocess files, which the metrics endpoint adds up across instances (metrics.py)."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_DIR)
    # The start hook makes it; an instance started by hand (python main.py) makes it itself.
    METRICS_DIR.mkdir(parents=True, exist_ok=True)
    # After the variable: prometheus_client picks its file-backed values at import.
    from prometheus_client import Counter, Histogram

    requests = Counter(
        "tornado_requests", "Requests answered", ["method", "handler", "status"], registry=None
    )
    durations = Histogram(
        "tornado_request_duration_seconds",
        "Time from the request's arrival to its answer",
        ["method", "handler"],
        registry=None,
    )
    log_request = app.log_request
    # (method, handler class, status) -> its two series: labels() validates on every call.
    series: dict[tuple[str, type, int], tuple[Any, Any]] = {}

    def measured(handler: tornado.web.RequestHandler) -> None:
        request = handler.request
        key = (request.method or "", type(handler), handler.get_status())
        if key not in series:
            # A handler class, not a path: the label set stays as small as the app's routes.
            method = key[0] if key[0] in handler.SUPPORTED_METHODS else "other"
            name = key[1].__name__
            series[key] = (
                requests.labels(method, name, str(key[2])),
                durations.labels(method, name),
            )
        count, duration = series[key]
        count.inc()
        duration.observe(request.request_time())
        log_request(handler)

    app.log_request = measured  # type: ignore[method-assign]


def prepare(app: tornado.web.Application, settings: InstanceSettings) -> InFlightRequests:
    """What the bundle adds to any app: drain tracking, WebSocket pings, /healthz when the app
    has none, and the diagnostics routes when they are on."""
    tracker = InFlightRequests()
    app.add_transform(tracker.transform)  # type: ignore[arg-type]
    # Pings keep an idle WebSocket from reaching nginx's proxy_read_timeout, and a dead peer is
    # dropped after one unanswered ping. An app's own values win.
    app.settings.setdefault("websocket_ping_interval", settings.websocket_ping_interval)
    app.settings.setdefault("websocket_ping_timeout", settings.websocket_ping_interval)
    if not routes_path(app, HEALTH_PATH):
        app.add_handlers(r".*", [(HEALTH_PATH, HealthHandler)])
    if settings.diagnostics:
        diagnostics.add_routes(app)
    if settings.metrics:
        instrument(app)
    return tracker


async def serve(
    app: tornado.web.Application, port: int, drain_timeout: float, settings: InstanceSettings
) -> None:
    tracker = prepare(app, settings)
    server = DrainingHTTPServer(app, xheaders=True)
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
    if settings.blocked_loop_warning:
        BlockedLoopMonitor(settings.blocked_loop_warning).start(loop)
    log.info("listening on http://%s:%d", LISTEN_ADDRESS, port)
    await stop.wait()
    log.info("draining (at most %gs)", drain_timeout)
    await drain(server, tracker, drain_timeout)
    log.info("stopped")


class RequestIdFilter(logging.Filter):
    """Adds the request's ID (REQUEST_ID) and a lower-case level to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        record.level = record.levelname.lower()
        return True


class TextFormatter(tornado.log.LogFormatter):
    """Tornado's format; the request's ID after the location, and at the start of every further
    line of a record (a traceback), so that one grep for an ID finds all of them."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", "")
        record.request_tag = f"{request_id} " if request_id else ""
        text = super().format(record)
        return text.replace("\n", f"\n    {request_id} ") if request_id else text


def configure_logging(port: int, log_format: str = "text") -> None:
    """Tornado's log format, with the instance's name on every line (docker logs mixes them);
    with LOG_FORMAT=json, one JSON object per record (python-json-logger)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "{level}{message}{module}{lineno}{request_id}",
                style="{",
                static_fields={"source": f"tornado-{port}"},
                # ISO 8601 in UTC with microseconds, in the field every source calls "time".
                timestamp="time",
            )
        )
    else:
        handler.setFormatter(
            TextFormatter(
                fmt=f"%(color)s[%(levelname)1.1s %(asctime)s tornado-{port} "
                "%(module)s:%(lineno)d]%(end_color)s %(request_tag)s%(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # nginx's access log is the one record of every request; Tornado's own per-request INFO lines
    # would cost throughput and duplicate it. Warnings and errors (4xx/5xx) are still logged.
    tornado.log.access_log.setLevel(logging.WARNING)


def _program() -> str:
    return Path(sys.argv[0]).name or "tornado_bundle.runner"


def main(
    argv: list[str] | None = None,
    app_factory: Callable[[], tornado.web.Application] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> int:
    """Runs one instance: `app_factory`'s app, or the one APP names. Exit codes: 0 after a
    drain, 1 when the app cannot be loaded or the port cannot be bound, 2 for a bad flag or
    environment value."""
    try:
        port, drain_timeout = parse_arguments(sys.argv[1:] if argv is None else argv)
        settings = instance_settings(environ)
    except (UsageError, ConfigError) as error:
        print(f"{_program()}: error: {error}", file=sys.stderr)
        return 2
    configure_logging(port, settings.log_format)
    # The watchdog sends SIGUSR1 before it kills a hung instance: the stacks of every thread go
    # to stderr (docker logs) from C, even while Python code cannot run.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        app = app_factory() if app_factory is not None else load_app(app_spec(environ))
    except AppError as error:
        print(f"{_program()}: error: {error}", file=sys.stderr)
        return 1
    asyncio.run(serve(app, port, drain_timeout, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
