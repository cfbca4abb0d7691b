"""A chat room, three ways: WebSocket, long polling and server-sent events.

Every message goes into one Redis stream (REDIS_URL), and every instance reads that same ordered
log, so a client sees every message whichever instance serves it and whichever instance the
sender reached: the example is correct with WORKERS=2 or 20, and across containers. Without
REDIS_URL it keeps messages in its own process, which is right for one process only.

    REDIS_URL=redis://127.0.0.1:6379 python app.py --port=8000     # alone
    APP=app:make_app                                               # in the bundle (Dockerfile)
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import redis.asyncio
import tornado.web
import tornado.websocket
from tornado.log import app_log

HERE = Path(__file__).resolve().parent
STREAM = "chat"
# Long polls and SSE streams answer at least this often (an empty poll, a comment line), well
# inside the bundle's PROXY_READ_TIMEOUT.
WAIT_SECONDS = 20
MAX_MESSAGE = 1000


class RedisLog:
    """The messages as a Redis stream: ids are ordered, so "everything after id X" is exact."""

    def __init__(self, url: str) -> None:
        self.redis = redis.asyncio.from_url(url, decode_responses=True)

    async def append(self, text: str) -> str:
        fields = {"text": text, "sent": repr(time.time())}
        return await self.redis.xadd(STREAM, fields, maxlen=1000, approximate=True)

    async def last_id(self) -> str:
        newest = await self.redis.xrevrange(STREAM, count=1)
        return newest[0][0] if newest else "0-0"

    async def after(self, last_id: str, wait_seconds: float) -> list[dict[str, str]]:
        """The messages after `last_id`, waiting up to `wait_seconds` for the first one."""
        reply = await self.redis.xread({STREAM: last_id}, count=100, block=int(wait_seconds * 1000))
        return [{"id": id_, **fields} for _, entries in reply for id_, fields in entries]


class MemoryLog:
    """The same log in this process: fine alone, wrong with more than one instance."""

    def __init__(self) -> None:
        self.messages: list[dict[str, str]] = []
        self.changed = asyncio.Condition()

    async def append(self, text: str) -> str:
        id_ = f"{len(self.messages) + 1}-0"
        self.messages.append({"id": id_, "text": text, "sent": repr(time.time())})
        async with self.changed:
            self.changed.notify_all()
        return id_

    async def last_id(self) -> str:
        return self.messages[-1]["id"] if self.messages else "0-0"

    async def after(self, last_id: str, wait_seconds: float) -> list[dict[str, str]]:
        seen = int(last_id.split("-")[0])
        if len(self.messages) <= seen:
            async with self.changed:
                try:
                    await asyncio.wait_for(self.changed.wait(), wait_seconds)
                except TimeoutError:
                    return []
        return self.messages[seen:]


class Handler(tornado.web.RequestHandler):
    @property
    def log(self) -> RedisLog | MemoryLog:
        return self.application.settings["message_log"]


class IndexHandler(Handler):
    def get(self) -> None:
        self.render("index.html")


class MessagesHandler(Handler):
    """POST a message (the body, as text): 201 with its id."""

    async def post(self) -> None:
        text = self.request.body.decode("utf-8", "replace").strip()
        if not 0 < len(text) <= MAX_MESSAGE:
            raise tornado.web.HTTPError(400, reason=f"a message is 1-{MAX_MESSAGE} characters")
        self.set_status(201)
        self.write({"id": await self.log.append(text)})


class PollHandler(Handler):
    """Long polling: GET /poll?after=ID answers as soon as there is a message after ID, or with
    none after WAIT_SECONDS. Without `after`, at once with the newest id to start from."""

    async def get(self) -> None:
        after = self.get_query_argument("after", None)
        if after is None:
            self.write({"last_id": await self.log.last_id(), "messages": []})
            return
        messages = await self.log.after(after, WAIT_SECONDS)
        last_id = messages[-1]["id"] if messages else after
        self.write({"last_id": last_id, "messages": messages})


class EventsHandler(Handler):
    """Server-sent events: every message as it arrives; a reconnecting browser resumes after
    Last-Event-ID."""

    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-store")
        last_id = self.request.headers.get("Last-Event-ID") or await self.log.last_id()
        while not self.request.connection.stream.closed():
            messages = await self.log.after(last_id, WAIT_SECONDS)
            for message in messages:
                self.write(f"id: {message['id']}\ndata: {json.dumps(message)}\n\n")
                last_id = message["id"]
            if not messages:
                self.write(": still here\n\n")
            await self.flush()


class ClockHandler(Handler):
    """Server-sent events: the server's time, `count` times, every `interval` seconds."""

    async def get(self) -> None:
        count = min(int(self.get_query_argument("count", "10")), 1000)
        interval = min(max(float(self.get_query_argument("interval", "1")), 0.01), 60)
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-store")
        for tick in range(count):
            if tick:
                await asyncio.sleep(interval)
            self.write(f"data: {time.time():.6f}\n\n")
            await self.flush()


class ChatSocket(tornado.websocket.WebSocketHandler):
    """Sends every message of the log from now on; what the client sends is posted."""

    reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        log: RedisLog | MemoryLog = self.settings["message_log"]
        self.reader = asyncio.create_task(self.forward(log, await log.last_id()))

    async def forward(self, log: RedisLog | MemoryLog, last_id: str) -> None:
        while self.ws_connection is not None:
            for message in await log.after(last_id, WAIT_SECONDS):
                await self.write_message(message)
                last_id = message["id"]

    async def on_message(self, message: str | bytes) -> None:
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        if 0 < len(text) <= MAX_MESSAGE:
            await self.settings["message_log"].append(text)

    def on_close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()


class EchoSocket(tornado.websocket.WebSocketHandler):
    """Sends back what it gets; permessage-deflate when the client offers it."""

    def get_compression_options(self) -> dict[str, Any]:
        return {}

    async def on_message(self, message: str | bytes) -> None:
        await self.write_message(message, binary=isinstance(message, bytes))


def make_app() -> tornado.web.Application:
    url = os.environ.get("REDIS_URL")
    if url is None:
        app_log.warning("REDIS_URL is not set: messages stay in this process (one instance only)")
    return tornado.web.Application(
        [
            (r"/", IndexHandler),
            (r"/messages", MessagesHandler),
            (r"/poll", PollHandler),
            (r"/events", EventsHandler),
            (r"/clock", ClockHandler),
            (r"/ws/chat", ChatSocket),
            (r"/ws/echo", EchoSocket),
        ],
        template_path=str(HERE / "templates"),
        static_path=str(HERE / "static"),
        message_log=RedisLog(url) if url else MemoryLog(),
    )


if __name__ == "__main__":
    from tornado_bundle.runner import main

    raise SystemExit(main(app_factory=make_app))
