"""DIAGNOSTICS=on: endpoints for tests and demos, added to whatever app the bundle runs.

Never in production: /slow holds a request open on purpose.
"""

from __future__ import annotations

import asyncio
import time

import tornado.web
from tornado.log import app_log

# Long enough to hold a request past nginx's proxy_read_timeout default in a test.
MAX_SLOW_SECONDS = 600.0


class SlowHandler(tornado.web.RequestHandler):
    """GET|POST /slow?seconds=N answers after N seconds; each call is logged once, so a test can
    count how many times nginx sent the request to an instance."""

    async def get(self) -> None:
        try:
            seconds = float(self.get_query_argument("seconds", "1"))
        except ValueError:
            raise tornado.web.HTTPError(400, reason="seconds must be a number") from None
        if not 0 <= seconds <= MAX_SLOW_SECONDS:
            raise tornado.web.HTTPError(400, reason=f"seconds must be 0-{MAX_SLOW_SECONDS:g}")
        app_log.info("diagnostics: /slow called: %s %s", self.request.method, self.request.uri)
        await asyncio.sleep(seconds)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.write(f"slept {seconds:g}s\n")

    async def post(self) -> None:
        await self.get()


class BlockHandler(tornado.web.RequestHandler):
    """GET /block?seconds=N blocks the event loop for N seconds (time.sleep in a handler, the
    classic Tornado mistake): for the blocked-loop warning and the watchdog."""

    def get(self) -> None:
        seconds = float(self.get_query_argument("seconds", "1"))
        if not 0 <= seconds <= MAX_SLOW_SECONDS:
            raise tornado.web.HTTPError(400, reason=f"seconds must be 0-{MAX_SLOW_SECONDS:g}")
        time.sleep(seconds)
        self.write(f"blocked {seconds:g}s\n")


# What /grow holds on to, as a leaking app would.
_HELD: list[bytearray] = []


class GrowHandler(tornado.web.RequestHandler):
    """GET /grow?mb=N makes the instance hold N more MiB: for INSTANCE_MAX_MEMORY."""

    def get(self) -> None:
        megabytes = int(self.get_query_argument("mb", "1"))
        if not 0 <= megabytes <= 1024:
            raise tornado.web.HTTPError(400, reason="mb must be 0-1024")
        _HELD.append(bytearray(megabytes * 2**20))
        self.write(f"holding {sum(len(block) for block in _HELD) // 2**20} MiB more\n")


class WhoAmIHandler(tornado.web.RequestHandler):
    """GET /whoami: the client address, scheme and host as Tornado sees them (xheaders)."""

    def get(self) -> None:
        request = self.request
        self.write(
            {"remote_ip": request.remote_ip, "protocol": request.protocol, "host": request.host}
        )


ROUTES = [
    (r"/slow", SlowHandler),
    (r"/block", BlockHandler),
    (r"/grow", GrowHandler),
    (r"/whoami", WhoAmIHandler),
]


def add_routes(app: tornado.web.Application) -> None:
    """Adds ROUTES to `app` for every host, ahead of the app's own routes."""
    app.add_handlers(r".*", ROUTES)
