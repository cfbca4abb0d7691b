"""An instance that hangs, one that grows, and a crowd that arrives: the watchdog, the
blocked-loop warning, INSTANCE_MAX_MEMORY, and the connection limits sized from the container's
open-file limit. Crowds run on the host network (no docker-proxy), to 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import pytest

from harness import LOOPBACK, Container, LoadLoop, http_get, running, wait_for, wrk

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("image")]

WATCHDOG_TIMEOUT = 5
# How much longer than WATCHDOG_TIMEOUT a request caught on a hung instance may take: the
# watchdog's 1 s period, its 0.5 s stack dump, nginx's retry (README, issue's bound: 5 s).
CAUGHT_MARGIN = 5


def health(bundle: Container) -> str:
    return bundle.inspect()["State"]["Health"]["Status"]


def test_a_hung_instance_is_killed_and_replaced_with_no_failed_get() -> None:
    env = {"WATCHDOG_TIMEOUT": str(WATCHDOG_TIMEOUT)}
    with running(env) as bundle:
        name = bundle.instances[1]
        pid = bundle.pid_of(name)
        with LoadLoop(bundle.port, clients=4, timeout=WATCHDOG_TIMEOUT + CAUGHT_MARGIN) as load:
            load.run_for(1)
            bundle.exec("kill", "-STOP", str(pid))
            stopped_at = time.monotonic()
            wait_for(lambda: bundle.pid_of(name) != pid, WATCHDOG_TIMEOUT + CAUGHT_MARGIN, 0.1)
            replaced_after = time.monotonic() - stopped_at
            bundle.wait_every_instance_healthy(timeout=CAUGHT_MARGIN)
            load.run_for(2)
        result = load.result
        print(f"replaced after {replaced_after:.1f}s; {result}")
        assert result.failures == [], result.failures[:5]
        assert result.ok > 200, result
        assert result.slowest <= WATCHDOG_TIMEOUT + CAUGHT_MARGIN, result.slowest
        assert WATCHDOG_TIMEOUT <= replaced_after <= WATCHDOG_TIMEOUT + CAUGHT_MARGIN
        line = f"watchdog: {name} (pid {pid}) has not answered /healthz for"
        assert line in bundle.logs()


def test_a_blocking_handler_is_named_by_file_and_line_then_killed_with_its_stack() -> None:
    env = {"DIAGNOSTICS": "on", "WATCHDOG_TIMEOUT": "3", "BLOCKED_LOOP_WARNING": "0.5"}
    with running(env) as bundle:
        # A handler calling time.sleep: the warning comes from the blocked instance itself.
        assert bundle.get("/block?seconds=1").status == 200
        wait_for(lambda: "event loop blocked for" in bundle.logs(), 5)
        logs = bundle.logs()
        block = logs[logs.index("event loop blocked for") :]
        assert re.search(r'File ".*/tornado_bundle/diagnostics\.py", line \d+, in get', block)
        assert "time.sleep(seconds)" in block, block[:2000]
        # Blocked for longer than WATCHDOG_TIMEOUT: killed, and its stack is in the log.
        http_get(bundle.port, "/block?seconds=20", timeout=15)
        wait_for(lambda: "its stacks follow" in bundle.logs(), 10)
        # faulthandler's format (no comma before "in"), written by the instance on SIGUSR1.
        dump = r'File ".*/tornado_bundle/diagnostics\.py", line \d+ in get'
        assert wait_for(lambda: re.search(dump, bundle.logs()), 5)


def test_unhealthy_while_an_instance_is_hung_and_healthy_again_after() -> None:
    # Restarts off: the hung instance stays hung; nginx still reaches the other one.
    with running({"WATCHDOG_TIMEOUT": "0"}) as bundle:
        wait_for(lambda: health(bundle) == "healthy", 15, 0.2, "healthy")
        pid = bundle.pid_of(bundle.instances[0])
        bundle.exec("kill", "-STOP", str(pid))
        try:
            # 10 s without an answer, then three failed checks 5 s apart.
            wait_for(lambda: health(bundle) == "unhealthy", 35, 0.5, "unhealthy")
            report = bundle.exec("cat", "/tmp/tornado-bundle/unresponsive").stdout
            assert report.startswith(f"{bundle.instances[0]} "), report
        finally:
            bundle.exec("kill", "-CONT", str(pid))
        wait_for(lambda: health(bundle) == "healthy", 15, 0.5, "healthy again")


def test_an_instance_above_instance_max_memory_is_restarted_gracefully() -> None:
    env = {"DIAGNOSTICS": "on", "INSTANCE_MAX_MEMORY": "64m"}
    with running(env) as bundle:
        before = {name: bundle.pid_of(name) for name in bundle.instances}
        with LoadLoop(bundle.port, clients=4) as load:
            load.run_for(1)
            assert bundle.get("/grow?mb=80").status == 200
            wait_for(lambda: any(bundle.pid_of(n) != before[n] for n in bundle.instances), 10, 0.1)
            bundle.wait_every_instance_healthy()
            load.run_for(1)
        result = load.result
        print(result)
        assert result.failures == [], result.failures[:5]
        after = {name: bundle.pid_of(name) for name in bundle.instances}
        # Exactly the one that grew was replaced, after its drain.
        assert sum(after[n] != before[n] for n in bundle.instances) == 1
        assert "above INSTANCE_MAX_MEMORY=64m; restarting it gracefully" in bundle.logs()
        assert "exited: tornado-" in bundle.logs() and "(exit status 0; expected)" in bundle.logs()


# --- Crowds ----------------------------------------------------------------------------------


def test_3000_active_keep_alive_clients_get_only_200s() -> None:
    with running(host_network=True) as bundle:
        counts = wrk(bundle.port, 3000, 8, threads=2, timeout=10)
        print(counts)
        assert counts["socket_errors"] == 0, counts
        assert counts["non_2xx"] == 0, counts
        assert counts["requests"] > 10_000, counts
        assert "worker_connections are not enough" not in bundle.logs()
        assert "upstream timed out" not in bundle.logs()


def memory_mib(bundle: Container) -> float:
    """The container's memory in use (its cgroup), MiB."""
    for path in ("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes"):
        result = bundle.exec("cat", path, check=False)
        if result.returncode == 0:
            return int(result.stdout) / 2**20
    raise AssertionError("no cgroup memory accounting in the container")


async def hold_idle(port: int, count: int, during: float) -> tuple[int, int]:
    """Opens `count` keep-alive connections, one GET each, holds them idle for `during` s,
    then one more GET on each: (first round 200s, second round 200s)."""
    request = f"GET / HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode()

    async def one(stream: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> bool:
        reader, writer = stream
        writer.write(request)
        status = await reader.readline()
        headers = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", headers, re.I).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
        return b" 200 " in status

    async def in_batches(streams: list, batch: int = 200) -> int:
        # A few hundred requests at a time: the crowd is idle, not 10,000 requests at once.
        answered = 0
        for start in range(0, len(streams), batch):
            answered += sum(await asyncio.gather(*(one(s) for s in streams[start : start + batch])))
        return answered

    streams = []
    for start in range(0, count, 500):
        streams += await asyncio.gather(
            *(asyncio.open_connection(LOOPBACK, port) for _ in range(min(500, count - start)))
        )
    first = await in_batches(streams)
    await asyncio.sleep(during)
    second = await in_batches(streams)
    for _, writer in streams:
        writer.close()
    return first, second


def test_10000_idle_connections_while_32_active_clients_are_served() -> None:
    with running(host_network=True) as bundle:
        before = memory_mib(bundle)
        crowd = 10_000
        result: dict[str, object] = {}

        def active_load() -> None:
            time.sleep(3)  # once the crowd is connected
            result["wrk"] = wrk(bundle.port, 32, 5, threads=2, timeout=10)
            result["memory"] = memory_mib(bundle)

        thread = threading.Thread(target=active_load)
        thread.start()
        first, second = asyncio.run(hold_idle(bundle.port, crowd, during=9))
        thread.join()
        counts = result["wrk"]
        per_thousand = (result["memory"] - before) / (crowd / 1000)  # type: ignore[operator]
        print(
            f"idle: {first} then {second} answered; active: {counts}; "
            f"memory {before:.0f} -> {result['memory']:.0f} MiB, {per_thousand:.1f} MiB/1,000"
        )
        assert (first, second) == (crowd, crowd)
        assert counts["socket_errors"] == 0 and counts["non_2xx"] == 0, counts  # type: ignore[index]
        assert counts["requests"] > 1000, counts  # type: ignore[index]
        assert "worker_connections are not enough" not in bundle.logs()


async def statuses(port: int, path: str, clients: int) -> list[tuple[int, float]]:
    """`clients` GETs at once, each on its own connection: (status or 0 for a closed
    connection, seconds)."""

    async def one() -> tuple[int, float]:
        started = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            status = await asyncio.wait_for(reader.readline(), 30)
            writer.close()
            code = int(status.split()[1]) if status else 0
        except (OSError, IndexError, ValueError):
            code = 0
        return code, time.monotonic() - started

    return await asyncio.gather(*(one() for _ in range(clients)))


def test_beyond_capacity_a_fast_503_and_service_returns_when_the_crowd_leaves() -> None:
    # 2,048 open files: 1,024 connections, 384 requests at once (3/8).
    options = ("--ulimit", "nofile=2048:2048")
    # The limit for all together alone: every request comes from 127.0.0.1.
    env = {"DIAGNOSTICS": "on", "MAX_REQUESTS_PER_CLIENT": "0"}
    with running(env, options=options, host_network=True) as bundle:
        pids = {name: bundle.pid_of(name) for name in bundle.instances}
        results = asyncio.run(statuses(bundle.port, "/slow?seconds=3", 500))
        by_status: dict[int, list[float]] = {}
        for code, seconds in results:
            by_status.setdefault(code, []).append(seconds)
        print({code: (len(times), round(max(times), 2)) for code, times in by_status.items()})
        assert set(by_status) == {200, 503}, by_status.keys()
        assert len(by_status[200]) == 384
        assert max(by_status[503]) < 1, "a refused request must not wait"
        # The crowd has left: served at once, nothing restarted.
        assert bundle.get("/").status == 200
        assert {name: bundle.pid_of(name) for name in bundle.instances} == pids
