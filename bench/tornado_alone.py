"""Tornado without nginx or Supervisor, for `make bench`: the bundle's own app (main.make_app)
on 0.0.0.0:8000, as one process or as Tornado's multi-process mode (fork_processes, one shared
port). Run in the bundle's image: python /bench/tornado_alone.py PROCESSES"""

import asyncio
import sys

import tornado.netutil
import tornado.process
from tornado.httpserver import HTTPServer

sys.path.insert(0, "/opt/bundle")
import main  # noqa: E402 - lives in the image, not on the default path


async def serve(sockets: list) -> None:
    server = HTTPServer(main.make_app(), xheaders=True)
    server.add_sockets(sockets)
    await asyncio.Event().wait()


def run(processes: int) -> None:
    sockets = tornado.netutil.bind_sockets(8000, "0.0.0.0")
    if processes > 1:
        tornado.process.fork_processes(processes)
    main.configure_logging()
    asyncio.run(serve(sockets))


if __name__ == "__main__":
    run(int(sys.argv[1]))
