"""Long-lived connections through nginx, as Tornado apps use them: WebSockets (echo, Origin, idle,
1001 on drain), long polls past nginx's old 60 s, timeouts that run a request once, server-sent
events that arrive as they are sent. Real clients: the websockets library and http.client."""

from __future__ import annotations

import asyncio
import http.client
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from conftest import SCREENSHOTS
from playwright.sync_api import Browser
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from harness import (
    LOOPBACK,
    Container,
    LoadLoop,
    docker,
    remove,
    running,
    start,
    wait_for,
)

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("image")]


@pytest.fixture(scope="module")
def chat(example_image: str) -> Iterator[Container]:
    with running({"DIAGNOSTICS": "on"}, image=example_image) as bundle:
        yield bundle


def ws_url(bundle: Container, path: str = "/ws/echo") -> str:
    return f"ws://{LOOPBACK}:{bundle.port}{path}"


async def echo(socket: ClientConnection, text: str) -> str:
    await socket.send(text)
    return str(await asyncio.wait_for(socket.recv(), 5))


def instance_of(socket: ClientConnection) -> str:
    """Which instance took the handshake (X-Upstream, DIAGNOSTICS=on)."""
    return socket.response.headers["X-Upstream"].split(", ")[-1]


def time_wait_to_instances(bundle: Container) -> int:
    """TCP connections to or from an instance port in TIME_WAIT, inside the container."""
    ports = {f"{port:04X}" for port in bundle.instance_ports}
    count = 0
    for line in bundle.exec("cat", "/proc/net/tcp").stdout.splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1].split(":")[1], fields[2].split(":")[1], fields[3]
        count += state == "06" and (local in ports or remote in ports)
    return count


def test_200_concurrent_websockets_echo_over_both_instances(chat: Container) -> None:
    async def scenario() -> Counter[str]:
        sockets = [await connect(ws_url(chat)) for _ in range(200)]
        try:
            replies = await asyncio.gather(*(echo(s, f"hello {i}") for i, s in enumerate(sockets)))
            assert replies == [f"hello {i}" for i in range(200)]
            return Counter(instance_of(s) for s in sockets)
        finally:
            await asyncio.gather(*(s.close() for s in sockets))

    spread = asyncio.run(scenario())
    print(f"instances: {dict(spread)}")
    assert set(spread) == {f"127.0.0.1:{port}" for port in chat.instance_ports}
    assert min(spread.values()) >= 80, spread


def test_permessage_deflate_is_negotiated_end_to_end(chat: Container) -> None:
    async def scenario() -> str | None:
        async with connect(ws_url(chat), compression="deflate") as socket:
            assert await echo(socket, "x" * 10_000) == "x" * 10_000
            return socket.response.headers.get("Sec-WebSocket-Extensions")

    assert (asyncio.run(scenario()) or "").startswith("permessage-deflate")


def test_a_foreign_origin_is_refused_and_the_same_origin_accepted(chat: Container) -> None:
    async def scenario() -> None:
        same = f"http://{LOOPBACK}:{chat.port}"
        async with connect(ws_url(chat), origin=same) as socket:  # type: ignore[arg-type]
            assert await echo(socket, "same origin") == "same origin"
        with pytest.raises(InvalidStatus) as refused:
            await connect(ws_url(chat), origin="http://evil.example")  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403

    asyncio.run(scenario())


def test_plain_requests_keep_reusing_upstream_connections_after_websockets(
    chat: Container,
) -> None:
    async def some_websockets() -> None:
        for _ in range(10):
            async with connect(ws_url(chat)) as socket:
                await echo(socket, "x")

    asyncio.run(some_websockets())
    before = time_wait_to_instances(chat)
    for _ in range(300):
        assert chat.get("/poll").status == 200
    # With keep-alive the 300 requests share a few upstream connections; with "Connection:
    # close" to the instances each would leave one in TIME_WAIT.
    assert time_wait_to_instances(chat) - before < 20


def test_an_idle_websocket_outlives_three_proxy_read_timeouts(example_image: str) -> None:
    with running({"PROXY_READ_TIMEOUT": "2"}, image=example_image) as bundle:

        async def scenario() -> None:
            async with connect(ws_url(bundle)) as socket:
                await asyncio.sleep(6)
                assert await echo(socket, "still here") == "still here"

        asyncio.run(scenario())


def test_rolling_restart_sends_1001_to_50_websockets_and_they_reconnect(
    example_image: str,
) -> None:
    with running({"DIAGNOSTICS": "on"}, image=example_image) as bundle:

        async def scenario() -> list[int | None]:
            sockets = [await connect(ws_url(bundle)) for _ in range(50)]
            for socket in sockets:
                assert await echo(socket, "before") == "before"
            restart = asyncio.create_task(
                asyncio.to_thread(bundle.exec, "rolling-restart", timeout=60)
            )
            codes: list[int | None] = []
            for socket in sockets:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(socket.recv(), 30)
                codes.append(closed.value.rcvd.code if closed.value.rcvd else None)
                # Like a browser told "going away": connect again; a live instance answers.
                async with connect(ws_url(bundle)) as again:
                    assert await echo(again, "after") == "after"
            await restart
            return codes

        with LoadLoop(bundle.port, clients=2) as load:
            codes = asyncio.run(scenario())
        result = load.result
        print(f"close codes: {Counter(codes)}; GETs ok={result.ok} failed={len(result.failures)}")
        assert codes == [1001] * 50
        assert result.failures == [], result.failures[:5]
        assert result.ok > 100, result


def slow_calls(bundle: Container, token: str) -> list[str]:
    return [line for line in bundle.logs().splitlines() if "/slow called" in line and token in line]


def request(bundle: Container, method: str, path: str, timeout: float = 100) -> tuple[int, float]:
    connection = http.client.HTTPConnection(LOOPBACK, bundle.port, timeout=timeout)
    started = time.monotonic()
    try:
        connection.request(method, path, body=b"x" if method == "POST" else None)
        response = connection.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    finally:
        connection.close()


def test_a_long_poll_past_nginx_s_old_60_seconds_answers_200() -> None:
    with running({"DIAGNOSTICS": "on"}) as bundle:
        status, seconds = request(bundle, "GET", "/slow?seconds=65")
        assert status == 200
        assert 65 <= seconds < 70


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_timeout_is_a_504_and_the_request_ran_once(method: str) -> None:
    with running({"DIAGNOSTICS": "on", "PROXY_READ_TIMEOUT": "3"}) as bundle:
        token = uuid.uuid4().hex
        status, seconds = request(bundle, method, f"/slow?seconds=6&token={token}")
        assert status == 504
        assert 3 <= seconds < 4.5, seconds
        # A replay on the other instance would have been logged at once; give it time anyway.
        time.sleep(1)
        assert len(slow_calls(bundle, token)) == 1, slow_calls(bundle, token)


def test_a_post_whose_instance_dies_is_not_replayed() -> None:
    with running({"DIAGNOSTICS": "on"}) as bundle:
        token = uuid.uuid4().hex
        connection = http.client.HTTPConnection(LOOPBACK, bundle.port, timeout=30)
        connection.request("POST", f"/slow?seconds=10&token={token}", body=b"x")
        line = wait_for(lambda: slow_calls(bundle, token), 5)[0]  # type: ignore[index]
        instance = re.search(r" (tornado-\d+) ", line).group(1)  # type: ignore[union-attr]
        bundle.exec("kill", "-9", str(bundle.pid_of(f"tornadoes:{instance}")))
        assert connection.getresponse().status == 502
        connection.close()
        time.sleep(1)
        assert len(slow_calls(bundle, token)) == 1


def test_server_sent_events_arrive_within_200_ms_of_being_sent(chat: Container) -> None:
    connection = http.client.HTTPConnection(LOOPBACK, chat.port, timeout=10)
    connection.request("GET", "/clock?count=10&interval=0.3")
    response = connection.getresponse()
    assert response.getheader("Content-Type") == "text/event-stream"
    lags = []
    while len(lags) < 10:
        line = response.fp.readline()
        assert line, lags
        if line.startswith(b"data: "):
            lags.append(time.time() - float(line[6:]))
    connection.close()
    print(f"SSE lag ms: {[round(lag * 1000, 1) for lag in lags]}")
    assert max(lags) < 0.2, lags


def test_the_chat_reaches_every_client_whichever_instance_serves_it(
    example_image: str, redis_port: int
) -> None:
    env = {"DIAGNOSTICS": "on", "REDIS_URL": f"redis://{LOOPBACK}:{redis_port}"}
    with running(env, image=example_image, host_network=True) as bundle:

        async def scenario() -> None:
            sockets: dict[str, ClientConnection] = {}
            while len(sockets) < 2:
                socket = await connect(ws_url(bundle, "/ws/chat"))
                if instance_of(socket) in sockets:
                    await socket.close()
                else:
                    sockets[instance_of(socket)] = socket
            start = await asyncio.to_thread(bundle.get, "/poll")
            after = re.search(rb'"last_id": "([^"]+)"', start.body).group(1).decode()  # type: ignore[union-attr]
            poll = asyncio.create_task(asyncio.to_thread(bundle.get, f"/poll?after={after}"))
            await asyncio.sleep(0.5)
            first, second = sockets.values()
            await first.send("hello from one instance")
            for socket in sockets.values():
                message = await asyncio.wait_for(socket.recv(), 5)
                assert "hello from one instance" in str(message)
            assert b"hello from one instance" in (await poll).body
            await asyncio.gather(*(s.close() for s in sockets.values()))

        asyncio.run(scenario())


def test_docker_stop_sends_1001_to_every_websocket(example_image: str) -> None:
    """docker stop (a Kubernetes rollout alike): each WebSocket hears 1001, going away, through
    nginx, as in a rolling restart, and the container still stops within the budget."""
    bundle = start(image=example_image)
    try:
        bundle.wait_serving()
        bundle.wait_every_instance_healthy()

        async def scenario() -> list[int | None]:
            sockets = [await connect(ws_url(bundle)) for _ in range(20)]
            for socket in sockets:
                assert await echo(socket, "before") == "before"
            stop = asyncio.create_task(asyncio.to_thread(docker, "stop", bundle.name))
            codes: list[int | None] = []
            for socket in sockets:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(socket.recv(), 10)
                codes.append(closed.value.rcvd.code if closed.value.rcvd else None)
            await stop
            return codes

        started = time.monotonic()
        codes = asyncio.run(scenario())
        assert codes == [1001] * 20, Counter(codes)
        assert time.monotonic() - started < 10
    finally:
        remove(bundle.name)


def test_the_chat_page_in_a_browser_gets_messages_by_every_transport_through_a_rolling_restart(
    example_image: str, redis_port: int, browser: Browser
) -> None:
    """examples/chat in headless chromium: three pages, one per transport (WebSocket,
    server-sent events, long polling), across two instances; what one page sends, every page
    shows, before and after a rolling restart of both instances."""
    env = {"REDIS_URL": f"redis://{LOOPBACK}:{redis_port}"}
    with running(env, image=example_image, host_network=True) as bundle:
        pages = {}
        for transport in ("websocket", "sse", "poll"):
            page = browser.new_page()
            page.goto(f"http://{LOOPBACK}:{bundle.port}/")
            page.select_option("#transport", transport)
            pages[transport] = page
        sender = pages["websocket"]

        def everyone_sees(text: str) -> bool:
            return all(page.get_by_text(text, exact=True).count() for page in pages.values())

        def send(text: str) -> None:
            sender.fill("#text", text)
            sender.click("#send button")

        def until_everyone_listens(label: str) -> None:
            # A transport that is still (re)connecting misses what is sent meanwhile: probe
            # until every page has one, then send what counts.
            for attempt in range(40):
                send(f"{label} probe {attempt}")
                try:
                    wait_for(lambda a=attempt: everyone_sees(f"{label} probe {a}"), 1, 0.1)
                    return
                except AssertionError:
                    continue
            for transport, page in pages.items():
                page.screenshot(path=str(SCREENSHOTS / f"chat-{transport}-failed.png"))
            raise AssertionError(f"the pages never all received a {label} probe")

        until_everyone_listens("before")
        send("hello before the restart")
        wait_for(lambda: everyone_sees("hello before the restart"), 10, 0.1, "every page")
        bundle.exec("rolling-restart", timeout=60)
        until_everyone_listens("after")
        pages["sse"].fill("#text", "hello after the restart")
        pages["sse"].click("#send button")
        wait_for(lambda: everyone_sees("hello after the restart"), 10, 0.1, "every page")
        sender.screenshot(path=str(SCREENSHOTS / "chat.png"))
        for page in pages.values():
            page.close()
