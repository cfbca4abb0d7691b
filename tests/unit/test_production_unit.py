"""Unit tests of the production features' own code: certificate checks, the rendered TLS and
request-ID configuration, the log relay, stub_status parsing, and request IDs in Tornado's log
records. The real thing (nginx, curl, testssl.sh, Prometheus) is in tests/test_production.py."""

from __future__ import annotations

import datetime
import json
import logging
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import tornado.testing
import tornado.web
import trustme
from cryptography.hazmat.primitives import serialization
from repo import ROOT, template

from tornado_bundle import instance_logs, logs, metrics, nginx, runner, settings
from tornado_bundle.certificates import CertificateError
from tornado_bundle.certificates import check as check_certificate
from tornado_bundle.limits import Capacity
from tornado_bundle.names import NGINX_STATUS_SOCKET
from tornado_bundle.settings import parse as parse_settings

NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, trustme.CA]:
    """(cert, key, another key) from a test CA, valid for 90 days."""
    folder = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", not_after=NOW + datetime.timedelta(days=90))
    other = ca.issue_cert("localhost")
    leaf.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(folder / "key.pem"))
    other.private_key_pem.write_to_path(str(folder / "other.pem"))
    return folder / "cert.pem", folder / "key.pem", folder / "other.pem", ca


def test_a_matching_unexpired_pair_passes(pair: tuple[Path, Path, Path, trustme.CA]) -> None:
    cert, key, _, _ = pair
    check_certificate(str(cert), str(key))


def problem(cert: Path | str, key: Path | str, now: datetime.datetime | None = None) -> str:
    with pytest.raises(CertificateError) as error:
        check_certificate(str(cert), str(key), now)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_each_bad_certificate_or_key_is_one_line(
    pair: tuple[Path, Path, Path, trustme.CA], tmp_path: Path
) -> None:
    cert, key, other, ca = pair
    assert problem(tmp_path / "none.pem", key).endswith("': no such file (mount it, e.g. -v "
                                                        "./certs:/run/secrets:ro)")  # fmt: skip
    assert problem(tmp_path, key).endswith("is a directory, not a file")
    assert "does not match the certificate in" in problem(cert, other)
    later = NOW + datetime.timedelta(days=91)
    assert "the certificate expired on " in problem(cert, key, later)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    assert problem(garbage, key).endswith("not a PEM certificate")
    assert "not an unencrypted PEM private key" in problem(cert, garbage)
    # A password-protected key: nginx would stop and ask for the password on a terminal.
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    assert "not an unencrypted PEM private key" in problem(cert, encrypted)
    assert ca  # the CA that issued both


def tls_settings(pair: tuple[Path, Path, Path, trustme.CA], **env: str) -> settings.Settings:
    cert, key, _, _ = pair
    return parse_settings({"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key), **env})


def rendered(bundle: settings.Settings) -> dict[str, str]:
    return nginx.render(template, bundle, Capacity(20000, 4096))


def render_tls(bundle: settings.Settings) -> str:
    return rendered(bundle).get("tls.conf", "")


def test_tls_renders_http2_modern_protocols_and_the_files(
    pair: tuple[Path, Path, Path, trustme.CA],
) -> None:
    cert, key, _, _ = pair
    rendered = render_tls(tls_settings(pair, TLS_PORT="8443"))
    assert "listen 8443 ssl default_server backlog=4096;" in rendered
    assert "http2 on;" in rendered and "ssl_protocols TLSv1.2 TLSv1.3;" in rendered
    assert f"ssl_certificate {cert};" in rendered and f"ssl_certificate_key {key};" in rendered
    assert "return 308" not in rendered and "@" not in rendered
    assert render_tls(parse_settings({})) == ""
    assert "include /tmp/nginx/tls.conf;" not in rendered_site({})


def test_tls_redirect_keeps_the_port_unless_it_is_443(
    pair: tuple[Path, Path, Path, trustme.CA],
) -> None:
    site = rendered(tls_settings(pair, TLS_REDIRECT="on"))["tornado.conf"]
    assert "return 308 https://$host$request_uri;" in site
    site = rendered(tls_settings(pair, TLS_REDIRECT="on", TLS_PORT="8443"))["tornado.conf"]
    assert "return 308 https://$host:8443$request_uri;" in site
    # After the checks that refuse HTTP/0.9 and a Host that is not a host name.
    assert site.index("return 444;") < site.index("return 400;") < site.index("return 308")


def test_hsts_header_only_when_on(pair: tuple[Path, Path, Path, trustme.CA]) -> None:
    headers = rendered(tls_settings(pair))["response-headers.conf"]
    assert "add_header Strict-Transport-Security" not in headers
    headers = rendered(tls_settings(pair, TLS_HSTS="on"))["response-headers.conf"]
    assert "add_header Strict-Transport-Security $hsts always;" in headers
    assert "add_header X-Request-ID $bundle_request_id always;" in headers


def rendered_site(env: dict[str, str]) -> str:
    """tornado.conf with the files it includes from /tmp/nginx after it, as nginx -T shows it."""
    return "".join(rendered(parse_settings(env)).values())


def test_request_ids_are_taken_only_from_trusted_proxies() -> None:
    assert "geo $realip_remote_addr $from_trusted_proxy {\n    default 0;\n}" in rendered_site({})
    site = rendered_site({"REAL_IP_FROM": "10.0.0.0/8,192.168.1.10"})
    assert "    default 0;\n    10.0.0.0/8 1;\n    192.168.1.10/32 1;\n}" in site
    assert "proxy_set_header X-Request-ID $bundle_request_id;" in site


def test_access_log_format_and_off() -> None:
    assert "access_log /dev/stdout bundle buffer=32k flush=1s;" in rendered_site({})
    assert "access_log /dev/stdout bundle_json " in rendered_site({"LOG_FORMAT": "json"})
    assert "access_log off;" in rendered_site({"ACCESS_LOG": "off"})


def test_stub_status_only_on_a_socket_and_only_with_metrics() -> None:
    site = rendered_site({})
    assert f"listen unix:{NGINX_STATUS_SOCKET};" in site and "stub_status;" in site
    assert "stub_status" not in rendered_site({"METRICS_PORT": "0"})


def test_the_json_access_format_is_valid_json() -> None:
    nginx_conf = (ROOT / "container" / "nginx" / "nginx.conf").read_text()
    start = nginx_conf.index("log_format bundle_json escape=json")
    parts = nginx_conf[start : nginx_conf.index(";", start)].split("'")[1::2]
    sample = "".join(parts)
    for variable in ("$status", "$body_bytes_sent", "$request_time"):
        sample = sample.replace(variable, "1")
    record = json.loads(sample.replace("$", "x"))
    assert {"time", "level", "source", "message", "request_id", "client", "upstream"} <= set(record)


def test_relay_passes_text_through_and_wraps_lines_in_json() -> None:
    written: list[tuple[int, bytes]] = []

    def write(fd: int, data: memoryview) -> int:
        written.append((fd, bytes(data)))
        return len(data)

    logs.Relay(json_lines=False, write=write, background=False).output("nginx", 1, b"partial")
    assert written == [(1, b"partial")]
    written.clear()
    relay = logs.Relay(json_lines=True, write=write, background=False)
    relay.output("nginx", 2, b'{"source": "nginx"}\n2026/12/01 10:00:00 [error] 7#7: bro')
    relay.output("nginx", 2, b'ken "quote"\n')
    lines = [json.loads(line) for _, data in written for line in data.splitlines()]
    assert lines[0] == {"source": "nginx"}
    assert lines[1]["source"] == "nginx" and lines[1]["level"] == "error"
    assert lines[1]["message"] == '2026/12/01 10:00:00 [error] 7#7: broken "quote"'
    written.clear()
    relay.output("tornado-8000", 1, b"x" * (logs.MAX_LINE + 10))
    assert len(written) == 1 and json.loads(written[0][1])["message"] == "x" * (logs.MAX_LINE + 10)


def test_an_app_s_own_json_is_wrapped_and_cannot_claim_another_source() -> None:
    forged = b'{"time": "x", "level": "critical", "source": "supervisord", "message": "gone"}'
    for line in (forged, b'{"source": "tornado-8001"}', b"[1, 2]", b"{not json}"):
        record = json.loads(logs.wrap("tornado-8000", line))
        assert (record["source"], record["message"]) == ("tornado-8000", line.decode())
    own = b'{"level": "info", "message": "listening", "source": "tornado-8000"}'
    assert logs.wrap("tornado-8000", own) == own + b"\n"


def test_an_unread_output_never_blocks_the_relay_and_the_drops_are_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logs, "MAX_QUEUED", 10_000)
    reading = threading.Event()
    written: list[bytes] = []

    def write(fd: int, data: memoryview) -> int:
        reading.wait()  # nobody reads the container's output until the test says so
        written.append(bytes(data))
        return len(data)

    relay = logs.Relay(json_lines=False, write=write)
    started = time.monotonic()
    for number in range(5_000):
        relay.output("tornado-8000", 1, b"line %d\n" % number)
    assert time.monotonic() - started < 1, "output() waited for the writer"
    assert relay._queued <= 10_000 and relay.dropped > 3_500
    reading.set()
    relay.flush(timeout=5)
    wait = time.monotonic() + 5
    while not written[-1:] or written[-1] != b"line 4999\n":
        assert time.monotonic() < wait, written[-3:]
        time.sleep(0.01)
    notes = [line for line in written if b"dropped while the output was not read" in line]
    # One note per gap, each saying how many lines went missing there.
    assert notes and all(note.startswith(b"log-relay: ") for note in notes)
    assert sum(int(note.split()[1]) for note in notes) == relay.dropped


def test_supervisor_levels_become_python_s() -> None:
    record = json.loads(logs.supervisor_json({"levelname": "CRIT", "message": "gone\n"}))
    assert (record["level"], record["message"], record["source"]) == (
        "critical",
        "gone",
        "supervisord",
    )


def test_stub_status_is_parsed() -> None:
    text = (
        "Active connections: 3 \nserver accepts handled requests\n 10 10 42 \n"
        "Reading: 0 Writing: 1 Waiting: 2 \n"
    )
    assert metrics.parse_stub_status(text) == {
        "active": 3, "accepts": 10, "handled": 10, "requests": 42,
        "reading": 0, "writing": 1, "waiting": 2,
    }  # fmt: skip


class FailHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        raise RuntimeError("failing on purpose")


class RequestIdInLogsTest(tornado.testing.AsyncHTTPTestCase):
    def get_app(self) -> tornado.web.Application:
        app = tornado.web.Application([(r"/fail", FailHandler)])
        runner.prepare(app, parse_settings({"METRICS_PORT": "0"}))
        return app

    def test_every_line_of_the_traceback_carries_the_request_id(self) -> None:
        handler = logging.StreamHandler()
        handler.addFilter(instance_logs.RequestIdFilter())
        handler.setFormatter(instance_logs.TextFormatter(fmt="%(request_tag)s%(message)s"))
        records: list[str] = []
        handler.emit = lambda record: records.append(handler.format(record))  # type: ignore[method-assign]
        logging.getLogger("tornado").addHandler(handler)
        try:
            response = self.fetch("/fail", headers={"X-Request-ID": "req-42"})
        finally:
            logging.getLogger("tornado").removeHandler(handler)
        assert response.code == 500
        traceback = next(text for text in records if "Traceback" in text)
        lines = traceback.splitlines()
        assert lines[0].startswith("req-42 Uncaught exception GET /fail")
        assert all(line.startswith("    req-42 ") for line in lines[1:]), lines
        assert "RuntimeError: failing on purpose" in traceback


def test_the_metrics_endpoint_serves_from_one_thread_and_drops_idle_clients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "METRICS_DIR", tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics.start("127.0.0.1", port, lambda: [("nginx", True, 1.0, 1)])
    threads = threading.active_count()
    idle = [
        socket.create_connection(("127.0.0.1", port)) for _ in range(metrics.MAX_CONNECTIONS + 50)
    ]
    try:
        assert threading.active_count() == threads
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            assert b'tornado_bundle_process_up{process="nginx"} 1.0' in answer.read()
        assert time.monotonic() - started < 1
        # The oldest idle clients made room, the rest go after READ_TIMEOUT.
        idle[0].settimeout(metrics.READ_TIMEOUT / 2)
        assert idle[0].recv(1) == b""
        idle[-1].settimeout(metrics.READ_TIMEOUT + 2)
        assert idle[-1].recv(1) == b""
    finally:
        for connection in idle:
            connection.close()
