"""Your own app in the bundle: examples/chat built FROM the image (APP=app:make_app), its static
files served by nginx from the app's own settings, gzip on proxied answers."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import re
from pathlib import Path

import pytest

from harness import LOOPBACK, Container, Response, running

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("image")]

STATIC = Path(__file__).resolve().parents[2] / "examples" / "chat" / "static"
YEAR = "public, max-age=31536000, immutable"


@pytest.fixture(scope="module")
def chat(example_image: str) -> Container:
    with running({"DIAGNOSTICS": "on"}, image=example_image) as bundle:
        # A dotfile in static_path, as a careless COPY would leave one.
        bundle.exec("sh", "-c", "echo SECRET-DOTFILE > /app/static/.env", user="root")
        yield bundle  # type: ignore[misc]


def raw_get(port: int, target: str, headers: dict[str, str] | None = None) -> Response:
    """GET with the request target sent byte for byte (http.client would not re-encode it)."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    try:
        connection.putrequest("GET", target, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return Response(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


def test_the_example_app_answers_its_routes_through_nginx(chat: Container) -> None:
    page = chat.get("/")
    assert page.status == 200
    assert "X-Upstream" in page.headers  # rendered by Tornado, not nginx
    links = re.findall(rb'(?:href|src)="(/static/[^"]+)"', page.body)
    assert [link.split(b"?")[0] for link in links] == [b"/static/style.css", b"/static/chat.js"]
    assert all(b"?v=" in link for link in links)
    assert chat.get("/poll").status == 200
    assert chat.get("/healthz").body == b"ok\n"


def test_static_file_is_the_file_with_etag_and_304(chat: Container) -> None:
    expected = (STATIC / "chat.js").read_bytes()
    response = chat.get("/static/chat.js")
    assert response.status == 200
    assert response.body == expected
    assert int(response.headers["Content-Length"]) == len(expected)
    assert "X-Upstream" not in response.headers  # nginx answered; no instance was asked
    assert response.headers["Cache-Control"] == "public, max-age=60, must-revalidate"
    assert "Last-Modified" in response.headers
    again = chat.get("/static/chat.js", {"If-None-Match": response.headers["ETag"]})
    assert (again.status, again.body) == (304, b"")


def test_only_versioned_links_are_cached_for_a_year(chat: Container) -> None:
    version = hashlib.sha512((STATIC / "style.css").read_bytes()).hexdigest()
    assert chat.get(f"/static/style.css?v={version}").headers["Cache-Control"] == YEAR
    assert chat.get("/static/style.css").headers["Cache-Control"] != YEAR
    assert chat.get("/static/style.css?v=").headers["Cache-Control"] != YEAR


def test_precompressed_copy_only_for_clients_that_accept_gzip(chat: Container) -> None:
    plain = (STATIC / "style.css").read_bytes()
    zipped = chat.get("/static/style.css", {"Accept-Encoding": "gzip"})
    assert zipped.headers.get("Content-Encoding") == "gzip"
    assert gzip.decompress(zipped.body) == plain
    assert "Accept-Encoding" in zipped.headers["Vary"]
    identity = raw_get(chat.port, "/static/style.css")
    assert "Content-Encoding" not in identity.headers
    assert identity.body == plain


def test_missing_file_is_404_and_a_directory_is_not_listed(chat: Container) -> None:
    missing = chat.get("/static/nope.js")
    assert missing.status == 404
    assert "X-Upstream" not in missing.headers  # nginx's own answer
    directory = chat.get("/static/")
    assert directory.status in (403, 404)
    assert b"chat.js" not in directory.body


# Each must get a 4xx and never a byte of a file outside static_path: the app's own source
# (/app/app.py, next to /app/static) or the system's files.
TRAVERSALS = [
    "/static/../app.py",
    "/static/%2e%2e/app.py",
    "/static/%2E%2E/app.py",
    "/static/..%2fapp.py",
    "/static/%2e%2e%2fapp.py",
    "/static/.%2e/app.py",
    "/static/%252e%252e/app.py",
    "/static//../app.py",
    "/static/./../app.py",
    "/static/..\\app.py",
    "/static/..%5capp.py",
    "/static../app.py",
    "/static/../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/chat.js/../../app.py",
    "/static/%00../app.py",
    "/static/.env",
    "/static/.%65nv",
    "/static/sub/.git/config",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_and_dotfiles_never_leak(chat: Container, target: str) -> None:
    secret = chat.exec("cat", "/app/app.py").stdout.encode()
    response = raw_get(chat.port, target)
    assert 400 <= response.status < 500, (target, response.status)
    assert b"root:x:0:0" not in response.body
    assert b"SECRET-DOTFILE" not in response.body
    assert secret[:200] not in response.body


def test_static_files_are_served_while_every_instance_is_stopped(chat: Container) -> None:
    chat.exec("supervisorctl", "stop", "tornadoes:*")
    try:
        assert chat.get("/static/chat.js").status == 200
        assert chat.get("/").status == 502
    finally:
        chat.exec("supervisorctl", "start", "tornadoes:*")
        chat.wait_every_instance_healthy()


def test_gzip_for_a_large_json_answer_and_not_a_small_one(chat: Container) -> None:
    for number in range(40):
        connection = http.client.HTTPConnection(LOOPBACK, chat.port, timeout=5)
        connection.request("POST", "/messages", body=f"message number {number} " * 4)
        assert connection.getresponse().status == 201
        connection.close()
    large = chat.get("/poll?after=0-0", {"Accept-Encoding": "gzip"})
    assert large.headers.get("Content-Encoding") == "gzip"
    assert large.headers["Vary"] == "Accept-Encoding"
    assert b"message number" in gzip.decompress(large.body)
    small = chat.get("/poll", {"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in small.headers
    assert small.body.startswith(b'{"last_id"')


def test_an_app_without_static_path_gets_no_static_location() -> None:
    # The bundle's own main.py has no static_path: /static/ goes to Tornado, which has no route.
    with running({"DIAGNOSTICS": "on"}) as bundle:
        assert "location ^~" not in bundle.exec("nginx", "-T").stdout
        response = bundle.get("/static/x.js")
        assert response.status == 404
        assert "X-Upstream" in response.headers
