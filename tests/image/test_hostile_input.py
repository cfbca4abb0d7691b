"""Malformed and abusive requests through the published port: each gets a 4xx (or the protocol's
own 501/505) or a closed connection, never a 5xx from the bundle or a hang, and leaves every
process running with the same pid."""

from __future__ import annotations

import http.client
import re
import select
import socket
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import LOOPBACK, Container, free_ports, http_get, running, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("image")]

# nginx's client_header_timeout / client_body_timeout (tornado.conf), and a margin.
CLIENT_TIMEOUT = 10
SLOW_CLIENT_DEADLINE = CLIENT_TIMEOUT + 5
HOST = b"Host: localhost\r\n"


def request(line: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def get(*headers: bytes, path: bytes = b"/") -> bytes:
    return request(b"GET " + path + b" HTTP/1.1", b"Host: localhost", *headers)


def post(*headers: bytes, body: bytes = b"") -> bytes:
    return request(b"POST / HTTP/1.1", b"Host: localhost", *headers, body=body)


# name -> bytes sent at once, then the connection is read until the server closes it or answers.
MALFORMED: dict[str, bytes] = {
    # Broken request lines.
    "garbage": b"GARBAGE\r\n\r\n",
    "method only": b"GET\r\n\r\n",
    "no version": b"GET /\r\nHost: localhost\r\n\r\n\r\n",
    "extra token": request(b"GET / HTTP/1.1 extra", b"Host: localhost"),
    "lower-case version": request(b"GET / http/1.1", b"Host: localhost"),
    "tab separated": request(b"GET\t/\tHTTP/1.1", b"Host: localhost"),
    "bare CR": b"GET / HTTP/1.1\rHost: localhost\r\n\r\n",
    "NUL in request line": request(b"GET /\x00 HTTP/1.1", b"Host: localhost"),
    "empty request line": b"\r\n\r\n\r\n\r\n",
    # Methods.
    "invalid method characters": request(b"G@T / HTTP/1.1", b"Host: localhost"),
    "lower-case method": request(b"get / HTTP/1.1", b"Host: localhost"),
    "unknown method": request(b"FROB / HTTP/1.1", b"Host: localhost"),
    "TRACE": request(b"TRACE / HTTP/1.1", b"Host: localhost"),
    "CONNECT": request(b"CONNECT localhost:80 HTTP/1.1", b"Host: localhost"),
    "huge method": request(b"A" * 5000 + b" / HTTP/1.1", b"Host: localhost"),
    "DELETE on /": request(b"DELETE / HTTP/1.1", b"Host: localhost"),
    # Versions and other protocols.
    "HTTP/0.9": b"GET /\r\n",
    "HTTP/9.9": request(b"GET / HTTP/9.9", b"Host: localhost"),
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "TLS client hello": bytes.fromhex("16030100c4010000c00303") + b"\x00" * 64,
    "HTTP/1.1 without Host": request(b"GET / HTTP/1.1"),
    # Headers: size and count.
    "huge header value": get(b"X-Big: " + b"a" * 16_000),
    "huge header name": get(b"X-" + b"a" * 16_000 + b": 1"),
    "huge cookie": get(b"Cookie: " + b"c=" * 10_000),
    "too many headers": get(*(b"X-H%d: %s" % (i, b"v" * 30) for i in range(2000))),
    "overlong path": get(path=b"/" + b"a" * 20_000),
    "overlong query": get(path=b"/?" + b"q=1&" * 5_000),
    # Header syntax and injection.
    "header with an empty name": get(b": value"),
    "control character in header name": get(b"Bad\x01Name: v"),
    "obsolete line folding": get(b"X-Fold: a", b" folded"),
    "NUL in header value": get(b"X-Nul: a\x00b"),
    "space before colon": get(b"Host : other"),
    "CR inside value": get(b"X-Inject: a\rSet-Cookie: x=1"),
    # Host values.
    "empty Host": request(b"GET / HTTP/1.1", b"Host: "),
    "two Hosts": request(b"GET / HTTP/1.1", b"Host: a", b"Host: b"),
    "Host with spaces": request(b"GET / HTTP/1.1", b"Host: a b"),
    "Host with slash traversal": request(b"GET / HTTP/1.1", b"Host: ../../etc"),
    "Host with bad bracket": request(b"GET / HTTP/1.1", b"Host: [::1"),
    "Host 5 KB": request(b"GET / HTTP/1.1", b"Host: " + b"h" * 5000),
    "Host with NUL": request(b"GET / HTTP/1.1", b"Host: a\x00b"),
    # Paths.
    "dot-dot traversal": get(path=b"/../../etc/passwd"),
    "encoded traversal": get(path=b"/%2e%2e/%2e%2e/etc/passwd"),
    "non-UTF-8 path": get(path=b"/\xff\xfe\xfd"),
    "overlong UTF-8 slash": get(path=b"/%c0%af%c0%afetc/passwd"),
    "invalid percent encoding": get(path=b"/%zz%"),
    "asterisk target on GET": request(b"GET * HTTP/1.1", b"Host: localhost"),
    # Bodies and framing (request smuggling shapes).
    "body over the limit": post(b"Content-Length: 2000000", body=b"x" * 65536),
    "negative Content-Length": post(b"Content-Length: -1"),
    "non-numeric Content-Length": post(b"Content-Length: abc"),
    "Content-Length with plus": post(b"Content-Length: +5", body=b"hello"),
    "two different Content-Lengths": post(
        b"Content-Length: 5", b"Content-Length: 6", body=b"x" * 6
    ),
    "Content-Length list": post(b"Content-Length: 5, 5", body=b"hello"),
    "huge Content-Length": post(b"Content-Length: 99999999999999999999999"),
    "CL and TE together": post(
        b"Content-Length: 4",
        b"Transfer-Encoding: chunked",
        body=b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n",
    ),
    "TE gzip": post(b"Transfer-Encoding: gzip", body=b"0\r\n\r\n"),
    "TE chunked twice": post(b"Transfer-Encoding: chunked, chunked", body=b"0\r\n\r\n"),
    "TE xchunked": post(b"Transfer-Encoding: xchunked", body=b"0\r\n\r\n"),
    "TE with space before colon": post(b"Transfer-Encoding : chunked", body=b"0\r\n\r\n"),
    "TE on HTTP/1.0": request(
        b"POST / HTTP/1.0", b"Host: localhost", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"
    ),
    "invalid chunk size": post(b"Transfer-Encoding: chunked", body=b"zz\r\nhello\r\n0\r\n\r\n"),
    "overflowing chunk size": post(
        b"Transfer-Encoding: chunked", body=b"ffffffffffffffffffffff\r\nx\r\n0\r\n\r\n"
    ),
    "chunk longer than declared": post(
        b"Transfer-Encoding: chunked", body=b"2\r\nhello\r\n0\r\n\r\n"
    ),
    "chunked body over the limit": post(
        b"Transfer-Encoding: chunked", body=b"200000\r\n" + b"x" * 65536
    ),
    "Expect 100-continue over the limit": post(
        b"Content-Length: 50000000", b"Expect: 100-continue"
    ),
}

# name -> (first bytes, then silence): nginx must close these within its client timeouts.
SLOW: dict[str, bytes] = {
    "slow headers (slowloris)": b"GET / HTTP/1.1\r\nHost: localhost\r\nX-a: b\r\n",
    "slow request line": b"GET /",
    "slow body": post(b"Content-Length: 1000", body=b"x" * 10),
    "slow chunked body": post(b"Transfer-Encoding: chunked", body=b"100\r\nxx"),
}

# 501 (unknown transfer coding) and 505 (unknown HTTP version) are the protocol's own answers.
ALLOWED_5XX = {501, 505}


def exchange(port: int, payload: bytes, timeout: float) -> tuple[bytes, float]:
    """Sends payload, reads until the server closes or `timeout`; returns (reply, seconds)."""
    started = time.monotonic()
    reply = b""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as connection:
        try:
            connection.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            return reply, time.monotonic() - started
        try:
            while chunk := connection.recv(65536):
                reply += chunk
                # One complete answer is enough; some keep the connection open after a 4xx.
                if b"\r\n\r\n" in reply and _complete(reply):
                    break
        except ConnectionResetError:
            pass
    return reply, time.monotonic() - started


def _complete(reply: bytes) -> bool:
    head, _, body = reply.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return length is None or len(body) >= int(length.group(1))


def verdict(reply: bytes) -> str:
    """'closed', 'HTTP 4xx' etc., or a string starting with 'BAD' for what must never happen."""
    if not reply:
        return "closed"
    status = re.match(rb"HTTP/1\.[01] (\d{3}) ", reply)
    if status is None:
        return f"BAD: not an HTTP/1.x response: {reply[:60]!r}"
    code = int(status.group(1))
    if 400 <= code < 500 or code in ALLOWED_5XX:
        return f"HTTP {code}"
    return f"BAD: HTTP {code}"


def leaks_version(reply: bytes) -> bool:
    return bool(re.search(rb"nginx/\d|TornadoServer|Tornado/\d|Python/\d", reply))


@pytest.fixture(scope="module")
def bundle() -> Iterator[Container]:
    with running() as container:
        yield container


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_request_gets_4xx_or_closed(bundle: Container, name: str) -> None:
    reply, seconds = exchange(bundle.port, MALFORMED[name], timeout=SLOW_CLIENT_DEADLINE)
    result = verdict(reply)
    assert not result.startswith("BAD"), f"{name}: {result}"
    assert seconds < SLOW_CLIENT_DEADLINE, f"{name}: no answer for {seconds:.1f}s"
    assert not leaks_version(reply), f"{name}: {reply[:300]!r}"


def slow_clients(bundle: Container) -> dict[str, tuple[bytes, float]]:
    with ThreadPoolExecutor(len(SLOW)) as pool:
        futures = {
            name: pool.submit(exchange, bundle.port, payload, SLOW_CLIENT_DEADLINE + 5)
            for name, payload in SLOW.items()
        }
        return {name: future.result() for name, future in futures.items()}


def test_slow_clients_are_cut_off_within_the_client_timeouts(bundle: Container) -> None:
    for name, (reply, seconds) in slow_clients(bundle).items():
        assert not verdict(reply).startswith("BAD"), f"{name}: {verdict(reply)}"
        assert CLIENT_TIMEOUT - 1 <= seconds < SLOW_CLIENT_DEADLINE, (
            f"{name}: closed after {seconds:.1f}s"
        )


def test_after_all_of_the_abuse_every_process_has_its_pid_and_get_is_200() -> None:
    # Its own container and its own abuse: the verdict does not depend on which tests ran first.
    with running() as bundle:
        status = bundle.wait_running("nginx", *bundle.instances)
        pids_before = {name: pid for name, (_, pid) in status.items()}
        for payload in MALFORMED.values():
            exchange(bundle.port, payload, timeout=SLOW_CLIENT_DEADLINE)
        slow_clients(bundle)
        status = bundle.supervisor_status()
        assert {name: pid for name, (_, pid) in status.items()} == pids_before
        assert all(state == "RUNNING" for state, _ in status.values())
        response = bundle.get("/")
        assert (response.status, response.body) == (200, b"Hello, Tornado\n")
        wait_for(lambda: bundle.inspect()["State"]["Health"]["Status"] == "healthy", 15, 0.5)
        assert "[crit]" not in bundle.logs() and "[alert]" not in bundle.logs()


@pytest.mark.parametrize(
    "payload",
    [
        request(b"GET / HTTP/1.1", b"Host: [::1]"),
        request(b"GET / HTTP/1.1", b"Host: localhost:8080"),
        request(b"GET / HTTP/1.1", b"Host: Example.COM"),
        request(b"GET / HTTP/1.1", b"Host: 10.0.0.1"),
        request(b"GET / HTTP/1.0"),
    ],
)
def test_ordinary_host_values_still_work(bundle: Container, payload: bytes) -> None:
    reply, _ = exchange(bundle.port, payload, timeout=5)
    assert reply.startswith(b"HTTP/1.1 200 OK"), reply[:100]


def test_error_pages_carry_no_version(bundle: Container) -> None:
    for payload in (
        get(path=b"/nope"),
        request(b"GET / HTTP/1.1"),
        get(b"X-Big: " + b"a" * 16_000),
    ):
        reply, _ = exchange(bundle.port, payload, timeout=5)
        assert reply.startswith(b"HTTP/1.1 4"), reply[:100]
        assert not leaks_version(reply), reply[:300]


def instances_resident_kib(bundle: Container) -> int:
    """The Tornado instances' resident memory together (VmRSS), in KiB."""
    total = 0
    for name in bundle.instances:
        status = bundle.exec("cat", f"/proc/{bundle.pid_of(name)}/status").stdout
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        assert match, status
        total += int(match.group(1))
    return total


def send_methods(port: int, methods: Iterator[str]) -> Counter[int]:
    """One request per method on a kept-alive connection; the statuses counted."""
    statuses: Counter[int] = Counter()
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        for method in methods:
            connection.request(method, "/")
            response = connection.getresponse()
            response.read()
            statuses[response.status] += 1
            if response.will_close:
                connection.close()
    finally:
        connection.close()
    return statuses


def letters(number: int) -> str:
    """A number in capital letters only (nginx takes A-Z, "_" and "-" in a method, no digit)."""
    return "".join(chr(ord("A") + int(digit)) for digit in f"{number:07d}")


def distinct_methods(first: int, count: int) -> Iterator[str]:
    # 1 KB each, as a client inventing a method per request would send them.
    return ("M" + letters(n) + "X" * 1000 for n in range(first, first + count))


def test_ten_thousand_invented_methods_leave_memory_flat() -> None:
    """nginx answers 501 to a method outside its list; an instance reached directly (here, on
    the host network) answers 405 and keeps one metrics series for all of them ("other")."""
    metrics_port = free_ports(1)
    with running({"METRICS_PORT": str(metrics_port)}, host_network=True) as bundle:
        assert send_methods(bundle.port, distinct_methods(0, 200)) == Counter({501: 200})
        instance = bundle.instance_ports[0]
        # Warm-up: the first "other" series, and the allocator's own growth.
        send_methods(instance, distinct_methods(0, 1000))
        before = instances_resident_kib(bundle)
        statuses = send_methods(instance, distinct_methods(1000, 10_000))
        grown = instances_resident_kib(bundle) - before
        print(f"10,000 invented methods: the instances grew by {grown} KiB")
        assert statuses == Counter({405: 10_000})
        assert grown < 2048, f"the instances grew by {grown} KiB"
        metrics = http_get(metrics_port, "/metrics").body.decode()
        assert 'method="other"' in metrics
        assert "MAAA" not in metrics


def pid_1(bundle: Container) -> tuple[int, int]:
    """supervisord's (PID 1's) threads and resident KiB."""
    status = bundle.exec("cat", "/proc/1/status").stdout
    fields = dict(re.findall(r"^(Threads|VmRSS):\s+(\d+)", status, re.M))
    return int(fields["Threads"]), int(fields["VmRSS"])


def test_two_thousand_idle_metrics_clients_add_no_thread_and_metrics_still_answer() -> None:
    metrics_port = free_ports(1)
    env = {"METRICS_PORT": str(metrics_port), "METRICS_ADDRESS": LOOPBACK}
    with running(env, host_network=True) as bundle:
        assert http_get(metrics_port, "/metrics").status == 200
        threads, resident = pid_1(bundle)
        grown = []
        # Four crowds in turn: memory rises with the first ones (Python keeps what it once
        # allocated) and levels off; it does not grow with every client ever seen.
        for _ in range(4):
            idle = [socket.create_connection((LOOPBACK, metrics_port)) for _ in range(2000)]
            try:
                answer = http_get(metrics_port, "/metrics", timeout=5)
                assert answer.status == 200 and b"nginx_up 1.0" in answer.body
                now_threads, now_resident = pid_1(bundle)
                # supervisord's own, the log relay, the watchdog and its probe per instance,
                # and the metrics endpoint: a fixed set, whatever the number of clients.
                assert threads <= now_threads <= 4 + len(bundle.instances), now_threads
                grown.append(now_resident - resident)
            finally:
                for connection in idle:
                    connection.close()
        print(f"PID 1 grew by {grown} KiB with 2,000 idle metrics clients, four times")
        assert max(grown) < 16 * 1024, grown
        # It listens on METRICS_ADDRESS only.
        listening = bundle.exec("cat", "/proc/net/tcp").stdout
        assert f"0100007F:{metrics_port:04X}" in listening
        assert f"00000000:{metrics_port:04X}" not in listening


OTHER_CLIENT = "127.0.0.2"


def get_from(source: str, port: int, path: str = "/") -> tuple[int, bytes]:
    """A GET from another loopback address (its own client address for nginx)."""
    with socket.create_connection((LOOPBACK, port), timeout=5, source_address=(source, 0)) as raw:
        raw.sendall(
            request(b"GET " + path.encode() + b" HTTP/1.1", HOST[:-2], b"Connection: close")
        )
        reply = b""
        while chunk := raw.recv(65536):
            reply += chunk
    status = re.match(rb"HTTP/1\.1 (\d{3})", reply)
    assert status, reply[:100]
    return int(status.group(1)), reply.partition(b"\r\n\r\n")[2]


def test_300_trickling_bodies_from_one_address_deny_no_other_address_nor_the_health_check() -> None:
    with running({"MAX_REQUESTS_PER_CLIENT": "256"}, host_network=True) as bundle:
        trickles = []
        try:
            for _ in range(300):
                raw = socket.create_connection(
                    (LOOPBACK, bundle.port), timeout=5, source_address=(OTHER_CLIENT, 0)
                )
                # A body of 1000 bytes of which one arrives: the request holds its slot.
                raw.sendall(post(b"Content-Length: 1000", body=b"x"))
                trickles.append(raw)
            # Those past the limit were answered at once; the rest hold their slots (for less
            # than nginx's 10 s client_body_timeout: this test is done before).
            refused, waiting = 0, list(trickles)
            while answered := select.select(waiting, [], [], 0.5)[0]:
                refused += sum(raw.recv(200).startswith(b"HTTP/1.1 503") for raw in answered)
                waiting = [raw for raw in waiting if raw not in answered]
            assert refused == 300 - 256, refused
            status, body = get_from(OTHER_CLIENT, bundle.port)
            assert (status, body) == (503, b"busy: too many requests at once (from this client "
                                           b"or in all); retry shortly\n")  # fmt: skip
            assert get_from(OTHER_CLIENT, bundle.port, "/healthz")[0] == 200
            assert [get_from(LOOPBACK, bundle.port)[0] for _ in range(100)] == [200] * 100
        finally:
            for raw in trickles:
                raw.close()


def test_rate_limit_answers_429_to_one_address_only() -> None:
    with running({"RATE_LIMIT": "5r/s"}, host_network=True) as bundle:
        statuses = Counter(get_from(OTHER_CLIENT, bundle.port)[0] for _ in range(40))
        assert statuses[429] > 0 and set(statuses) == {200, 429}, statuses
        status, body = get_from(OTHER_CLIENT, bundle.port)
        assert status == 429 and b"RATE_LIMIT" in body
        assert get_from(OTHER_CLIENT, bundle.port, "/healthz")[0] == 200
        assert get_from(LOOPBACK, bundle.port)[0] == 200
