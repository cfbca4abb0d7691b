"""The graceful drain of one instance, on SIGTERM: stop listening, close open WebSockets with
1001 (going away) so that their clients reconnect to a live instance, let in-flight requests
finish within a deadline, wait for nginx to let go of its idle kept-alive connections, then
close what is left. Tornado has no drain of its own (tornadoweb/tornado#1791).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import tornado.httputil
import tornado.web
import tornado.websocket
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream

from tornado_bundle.instance_logs import REQUEST_ID, log

# What a draining instance tells its WebSocket clients (RFC 6455: 1001 "going away").
GOING_AWAY = 1001


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
# method of the base class registers each one (weakly: a closed socket's handler goes away),
# once track_websockets() has run: an instance calls it as it starts, importing does not.
OPEN_WEBSOCKETS: weakref.WeakSet[tornado.websocket.WebSocketHandler] = weakref.WeakSet()
_handshake = tornado.websocket.WebSocketHandler.get


async def _registering_handshake(
    self: tornado.websocket.WebSocketHandler, *args: Any, **kwargs: Any
) -> None:
    OPEN_WEBSOCKETS.add(self)
    await _handshake(self, *args, **kwargs)


def track_websockets() -> None:
    """From now on every WebSocket handshake registers its handler in OPEN_WEBSOCKETS."""
    tornado.websocket.WebSocketHandler.get = _registering_handshake  # type: ignore[method-assign]


def close_websockets(reason: str = "server restarting") -> int:
    """Closes every open WebSocket with 1001 (going away); returns how many."""
    handlers = [handler for handler in OPEN_WEBSOCKETS if handler.ws_connection is not None]
    for handler in handlers:
        handler.close(GOING_AWAY, reason)
    return len(handlers)


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
