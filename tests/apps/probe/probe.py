"""A test app in APP's async forms: `make_app` is an async function, `lifespan` an async context
manager factory that logs as it is entered and left (tests/image/test_real_apps.py). Routes:
/headers?kb=N answers with N headers of 1 KB each; /scheme answers request.protocol; /secret
answers the COOKIE_SECRET it was given."""

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

import tornado.web

log = logging.getLogger("probe")


class Headers(tornado.web.RequestHandler):
    def get(self) -> None:
        for number in range(int(self.get_argument("kb"))):
            self.set_header(f"X-Filler-{number}", "f" * 1000)
        self.write("big headers\n")


class Scheme(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write(self.request.protocol)


class Secret(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write(os.environ.get("COOKIE_SECRET", "(none)"))


async def make_app() -> tornado.web.Application:
    await asyncio.sleep(0.1)  # an await on the instance's loop, as an async setup does
    return tornado.web.Application(
        [(r"/headers", Headers), (r"/scheme", Scheme), (r"/secret", Secret)]
    )


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[tornado.web.Application]:
    log.warning("lifespan: entered")
    yield await make_app()
    await asyncio.sleep(0.1)  # an await as a pool closes
    log.warning("lifespan: left")
