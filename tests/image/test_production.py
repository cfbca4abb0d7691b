"""Production: HTTPS and HTTP/2 from a mounted certificate, request IDs, JSON logs, program logs
for supervisorctl, Prometheus metrics. Each against a real client or server: curl (HTTP/2),
Python's ssl (old TLS versions), testssl.sh, a Prometheus server."""

from __future__ import annotations

import datetime
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from harness import (
    IMAGE,
    LOOPBACK,
    RUN_ID,
    Container,
    LoadLoop,
    docker,
    free_ports,
    http_get,
    remove,
    running,
    start,
    wait_for,
)
from tornado_bundle.names import instance_name

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("image")]

ROOT = Path(__file__).resolve().parents[2]
# Reports of the real tools (testssl.sh), kept after the run.
ARTIFACTS = ROOT / "tests" / "artifacts"
SECRETS = "/run/secrets"
# An app whose /fail raises: a 500 with a traceback in the log.
FAILING_APP = """
import tornado.web


class FailHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        raise RuntimeError("failing on purpose")


class HelloHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("hello")


def make_app() -> tornado.web.Application:
    return tornado.web.Application([(r"/", HelloHandler), (r"/fail", FailHandler)])
"""


@dataclass
class Pki:
    folder: Path
    ca: trustme.CA

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    def issue(self, name: str, days: int = 90, start_days_ago: int = 1) -> trustme.LeafCert:
        """cert-<name>.pem and key-<name>.pem, for 127.0.0.1 and localhost."""
        now = datetime.datetime.now(datetime.UTC)
        leaf = self.ca.issue_cert(
            "127.0.0.1",
            "localhost",
            not_before=now - datetime.timedelta(days=start_days_ago),
            not_after=now + datetime.timedelta(days=days),
        )
        leaf.cert_chain_pems[0].write_to_path(str(self.folder / f"cert-{name}.pem"))
        leaf.private_key_pem.write_to_path(str(self.folder / f"key-{name}.pem"))
        for path in (self.folder / f"cert-{name}.pem", self.folder / f"key-{name}.pem"):
            path.chmod(0o644)  # the image's user reads them through the bind mount
        return leaf


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    folder.chmod(0o755)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    pki = Pki(folder, ca)
    pki.issue("good")
    return pki


def tls_env(tls_port: int, name: str = "good", **extra: str) -> dict[str, str]:
    return {
        "TLS_CERT_FILE": f"{SECRETS}/cert-{name}.pem",
        "TLS_KEY_FILE": f"{SECRETS}/key-{name}.pem",
        "TLS_PORT": str(tls_port),
        **extra,
    }


@pytest.fixture(scope="module")
def https(pki: Pki) -> Iterator[tuple[Container, int]]:
    """The bundle with HTTPS (HSTS on) on the host network: (container, TLS port)."""
    tls_port = free_ports(1)
    env = tls_env(tls_port, TLS_HSTS="on", DIAGNOSTICS="on")
    mount = f"--volume={pki.folder}:{SECRETS}:ro"
    with running(env, (mount,), host_network=True) as bundle:
        yield bundle, tls_port


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "--silent", "--show-error", "--max-time", "10", *args],
                          capture_output=True, text=True, check=False)  # fmt: skip


def test_https_negotiates_http2_and_tornado_sees_https(
    https: tuple[Container, int], pki: Pki
) -> None:
    bundle, tls_port = https
    result = curl("--http2", "--cacert", str(pki.ca_file), "--include",
                  "--write-out", "\n%{http_version} %{http_code}",
                  f"https://{LOOPBACK}:{tls_port}/whoami")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "2 200"
    headers, body = result.stdout.rsplit("\n", 1)[0].split("\n\n", 1)
    assert json.loads(body) == {
        "remote_ip": LOOPBACK,
        "protocol": "https",
        "host": f"{LOOPBACK}:{tls_port}",
    }
    # (text mode: curl's CRLF reads as LF)
    assert "\nstrict-transport-security: max-age=63072000\n" in headers
    assert "\nx-content-type-options: nosniff\n" in headers
    # HTTP/1.1 over TLS still works (ALPN), and plain HTTP on LISTEN_PORT with no HSTS.
    result = curl("--http1.1", "--cacert", str(pki.ca_file), "--write-out", "%{http_version}",
                  "--output", "/dev/null", f"https://{LOOPBACK}:{tls_port}/")  # fmt: skip
    assert result.stdout == "1.1"
    plain = http_get(bundle.port, "/whoami")
    assert plain.status == 200 and json.loads(plain.body)["protocol"] == "http"
    assert "Strict-Transport-Security" not in plain.headers


def handshake(port: int, version: ssl.TLSVersion, pki: Pki) -> str:
    """The negotiated version, or the error: Python's ssl as the client, pinned to `version`."""
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    # Python's own floor is TLS 1.2 at OpenSSL's security level 1: lowered here so that the
    # refusal is the server's.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = context.maximum_version = version
    try:
        with (
            socket.create_connection((LOOPBACK, port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=LOOPBACK) as tls,
        ):
            return str(tls.version())
    except (ssl.SSLError, ConnectionError) as error:
        return f"refused: {error}"


def test_only_tls_1_2_and_1_3_are_accepted(https: tuple[Container, int], pki: Pki) -> None:
    _, tls_port = https
    assert handshake(tls_port, ssl.TLSVersion.TLSv1_3, pki) == "TLSv1.3"
    assert handshake(tls_port, ssl.TLSVersion.TLSv1_2, pki) == "TLSv1.2"
    for old in (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1):
        assert handshake(tls_port, old, pki).startswith("refused"), old


def test_testssl_finds_nothing_medium_or_above(pki: Pki) -> None:
    """testssl.sh (Debian's package): protocols, ciphers, server defaults and preferences, headers,
    vulnerabilities. The test CA is added as trusted; its certificates carry no CRL or OCSP
    address, which is the one finding about them that is left."""
    tls_port = free_ports(1)
    env = tls_env(tls_port, TLS_HSTS="on")
    with running(env, (f"--volume={pki.folder}:{SECRETS}:ro",), host_network=True):
        run_testssl(tls_port, pki)


def run_testssl(tls_port: int, pki: Pki) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    report = ARTIFACTS / f"testssl-{RUN_ID}.json"
    report.unlink(missing_ok=True)
    result = subprocess.run(
        ["testssl", "--quiet", "--color", "0", "--warnings", "off", "--ip", "one",
         "--add-ca", str(pki.ca_file), "--jsonfile", str(report),
         "-p", "-s", "-f", "-P", "-S", "-h", "-U", f"https://{LOOPBACK}:{tls_port}"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert report.exists(), result.stdout[-2000:] + result.stderr[-2000:]
    findings = json.loads(report.read_text())
    assert len(findings) > 50, findings
    about_the_test_ca = {"cert_revocation"}
    serious = [
        (finding["severity"], finding["id"], finding["finding"])
        for finding in findings
        if finding["severity"] in ("MEDIUM", "HIGH", "CRITICAL")
        and finding["id"] not in about_the_test_ca
    ]
    assert serious == [], serious
    offered = {f["id"]: f["finding"] for f in findings}
    assert offered["TLS1_3"] == "offered with final" and offered["TLS1_2"] == "offered"
    assert offered["TLS1_1"] == offered["TLS1"] == "not offered"


def test_tls_redirect_sends_308_except_for_the_health_check(pki: Pki) -> None:
    tls_port = free_ports(1)
    env = tls_env(tls_port, TLS_REDIRECT="on")
    bundle = start(env, (f"--volume={pki.folder}:{SECRETS}:ro",), host_network=True)
    try:
        wait_for(lambda: http_get(bundle.port, "/healthz").status == 200, 15)
        answer = http_get(bundle.port, "/a/b?c=1")
        assert answer.status == 308
        assert answer.headers["Location"] == f"https://{LOOPBACK}:{tls_port}/a/b?c=1"
        assert http_get(bundle.port, "/healthz").status == 200
        # A Host that is not a host name gets 400, never a redirect to a host the client chose;
        # HTTP/0.9 gets a close, as without TLS_REDIRECT.
        forged = http_get(bundle.port, "/", {"Host": "good.example@evil.example"})
        assert (forged.status, forged.headers.get("Location")) == (400, None)
        with socket.create_connection((LOOPBACK, bundle.port), timeout=5) as raw:
            raw.sendall(b"GET /\r\n")
            assert raw.recv(100) == b""
        result = curl("--cacert", str(pki.ca_file), "--location", "--output", "/dev/null",
                      "--write-out", "%{http_code} %{url_effective}",
                      f"http://{LOOPBACK}:{bundle.port}/")  # fmt: skip
        assert result.stdout == f"200 https://{LOOPBACK}:{tls_port}/"
    finally:
        remove(bundle.name)


def served_serial(port: int, pki: Pki) -> int:
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    with (
        socket.create_connection((LOOPBACK, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=LOOPBACK) as tls,
    ):
        certificate = tls.getpeercert()
    assert certificate
    return int(str(certificate["serialNumber"]), 16)


def test_renewed_certificate_is_served_after_hup_with_nothing_failed(
    pki: Pki, tmp_path: Path
) -> None:
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o755)
    for name in ("cert-good.pem", "key-good.pem"):
        shutil.copy(pki.folder / name, folder / name)
        (folder / name).chmod(0o644)
    tls_port = free_ports(1)
    env = tls_env(tls_port)
    with running(env, (f"--volume={folder}:{SECRETS}:ro",), host_network=True) as bundle:
        old_serial = served_serial(tls_port, pki)
        pki.issue("renewed")
        new_serial = certificate_serial(pki.folder / "cert-renewed.pem")
        # HTTPS as well as plain, with a new TLS connection every 5 requests.
        context = ssl.create_default_context(cafile=str(pki.ca_file))
        https = LoadLoop(tls_port, clients=2, tls_context=context, requests_per_connection=5)
        with https, LoadLoop(bundle.port, clients=2) as plain:
            plain.run_for(1)
            # Renewed in place, as certbot or a secret update does: the same file names.
            for kind in ("cert", "key"):
                shutil.copy(pki.folder / f"{kind}-renewed.pem", folder / f"{kind}-good.pem.new")
                os.replace(folder / f"{kind}-good.pem.new", folder / f"{kind}-good.pem")
            bundle.exec("supervisorctl", "signal", "HUP", "nginx")
            wait_for(lambda: served_serial(tls_port, pki) == new_serial, 10)
            plain.run_for(1.5)
        result, tls_result = plain.result, https.result
        print(f"HUP under load: plain {result.ok} ok, HTTPS {tls_result.ok} ok, "
              f"retried {result.retried} + {tls_result.retried}")  # fmt: skip
        assert result.ok > 100 and result.failures == [], result.failures[:5]
        assert tls_result.ok > 20 and tls_result.failures == [], tls_result.failures[:5]
        # At most one per client, as for nginx's reload under plain HTTP (test_resilience.py).
        assert result.retried <= 2 and tls_result.retried <= 2
        assert new_serial != old_serial


def certificate_serial(path: Path) -> int:
    decoded = ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]
    return int(decoded["serialNumber"], 16)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "TLS_CERT_FILE='/run/secrets/cert-none.pem': no such file"),
        ("unreadable", "TLS_KEY_FILE='/run/secrets/key-secret.pem': permission denied"),
        ("mismatched", "TLS_KEY_FILE='/run/secrets/key-other.pem': does not match the certificate"),
        ("expired", "TLS_CERT_FILE='/run/secrets/cert-expired.pem': the certificate expired on"),
        ("not_pem", "TLS_CERT_FILE='/run/secrets/cert-garbage.pem': not a PEM certificate"),
        ("key_only", "TLS_CERT_FILE='' is not allowed: a file path whenever TLS_KEY_FILE is set"),
    ],
)
def test_bad_certificate_or_key_exits_1_with_one_line(
    pki: Pki, tmp_path: Path, case: str, message: str
) -> None:
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o755)
    for name in ("good", "other"):
        leaf = pki.issue(name)
        leaf.cert_chain_pems[0].write_to_path(str(folder / f"cert-{name}.pem"))
        leaf.private_key_pem.write_to_path(str(folder / f"key-{name}.pem"))
    expired = pki.issue("expired", days=-1, start_days_ago=30)
    expired.cert_chain_pems[0].write_to_path(str(folder / "cert-expired.pem"))
    expired.private_key_pem.write_to_path(str(folder / "key-expired.pem"))
    (folder / "cert-garbage.pem").write_text("not a certificate\n")
    shutil.copy(folder / "key-good.pem", folder / "key-secret.pem")
    for path in folder.iterdir():
        path.chmod(0o644)
    (folder / "key-secret.pem").chmod(0o600)  # root's: not the image's user
    cert, key = {
        "missing": ("cert-none.pem", "key-good.pem"),
        "unreadable": ("cert-good.pem", "key-secret.pem"),
        "mismatched": ("cert-good.pem", "key-other.pem"),
        "expired": ("cert-expired.pem", "key-expired.pem"),
        "not_pem": ("cert-garbage.pem", "key-good.pem"),
        "key_only": ("", "key-good.pem"),
    }[case]
    env = {"TLS_CERT_FILE": cert and f"{SECRETS}/{cert}", "TLS_KEY_FILE": f"{SECRETS}/{key}"}
    started = time.monotonic()
    env_options = [f"--env={key}={value}" for key, value in env.items()]
    mount = f"--volume={folder}:{SECRETS}:ro"
    result = docker("run", "--rm", mount, *env_options, IMAGE, check=False, timeout=30)
    assert time.monotonic() - started < 5
    assert result.returncode == 1
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) == 1 and lines[0].startswith("tornado-bundle: error: "), lines
    assert message in lines[0], lines


@pytest.fixture
def failing_app(tmp_path: Path) -> str:
    """A --volume option that puts FAILING_APP at /app/failing.py (APP=failing:make_app)."""
    path = tmp_path / "failing.py"
    path.write_text(FAILING_APP)
    path.chmod(0o644)
    return f"--volume={path}:/app/failing.py:ro"


def test_request_id_joins_the_response_the_access_line_and_the_traceback(failing_app: str) -> None:
    with running({"APP": "failing:make_app"}, (failing_app,)) as bundle:
        answer = bundle.get("/fail")
        assert answer.status == 500
        request_id = answer.headers["X-Request-ID"]
        assert len(request_id) == 32, request_id
        wait_for(lambda: f"request_id={request_id}" in bundle.logs(), 5)
        matching = [line for line in bundle.logs().splitlines() if request_id in line]
        assert any('"GET /fail HTTP/1.1" 500' in line for line in matching), matching
        assert any("Uncaught exception GET /fail" in line for line in matching), matching
        assert any("Traceback (most recent call last)" in line for line in matching), matching
        assert any("RuntimeError: failing on purpose" in line for line in matching), matching
        # An untrusted client cannot choose the ID.
        chosen = http_get(bundle.port, "/", headers={"X-Request-ID": "chosen-by-client"})
        assert chosen.headers["X-Request-ID"] != "chosen-by-client"


def test_request_id_from_a_trusted_proxy_is_kept() -> None:
    with running({"REAL_IP_FROM": "127.0.0.1/32"}, host_network=True) as bundle:
        answer = http_get(bundle.port, "/", headers={"X-Request-ID": "edge-1234"})
        assert answer.headers["X-Request-ID"] == "edge-1234"
        hostile = http_get(bundle.port, "/", headers={"X-Request-ID": 'a b"c'})
        assert len(hostile.headers["X-Request-ID"]) == 32


def test_json_logs_every_line_is_an_object_with_the_fields(failing_app: str) -> None:
    env = {"LOG_FORMAT": "json", "APP": "failing:make_app", "CLIENT_MAX_BODY_SIZE": "1k"}
    container = start(env, (failing_app,))
    try:
        container.wait_serving()
        container.wait_every_instance_healthy()
        assert container.get("/").status == 200
        failed = container.get("/fail")
        request_id = failed.headers["X-Request-ID"]
        too_big = http.client.HTTPConnection(LOOPBACK, container.port, timeout=5)
        too_big.request("POST", "/", body=b"x" * 4096)
        assert too_big.getresponse().status == 413  # nginx writes an error-log line
        container.exec("rolling-restart")
        docker("stop", container.name, timeout=30)
        output = docker("logs", container.name).stdout + docker("logs", container.name).stderr
    finally:
        remove(container.name)
    records = []
    for line in output.splitlines():
        record = json.loads(line)
        assert {"time", "level", "source", "message"} <= record.keys(), line
        records.append(record)
    sources = {record["source"] for record in records}
    assert {"tornado-bundle", "docker-entrypoint.sh", "supervisord", "watchdog", "nginx",
            "tornado-8000", "tornado-8001"} <= sources, sources  # fmt: skip
    access = [r for r in records if r["source"] == "nginx" and "status" in r]
    fields = {"method", "path", "status", "bytes", "request_time", "upstream_time", "upstream",
              "request_id", "client"}  # fmt: skip
    assert access and all(fields <= r.keys() for r in access), access
    assert any("client intended to send too large body" in r["message"] for r in records)
    # nginx's access line, Tornado's error with the traceback, Tornado's "500 GET /fail" line.
    joined = [r for r in records if r.get("request_id") == request_id]
    assert len(joined) == 3 and len({r["source"] for r in joined}) == 2, joined
    traceback = next(r for r in joined if "exc_info" in r)
    assert "RuntimeError: failing on purpose" in traceback["exc_info"]
    assert any(r["message"].startswith("stopped: nginx") for r in records)


def test_access_log_off_keeps_the_warnings() -> None:
    with running({"ACCESS_LOG": "off"}) as bundle:
        for path in ("/", "/missing"):
            bundle.get(path)
        wait_for(lambda: "404 GET /missing" in bundle.logs(), 5)
        time.sleep(1.5)  # nginx flushes its buffered access log every second; nothing may come
        # An access line has the status after the request; an error line of nginx's (a refused
        # connection to an instance still starting, retried on the other) has `request: "…",`.
        assert not re.search(r'"GET / HTTP/1\.1" [0-9]{3} ', bundle.logs())


def test_supervisorctl_tail_and_maintail_read_each_program_s_capped_log() -> None:
    with running(host_network=True) as bundle:
        port = bundle.instance_ports[0]
        tail = bundle.exec("supervisorctl", "tail", instance_name(port)).stdout
        assert f"listening on http://127.0.0.1:{port}" in tail
        assert "supervisord started with pid 1" in bundle.exec("supervisorctl", "maintail").stdout
        # ~1.6 MB of access lines: the file turns over at 1 MB, one backup is kept.
        wrk = subprocess.run(["wrk", "-t1", "-c8", "-d3s", f"http://{LOOPBACK}:{bundle.port}/"],
                             capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
        assert "requests in" in wrk.stdout
        wait_for(lambda: bundle.exec("test", "-e", "/tmp/log/nginx.log.1").returncode == 0, 5)
        sizes = bundle.exec("sh", "-c", "find /tmp/log -type f | xargs stat -c '%s %n'").stdout
        for line in sizes.splitlines():
            size, name = line.split()
            assert int(size) <= 1024 * 1024 + 64 * 1024, line
        names = sorted(Path(line.split()[1]).name for line in sizes.splitlines())
        assert names == sorted(
            ["nginx.log", "nginx.log.1", "supervisord.log"]
            + [f"tornado-{p}.log" for p in bundle.instance_ports]
        ), names
        assert '"GET / HTTP/1.1" 200' in bundle.exec("supervisorctl", "tail", "nginx").stdout
        assert '"GET / HTTP/1.1" 200' in bundle.logs()  # docker logs still has every line


PROMETHEUS_CONFIG = """
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: tornado-bundle
    static_configs:
      - targets: ["{target}"]
"""


@contextmanager
def prometheus(target: str, folder: Path) -> Iterator[int]:
    """Debian's Prometheus server on 127.0.0.1, scraping `target` every second: its port."""
    port = free_ports(1)
    config = folder / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG.format(target=target))
    server = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address={LOOPBACK}:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: http_get(port, "/-/ready").status == 200, 30)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=15)


def promql(port: int, query: str) -> list[dict]:
    url = f"http://{LOOPBACK}:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (127.0.0.1 only)
        return json.loads(response.read())["data"]["result"]


def value(port: int, query: str) -> float | None:
    result = promql(port, query)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_counts_exactly_n_requests_across_instances_and_restarts(
    tmp_path: Path,
) -> None:
    metrics_port = free_ports(1)
    env = {"METRICS_PORT": str(metrics_port), "DIAGNOSTICS": "on"}
    with (
        running(env, host_network=True) as bundle,
        prometheus(f"{LOOPBACK}:{metrics_port}", tmp_path) as prometheus_port,
    ):
        requests = 300
        # /whoami (DIAGNOSTICS=on): a handler that only these requests reach.
        counts = bundle.upstream_counts(requests, "/whoami")
        assert len(counts) == bundle.workers and min(counts.values()) > 0, counts
        total = 'sum(tornado_requests_total{handler="WhoAmIHandler",status="200"})'
        wait_for(lambda: value(prometheus_port, total) == requests, 20, 0.5)
        assert value(prometheus_port, 'up{job="tornado-bundle"}') == 1
        assert value(prometheus_port, "count(tornado_bundle_process_up == 1)") == 3
        assert value(prometheus_port, "nginx_http_requests_total") >= requests
        bundle.exec("rolling-restart")
        restarted = "sum(tornado_bundle_process_restarts_total)"
        wait_for(lambda: value(prometheus_port, restarted) == bundle.workers, 20, 0.5)
        assert value(prometheus_port, total) == requests
        # The metrics are on their own port only: nginx's listener does not serve them.
        assert http_get(bundle.port, "/metrics").status == 404
