"""One Tornado instance of the bundle: Supervisor starts one per port, nginx balances across them.

Run: python main.py --port=8000
It listens on 127.0.0.1 only, so nginx in the same container is the only way in. On SIGTERM it
stops listening, lets in-flight requests finish (at most --drain_timeout seconds), then exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import sys
import weakref
from collections.abc import Callable
from typing import Any

import tornado.httputil
import tornado.options
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream
from tornado.log import access_log

LISTEN_ADDRESS = "127.0.0.1"
# DIAGNOSTICS=on adds endpoints meant for tests and demos only (see README); off by default.
DIAGNOSTICS_ENV = "DIAGNOSTICS"
MAX_SLOW_SECONDS = 30.0

log = logging.getLogger("main")

tornado.options.define("port", type=int, default=8000, help="TCP port on 127.0.0.1 (1-65535)")
tornado.options.define(
    "drain_timeout",
    type=float,
    default=5.0,
    help="seconds to let in-flight requests finish after SIGTERM (0-60)",
)


class UsageError(Exception):
    """A command-line value that is not allowed; the message says what is."""


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

    def transform_first_chunk(
        self,
        status_code: int,
        headers: tornado.httputil.HTTPHeaders,
        chunk: bytes,
        finishing: bool,
    ) -> tuple[int, tornado.httputil.HTTPHeaders, bytes]:
        if self._tracker.draining:
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


class HelloHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.write("Hello, Tornado\n")


class HealthHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.write("ok\n")


class SlowHandler(tornado.web.RequestHandler):
    """GET /slow?seconds=N answers after N seconds: lets tests hold a request in flight."""

    async def get(self) -> None:
        try:
            seconds = float(self.get_query_argument("seconds", "1"))
        except ValueError:
            raise tornado.web.HTTPError(400, reason="seconds must be a number") from None
        if not 0 <= seconds <= MAX_SLOW_SECONDS:
            raise tornado.web.HTTPError(400, reason=f"seconds must be 0-{MAX_SLOW_SECONDS:g}")
        await asyncio.sleep(seconds)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.write(f"slept {seconds:g}s\n")


def diagnostics_enabled(
    environ: dict[str, str] | os._Environ[str] = os.environ,
) -> bool:
    return environ.get(DIAGNOSTICS_ENV, "off") == "on"


def make_app(
    diagnostics: bool = False, tracker: InFlightRequests | None = None
) -> tornado.web.Application:
    """The application; add your own handlers to `routes`."""
    routes: list[tuple[str, type[tornado.web.RequestHandler]]] = [
        (r"/", HelloHandler),
        (r"/healthz", HealthHandler),
    ]
    if diagnostics:
        routes.append((r"/slow", SlowHandler))
    transforms: list[Callable[..., tornado.web.OutputTransform]] = []
    if tracker is not None:
        transforms.append(tracker.transform)
    return tornado.web.Application(routes, transforms=transforms)  # type: ignore[arg-type]


def parse_arguments(argv: list[str]) -> tuple[int, float]:
    """--port and --drain_timeout from argv, validated; raises UsageError."""
    # Tornado prints its whole --help before raising on an unknown flag: keep the error one line,
    # but let an explicit --help through.
    help_text = io.StringIO()
    try:
        with contextlib.redirect_stderr(help_text):
            tornado.options.parse_command_line(argv, final=False)
    except (tornado.options.Error, ValueError) as error:
        raise UsageError(f"{error}; allowed: --port=1-65535 --drain_timeout=0-60") from None
    except SystemExit:
        sys.stderr.write(help_text.getvalue())
        raise
    port: int = tornado.options.options.port
    drain_timeout: float = tornado.options.options.drain_timeout
    if not 1 <= port <= 65535:
        raise UsageError(f"--port={port} is out of range; allowed: 1-65535")
    if not 0 <= drain_timeout <= 60:
        raise UsageError(f"--drain_timeout={drain_timeout:g} is out of range; allowed: 0-60")
    # Outside the redirect: this sets up Tornado's log handler on the real stderr.
    tornado.options.options.run_parse_callbacks()
    return port, drain_timeout


async def drain(server: DrainingHTTPServer, tracker: InFlightRequests, timeout: float) -> None:
    """Stop accepting, finish in-flight requests within `timeout`, then close what is left."""
    deadline = asyncio.get_running_loop().time() + timeout
    server.stop()
    # Responses from now on say "Connection: close", so nginx drops its kept-alive connections
    # to this instance itself instead of racing the close below; no_keep_alive makes Tornado
    # close them too after requests that start from now on.
    tracker.draining = True
    server.conn_params.no_keep_alive = True
    if not await tracker.wait_idle(timeout):
        log.warning(
            "drain: %d request(s) still running after %gs; closing them",
            len(tracker),
            timeout,
        )
    # Idle kept-alive connections go when nginx uses them (the answer says "Connection: close")
    # or closes them itself after its upstream keepalive_timeout (2 s, below the drain timeout).
    # Closing one from this side instead could cut a request that nginx is just sending on it,
    # which nginx retries for a GET but not for a POST.
    while server.open_connections() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    await server.close_all_connections()


async def serve(port: int, drain_timeout: float, diagnostics: bool) -> None:
    tracker = InFlightRequests()
    server = DrainingHTTPServer(make_app(diagnostics, tracker), xheaders=True)
    try:
        server.listen(port, address=LISTEN_ADDRESS)
    except OSError as error:
        raise SystemExit(
            f"main.py: cannot listen on {LISTEN_ADDRESS}:{port}: {error.strerror}"
        ) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("listening on http://%s:%d", LISTEN_ADDRESS, port)
    await stop.wait()
    log.info("draining (at most %gs)", drain_timeout)
    await drain(server, tracker, drain_timeout)
    log.info("stopped")


def configure_logging() -> None:
    # nginx's access log is the one record of every request; Tornado's own per-request INFO lines
    # would cost throughput and duplicate it. Warnings and errors (4xx/5xx) are still logged.
    access_log.setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    try:
        port, drain_timeout = parse_arguments(sys.argv if argv is None else argv)
    except UsageError as error:
        print(f"main.py: {error}", file=sys.stderr)
        return 2
    configure_logging()
    asyncio.run(serve(port, drain_timeout, diagnostics_enabled()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
