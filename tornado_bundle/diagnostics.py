"""DIAGNOSTICS=on: endpoints for tests and demos, added to whatever app the bundle runs.

Never in production: /slow holds a request open on purpose.
"""

from __future__ import annotations

import asyncio

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


def add_routes(app: tornado.web.Application) -> None:
    """Adds /slow to `app` for every host, ahead of the app's own routes."""
    app.add_handlers(r".*", [(r"/slow", SlowHandler)])
