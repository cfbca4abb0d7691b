"""Trust and privilege in the shipped image: Debian's CA set and nothing else (no CA of the
machine that built the base image), a CA added the documented way is trusted by an app's
outbound HTTPS, and no setuid/setgid program is left."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import IMAGE, LOOPBACK, RUN_ID, docker, free_ports

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("image")]


def in_image(script: str, *options: str, image: str = IMAGE) -> subprocess.CompletedProcess[str]:
    return docker("run", "--rm", *options, "--entrypoint", "sh", image, "-c", script, check=False)


def test_the_runtime_trusts_debian_s_ca_set_and_nothing_else() -> None:
    result = in_image(
        "ls /usr/local/share/ca-certificates | wc -l; ls /usr/share/ca-certificates/mozilla | "
        "wc -l; python3 -c 'import ssl; print(ssl.create_default_context()"
        '.cert_store_stats()["x509_ca"])\''
    )
    added, debian, trusted = (int(line) for line in result.stdout.split())
    assert added == 0, "CA certificates of the build host are left in the image"
    assert trusted == debian > 100, (trusted, debian)


def test_no_setuid_or_setgid_file() -> None:
    result = in_image("find / -xdev -perm /6000 -type f 2>/dev/null")
    assert result.stdout == ""


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """An HTTPS server on 127.0.0.1 with a certificate from a CA made here: (port, CA file)."""
    folder = tmp_path_factory.mktemp("ca")
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=Test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", "ca.key", "-out", "ca.crt", cwd=folder,
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr", cwd=folder,
    )  # fmt: skip
    # What Python 3.13's strict verification wants of a server certificate.
    (folder / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", "server.crt", cwd=folder,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "server.crt", folder / "server.key")
    server = http.server.ThreadingHTTPServer((LOOPBACK, free_ports(1)), Hello)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], folder / "ca.crt"
    server.shutdown()


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"verified")

    def log_message(self, *args: object) -> None:
        pass


FETCH = (
    "import sys, urllib.request\n"
    "try:\n"
    "    print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())\n"
    "except Exception as error:\n"
    "    print(type(error).__name__, error)\n"
)


def fetch_from(image: str, port: int) -> str:
    result = docker(
        "run", "--rm", "--network=host", "--entrypoint", "python", image,
        "-c", FETCH, f"https://{LOOPBACK}:{port}/",
    )  # fmt: skip
    return result.stdout.strip()


def test_an_app_trusts_a_ca_added_the_documented_way_and_no_other(
    https_server: tuple[int, Path], tmp_path: Path
) -> None:
    port, ca = https_server
    assert "CERTIFICATE_VERIFY_FAILED" in fetch_from(IMAGE, port)
    # README (Trust): an image FROM the bundle adds the CA and runs update-ca-certificates.
    (tmp_path / "my-ca.crt").write_bytes(ca.read_bytes())
    (tmp_path / "Dockerfile").write_text(
        f"FROM {IMAGE}\n"
        "USER root\n"
        "COPY my-ca.crt /usr/local/share/ca-certificates/\n"
        "RUN update-ca-certificates\n"
        "USER 10001:10001\n"
    )
    tag = f"tornado-bundle-test-trust:{RUN_ID}"
    docker("build", "--quiet", "--tag", tag, str(tmp_path), timeout=300)
    try:
        assert fetch_from(tag, port) == "verified"
    finally:
        docker("image", "rm", "--force", tag, check=False)
