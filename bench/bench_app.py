"""The app that `make bench` serves for its static-file and WebSocket measures: a 10 KB file in
its static_path (bench/run.py writes it next to a copy of this file), and a WebSocket echo."""

import os

import tornado.web
import tornado.websocket


class HelloHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("Hello, Tornado\n")


class EchoSocket(tornado.websocket.WebSocketHandler):
    async def on_message(self, message: str | bytes) -> None:
        await self.write_message(message, binary=isinstance(message, bytes))


def make_app() -> tornado.web.Application:
    here = os.path.dirname(os.path.abspath(__file__))
    return tornado.web.Application(
        [(r"/", HelloHandler), (r"/ws", EchoSocket)], static_path=os.path.join(here, "static")
    )
