"""Tornado without nginx or Supervisor, for `make bench`: the app that APP names (main:make_app,
from /app) as one process or as Tornado's multi-process mode (fork_processes, one shared port),
logging as the bundle's instances do. It listens where nginx would: on LISTEN_PORT (the image's
80, or the port the bench gives it on the host network), every address. Run in the bundle's
image: python /bench/tornado_alone.py PROCESSES"""

import asyncio
import os
import sys

import tornado.netutil
import tornado.process
from tornado.httpserver import HTTPServer

from tornado_bundle.app_loader import opened
from tornado_bundle.instance_logs import configure_logging
from tornado_bundle.settings import load


async def serve(sockets: list) -> None:
    async with opened(load().app) as app:
        server = HTTPServer(app, xheaders=True)
        server.add_sockets(sockets)
        await asyncio.Event().wait()


def run(processes: int, port: int, address: str) -> None:
    sockets = tornado.netutil.bind_sockets(port, address)
    if processes > 1:
        tornado.process.fork_processes(processes)
    configure_logging(port)
    asyncio.run(serve(sockets))


if __name__ == "__main__":
    run(int(sys.argv[1]), int(os.environ.get("LISTEN_PORT", "80")), "0.0.0.0")
