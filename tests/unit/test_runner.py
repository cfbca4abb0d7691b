"""Unit tests of the runner (tornado_bundle/runner.py) and main.py: flags, what the runner adds to
any app, the graceful drain with WebSockets, standalone runs (no Docker)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tornado.testing
import tornado.web
import tornado.websocket
from tornado.httpclient import AsyncHTTPClient

import main
from tornado_bundle import drain, runner
from tornado_bundle.settings import parse

MAIN = Path(main.__file__)
# PROXY_READ_TIMEOUT's default, 120 s: WebSocket pings every 40 s.
DEFAULTS = parse({})


def prepared(app: tornado.web.Application, diagnostics: bool = False) -> tornado.web.Application:
    runner.prepare(app, parse({"DIAGNOSTICS": "on" if diagnostics else "off"}))
    return app


class AppTest(tornado.testing.AsyncHTTPTestCase):
    def get_app(self) -> tornado.web.Application:
        return prepared(main.make_app())

    def test_hello(self) -> None:
        response = self.fetch("/")
        assert response.code == 200
        assert response.body == b"Hello, Tornado\n"

    def test_the_runner_adds_healthz(self) -> None:
        response = self.fetch("/healthz")
        assert (response.code, response.body) == (200, b"ok\n")
        assert response.headers["Cache-Control"] == "no-store"

    def test_slow_is_absent_without_diagnostics(self) -> None:
        assert self.fetch("/slow?seconds=0").code == 404

    def test_unknown_path_is_404(self) -> None:
        assert self.fetch("/nope").code == 404

    def test_websocket_pings_stay_inside_nginx_s_read_timeout(self) -> None:
        assert self._app.settings["websocket_ping_interval"] == 40
        assert self._app.settings["websocket_ping_timeout"] == 40


class OwnHealth(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("mine")


class OwnHealthAppTest(tornado.testing.AsyncHTTPTestCase):
    def get_app(self) -> tornado.web.Application:
        app = tornado.web.Application([(r"/healthz", OwnHealth)], websocket_ping_interval=5)
        return prepared(app)

    def test_an_app_s_own_healthz_and_ping_settings_win(self) -> None:
        assert self.fetch("/healthz").body == b"mine"
        assert self._app.settings["websocket_ping_interval"] == 5


class CatchAll(tornado.web.RequestHandler):
    def get(self, path: str) -> None:
        self.write("mine")


class CatchAllAppTest(tornado.testing.AsyncHTTPTestCase):
    # Tornado's file_upload demo routes every path to one PUT handler (GET is its 405).
    def get_app(self) -> tornado.web.Application:
        return prepared(tornado.web.Application([(r"/(.*)", CatchAll)]))

    def test_a_catch_all_route_does_not_take_the_health_check(self) -> None:
        assert self.fetch("/healthz").body == b"ok\n"
        assert self.fetch("/anything").body == b"mine"


def test_default_handler_class_does_not_count_as_a_route() -> None:
    app = tornado.web.Application([], default_handler_class=OwnHealth)
    assert not runner.routes_path(app, "/healthz")


class DiagnosticsAppTest(tornado.testing.AsyncHTTPTestCase):
    def get_app(self) -> tornado.web.Application:
        return prepared(main.make_app(), diagnostics=True)

    def test_slow_answers_after_the_delay(self) -> None:
        response = self.fetch("/slow?seconds=0.05")
        assert (response.code, response.body) == (200, b"slept 0.05s\n")

    def test_slow_rejects_bad_values(self) -> None:
        assert self.fetch("/slow?seconds=abc").code == 400
        assert self.fetch("/slow?seconds=601").code == 400
        assert self.fetch("/slow?seconds=-1").code == 400


def run_main(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(MAIN), *args], capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("--port=abc", "argument --port: invalid int value: 'abc'"),
        ("--port=0", "--port=0 is out of range; allowed: 1-65535"),
        ("--port=65536", "--port=65536 is out of range; allowed: 1-65535"),
        ("--drain_timeout=61", "--drain_timeout=61 is out of range; allowed: 0-60"),
        ("--bogus=1", "unrecognized arguments: --bogus=1"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argument: str, message: str) -> None:
    result = run_main(argument)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("main.py: error: ")
    assert message in lines[0]


def test_help_still_prints_the_options() -> None:
    result = run_main("--help")
    assert result.returncode == 0
    assert "--port" in result.stdout


def test_port_in_use_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_main(f"--port={port}")
    assert result.returncode == 1
    assert f"main.py: cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SlowRequest:
    """A server with diagnostics, and one /slow request to it that is in flight."""

    async def start(self, seconds: float) -> SlowRequest:
        app = main.make_app()
        self.tracker = runner.prepare(app, parse({"DIAGNOSTICS": "on"}))
        self.server = drain.DrainingHTTPServer(app, xheaders=True)
        self.port = free_port()
        self.server.listen(self.port, address="127.0.0.1")
        self.client = AsyncHTTPClient(force_instance=True)
        url = f"http://127.0.0.1:{self.port}/slow?seconds={seconds}"
        self.response = asyncio.ensure_future(self.client.fetch(url))
        while len(self.tracker) == 0:
            await asyncio.sleep(0.01)
        return self


def test_drain_lets_the_in_flight_request_finish_and_refuses_new_ones() -> None:
    async def scenario() -> None:
        slow = await SlowRequest().start(0.3)
        await drain.drain(slow.server, slow.tracker, timeout=5)
        response = await slow.response
        assert (response.code, response.body) == (200, b"slept 0.3s\n")
        # nginx must not reuse this upstream connection once the instance is draining.
        assert response.headers["Connection"] == "close"
        assert len(slow.tracker) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", slow.port), timeout=1).close()
        slow.client.close()

    asyncio.run(scenario())


def test_drain_gives_up_after_its_deadline() -> None:
    async def scenario() -> None:
        slow = await SlowRequest().start(5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await drain.drain(slow.server, slow.tracker, timeout=0.2)
        assert loop.time() - started < 1
        with pytest.raises(Exception):  # noqa: B017 - the connection is cut; the error type varies
            await slow.response
        slow.client.close()

    asyncio.run(scenario())


def test_sigterm_drains_and_exits_0() -> None:
    port = free_port()
    env = {**os.environ, "DIAGNOSTICS": "on"}
    process = subprocess.Popen(
        [sys.executable, str(MAIN), f"--port={port}"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if f"listening on http://127.0.0.1:{port}" in line:
                break
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(b"GET /slow?seconds=0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
            # Give the request time to reach the handler before the signal.
            connection.settimeout(0.1)
            with pytest.raises(TimeoutError):
                connection.recv(1)
            process.terminate()
            connection.settimeout(5)
            reply = b""
            # Like nginx: read the whole answer, then close because it says "Connection: close".
            while not reply.endswith(b"slept 0.5s\n"):
                chunk = connection.recv(4096)
                assert chunk, reply
                reply += chunk
        closed_at = time.monotonic()
        assert reply.startswith(b"HTTP/1.1 200 OK")
        assert b"Connection: close" in reply
        assert process.wait(timeout=5) == 0
        # The drain ends as soon as its last connection is gone, not at its deadline (5 s).
        assert time.monotonic() - closed_at < 1
    finally:
        process.kill()


class Echo(tornado.websocket.WebSocketHandler):
    def on_message(self, message: str | bytes) -> None:
        self.write_message(message)


def test_drain_closes_websockets_with_1001_at_once() -> None:
    async def scenario() -> None:
        app = tornado.web.Application([(r"/ws", Echo)])
        tracker = runner.prepare(app, DEFAULTS)
        server = drain.DrainingHTTPServer(app, xheaders=True)
        port = free_port()
        server.listen(port, address="127.0.0.1")
        sockets = [
            await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/ws") for _ in range(3)
        ]
        await sockets[0].write_message("hello")
        assert await sockets[0].read_message() == "hello"
        loop = asyncio.get_running_loop()
        started = loop.time()
        await drain.drain(server, tracker, timeout=5)
        # The drain ends when the clients have answered the close, long before its deadline.
        assert loop.time() - started < 1
        for socket_ in sockets:
            assert await socket_.read_message() is None
            assert socket_.close_code == drain.GOING_AWAY

    asyncio.run(scenario())


def test_drain_waits_for_an_idle_kept_alive_connection_to_close() -> None:
    """nginx closes its idle upstream connections itself (keepalive_timeout); the drain waits
    for that instead of closing one under a request that nginx may be sending on it."""

    async def scenario() -> None:
        app = main.make_app()
        tracker = runner.prepare(app, DEFAULTS)
        server = drain.DrainingHTTPServer(app, xheaders=True)
        port = free_port()
        server.listen(port, address="127.0.0.1")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"Hello, Tornado\n")
        # The connection is now idle and kept alive, as nginx keeps its upstream connections.
        draining = asyncio.ensure_future(drain.drain(server, tracker, timeout=5))
        await asyncio.sleep(0.5)
        assert not draining.done(), "the drain closed an idle connection that its peer kept open"
        writer.close()
        await asyncio.wait_for(draining, 1)

    asyncio.run(scenario())
