"""APP=blog_app:make_app: Tornado's blog demo (blog.py, unchanged) as the bundle runs it. The
demo's own main() made its aiopg pool on the running loop, then listened; here the same steps
are an async context manager, so each instance makes its pool on its own loop and closes it
after its drain. The database is BLOG_DB_NAME on BLOG_DB_HOST:BLOG_DB_PORT (the demo's user and
password); prestart.sh migrates it before the instances start."""

import contextlib
import logging
import os
from collections.abc import AsyncIterator

import aiopg
import blog
import tornado.web

log = logging.getLogger("blog")


@contextlib.asynccontextmanager
async def make_app() -> AsyncIterator[tornado.web.Application]:
    async with aiopg.create_pool(
        host=os.environ.get("BLOG_DB_HOST", "127.0.0.1"),
        port=int(os.environ.get("BLOG_DB_PORT", "5432")),
        user="blog",
        password="blog",
        dbname=os.environ.get("BLOG_DB_NAME", "blog"),
    ) as db:
        await blog.maybe_create_tables(db)
        log.warning("blog: database pool open")
        yield blog.Application(db)
    log.warning("blog: database pool closed")
