"""Apps as people write them, run by the real image: Tornado's own demos unchanged
(tests/apps/tornado_demos), APP's async forms, slow starts, streamed uploads, big response
headers, a TLS-terminating load balancer in front, sticky clients."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import http.cookiejar
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from harness import (
    IMAGE,
    LOOPBACK,
    Container,
    app_image,
    docker,
    free_ports,
    remove,
    running,
    start,
    wait_for,
)

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("image")]

APPS = Path(__file__).resolve().parents[1] / "apps"
DEMOS = APPS / "tornado_demos"
MiB = 2**20


@contextlib.contextmanager
def started(env: dict[str, str], folder: Path) -> Iterator[Container]:
    """The image with this app mounted, not waited for (it may never serve)."""
    container = start(env, mounted(folder))
    try:
        yield container
    finally:
        remove(container.name)


def exit_code(container: Container, timeout: float) -> int:
    wait_for(lambda: not container.inspect()["State"]["Running"], timeout, 0.2, "the exit")
    return container.inspect()["State"]["ExitCode"]


def mounted(folder: Path) -> tuple[str, ...]:
    """The app's folder as /app, read-only, as a user tries an app before building an image."""
    return ("--volume", f"{folder}:/app:ro")


def put(port: int, path: str, size: int, chunk: int = MiB) -> tuple[int, bytes]:
    """PUT `size` bytes with a Content-Length, sent a chunk at a time (never all in memory)."""
    block = b"x" * chunk

    def body() -> Iterator[bytes]:
        for offset in range(0, size, chunk):
            yield block[: min(chunk, size - offset)]

    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=60)
    try:
        connection.request("PUT", path, body=body(), headers={"Content-Length": str(size)})
        response = connection.getresponse()
        return response.status, response.read()
    except (BrokenPipeError, ConnectionResetError):
        # nginx answers a refused body (413) and closes while the client is still sending.
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class PeakMemory:
    """The container's peak memory (cgroup v1 memory.max_usage_in_bytes, which counts /tmp's
    tmpfs pages too), reset by `reset()`: what a run adds on top of an idle bundle."""

    def __init__(self, container: Container) -> None:
        pid = container.inspect()["State"]["Pid"]
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        path = next(line.split(":", 2)[2] for line in lines if ":memory:" in line)
        self.folder = Path("/sys/fs/cgroup/memory") / path.lstrip("/")

    def usage(self) -> int:
        return int((self.folder / "memory.usage_in_bytes").read_text())

    def reset(self) -> int:
        (self.folder / "memory.max_usage_in_bytes").write_text("0")
        return self.usage()

    def peak(self) -> int:
        return int((self.folder / "memory.max_usage_in_bytes").read_text())


# --- Tornado's demos, unchanged ------------------------------------------------------------------


def test_tornado_s_websocket_demo_unchanged_serves_its_page_static_files_and_websocket() -> None:
    env = {"APP": "chatdemo:Application", "DIAGNOSTICS": "on"}
    with running(env, options=mounted(DEMOS / "websocket")) as bundle:
        bundle.wait_serving()
        page = bundle.get("/")
        assert page.status == 200 and b"Tornado Chat Demo" in page.body
        script = bundle.get("/static/chat.js")
        assert script.status == 200
        assert script.body == (DEMOS / "websocket" / "static" / "chat.js").read_bytes()
        assert "X-Upstream" not in script.headers, "nginx serves the app's static_path itself"

        async def chat() -> dict[str, str]:
            url = f"ws://{LOOPBACK}:{bundle.port}/chatsocket"
            async with connect(url, open_timeout=5) as socket:
                await socket.send(json.dumps({"body": "hello from the bundle"}))
                return json.loads(await asyncio.wait_for(socket.recv(), 5))

        message = asyncio.run(chat())
        assert message["body"] == "hello from the bundle"
        assert "hello from the bundle" in message["html"]


def test_tornado_s_file_upload_demo_streams_1_gb_on_a_read_only_root_with_16_mb_of_tmp() -> None:
    env = {"APP": "file_receiver:make_app", "CLIENT_MAX_BODY_SIZE": "0", "WORKERS": "1"}
    options = ("--read-only", "--tmpfs", "/tmp:size=16m", *mounted(DEMOS / "file_upload"))
    with running(env, options=options, host_network=True, ready="/healthz") as bundle:
        memory = PeakMemory(bundle)
        idle = memory.reset()
        started = time.monotonic()
        assert put(bundle.port, "/big.bin", 2**30) == (200, b"OK")
        seconds = time.monotonic() - started
        grown = memory.peak() - idle
        print(f"1 GiB PUT through the bundle: {seconds:.1f}s, peak memory +{grown / MiB:.1f} MiB")
        assert grown < 50 * MiB
        # The demo's own line: the handler got every byte, as it arrived.
        wait_for(lambda: '"big.bin" "None" 1073741824 bytes' in bundle.logs(), 5)
        started = time.monotonic()
        assert put(bundle.instance_ports[0], "/direct.bin", 2**30) == (200, b"OK")
        print(f"1 GiB PUT straight to the instance: {time.monotonic() - started:.1f}s")


def test_tornado_takes_any_body_nginx_lets_through_and_nginx_refuses_the_rest() -> None:
    # 150 MB is over Tornado's own default max_body_size (100 MB): a 400 unless it follows the
    # setting.
    env = {"APP": "file_receiver:make_app", "CLIENT_MAX_BODY_SIZE": "200m", "WORKERS": "1"}
    files = mounted(DEMOS / "file_upload")
    with running(env, options=files, host_network=True, ready="/healthz") as bundle:
        assert put(bundle.port, "/150.bin", 150 * 10**6) == (200, b"OK")
        assert put(bundle.port, "/201m.bin", 201 * MiB)[0] == 413


# --- APP's forms and the app's own start and end ----------------------------------------------


def test_an_async_context_manager_app_is_entered_before_listening_and_left_after_the_drain() -> (
    None
):
    env = {"APP": "probe:lifespan"}
    with running(env, options=mounted(APPS / "probe"), ready="/healthz") as bundle:
        assert bundle.get("/scheme").body == b"http"
        for port in bundle.instance_ports:
            lines = [line for line in bundle.logs().splitlines() if f"tornado-{port} " in line]
            entered = next(i for i, line in enumerate(lines) if "lifespan: entered" in line)
            listening = next(i for i, line in enumerate(lines) if "listening on" in line)
            assert entered < listening, lines
        # A rolling restart: each instance drains, then the app is left, then a new one enters.
        bundle.exec("rolling-restart")
        logs = bundle.logs()
        assert logs.count("lifespan: left") == bundle.workers, logs
        assert logs.count("lifespan: entered") == 2 * bundle.workers
        docker("stop", bundle.name, timeout=30)
        logs = bundle.logs()
        assert logs.count("lifespan: left") == 2 * bundle.workers, logs
        for port in bundle.instance_ports:
            lines = [line for line in logs.splitlines() if f"tornado-{port} " in line]
            # The runner's own last line of a drain (not Supervisor's "stopped: ..." after it).
            stopped = max(
                i for i, line in enumerate(lines) if re.search(r"runner:[0-9]+\] stopped$", line)
            )
            left = max(i for i, line in enumerate(lines) if "lifespan: left" in line)
            assert stopped < left, "the app is left after its instance drained"


def test_an_async_factory_serves_and_an_error_in_setup_is_one_line_and_exit_1() -> None:
    with running(
        {"APP": "probe:make_app"}, options=mounted(APPS / "probe"), ready="/healthz"
    ) as bundle:
        assert bundle.get("/scheme").body == b"http"
    with started({"APP": "probe:Headers"}, APPS / "probe") as bundle:
        assert exit_code(bundle, 20) == 1
        assert "APP='probe:Headers': calling Headers() failed: TypeError:" in bundle.logs()


# --- Slow starts --------------------------------------------------------------------------------


def test_an_app_that_takes_30_s_to_import_starts_and_serves() -> None:
    # Three times WATCHDOG_TIMEOUT, half of STARTUP_TIMEOUT.
    env = {"APP": "slow:make_app", "IMPORT_SECONDS": "30"}
    begun = time.monotonic()
    with started(env, APPS / "slow_start") as bundle:
        wait_for(lambda: bundle.get("/", timeout=1).status == 200, 55, 0.2, "GET / -> 200")
        print(f"an app with a 30 s import served after {time.monotonic() - begun:.1f}s")
        for _ in range(20):
            assert bundle.get("/").body == b"loaded\n"
        logs = bundle.logs()
        assert "has not answered" not in logs, logs
        assert "502" not in logs, "nginx sent nothing to an instance still loading"


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"IMPORT_SECONDS": "3600", "STARTUP_TIMEOUT": "4"}, "(STARTUP_TIMEOUT=4s): it has not"),
        ({"IMPORT_SECONDS": "3", "IMPORT_FAILS": "1"}, "RuntimeError: the model file is missing"),
    ],
)
def test_an_app_that_can_never_start_stops_the_container_with_exit_1(
    env: dict[str, str], reason: str
) -> None:
    with started({"APP": "slow:make_app", **env}, APPS / "slow_start") as bundle:
        assert exit_code(bundle, 40) == 1
        logs = bundle.logs()
        assert reason in logs, logs
        assert "exited 2 times in a row before it ever listened" in logs, logs


# --- What nginx passes ------------------------------------------------------------------------


def test_response_headers_of_16_kb_pass_and_larger_ones_are_logged_with_the_instance() -> None:
    with running(
        {"APP": "probe:make_app"}, options=mounted(APPS / "probe"), ready="/healthz"
    ) as bundle:
        big = bundle.get("/headers?kb=16")
        assert big.status == 200 and big.body == b"big headers\n"
        assert sum(len(k) + len(v) for k, v in big.headers.items()) > 16_000
        assert bundle.get("/headers?kb=40").status == 502
        wait_for(
            lambda: re.search(
                r"upstream sent too big header .* upstream: \"http://127\.0\.0\.1:800[01]/headers",
                bundle.logs(),
            ),
            5,
        )


@pytest.mark.parametrize(("trusted", "scheme"), [("127.0.0.1", b"https"), ("10.0.0.0/8", b"http")])
def test_x_forwarded_proto_is_taken_from_a_trusted_proxy_only(trusted: str, scheme: bytes) -> None:
    env = {"APP": "probe:make_app", "REAL_IP_FROM": trusted}
    with running(
        env, options=mounted(APPS / "probe"), host_network=True, ready="/healthz"
    ) as bundle:
        answer = bundle.get("/scheme", {"X-Forwarded-Proto": "https"})
        assert answer.body == scheme
        assert bundle.get("/scheme", {"X-Forwarded-Proto": "gopher"}).body == b"http"


def test_sticky_keeps_each_client_on_one_instance_and_falls_over_while_it_restarts() -> None:
    with running({"LB_METHOD": "sticky", "DIAGNOSTICS": "on"}) as bundle:
        bundle.wait_every_instance_healthy()
        first = bundle.get("/")
        cookie = first.headers["Set-Cookie"].split(";")[0]
        assert re.fullmatch(r"tornado_bundle_route=[0-9a-f]{32}", cookie), cookie
        mine = bundle.upstream_counts(20, headers={"Cookie": cookie})
        assert len(mine) == 1, mine
        assert "Set-Cookie" not in bundle.get("/", {"Cookie": cookie}).headers
        # New clients (no cookie) are spread over both instances.
        assert len(bundle.upstream_counts(20)) == 2
        home = next(iter(mine))
        instance = f"tornadoes:tornado-{home.rsplit(':', 1)[1]}"
        bundle.exec("supervisorctl", "stop", instance)
        elsewhere = bundle.upstream_counts(5, headers={"Cookie": cookie})
        assert home not in elsewhere
        bundle.exec("supervisorctl", "start", instance)
        bundle.wait_every_instance_healthy()
        assert bundle.upstream_counts(5, headers={"Cookie": cookie}) == {home: 5}


# --- Tornado's blog demo: an async pool on the instance's loop, a real PostgreSQL -------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[int]:
    """Debian's PostgreSQL on 127.0.0.1:<free port>, with the blog demo's user, database and
    schema (the demo's README: psql < schema.sql); stopped and removed after."""
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    folder = Path(tempfile.mkdtemp(prefix="tornado-bundle-test-pg-"))
    shutil.chown(folder, "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_postgres, binaries / "initdb", "-D", folder / "data", "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    port = free_ports(1)
    server = subprocess.Popen(
        [*as_postgres, binaries / "postgres", "-D", folder / "data", "-k", folder, "-p", str(port),
         "-c", f"listen_addresses={LOOPBACK}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: psql(port, "SELECT 1", "postgres"), 30, 0.2, "PostgreSQL to accept")
        psql(port, "CREATE USER blog WITH PASSWORD 'blog'", "postgres")
        psql(port, "CREATE DATABASE blog OWNER blog", "postgres")
        schema = (DEMOS / "blog" / "schema.sql").read_text()
        subprocess.run(
            ["psql", "-h", LOOPBACK, "-p", str(port), "-U", "blog", "-d", "blog", "-q"],
            input=schema, text=True, check=True, capture_output=True,
        )  # fmt: skip
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


# The demo's connections to the database, not counting the one that asks.
BLOG_CONNECTIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE usename = 'blog' AND pid <> pg_backend_pid()"
)


def psql(port: int, sql: str, user: str = "blog") -> str:
    result = subprocess.run(
        ["psql", "-h", LOOPBACK, "-p", str(port), "-U", user, "-d", user, "-At", "-c", sql],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    if result.returncode:
        raise AssertionError(result.stderr)
    return result.stdout.strip() or "ok"


@pytest.fixture(scope="module")
def blog_image() -> Iterator[str]:
    tag = app_image("blog_app", extra="tornado_demos/blog")
    yield tag
    docker("image", "rm", "--force", tag, check=False)


class Browser:
    """Cookies and forms the way a browser keeps them (the demo's xsrf and signed cookies)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://{LOOPBACK}:{port}"
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=10) as answer:
            return answer.read().decode()

    def submit(self, path: str, fields: dict[str, str]) -> str:
        """GET the form, then POST it with its _xsrf field; the page it leads to."""
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', self.get(path))
        assert xsrf, f"no _xsrf field in {path}"
        data = urllib.parse.urlencode({**fields, "_xsrf": xsrf.group(1)}).encode()
        with self.opener.open(self.base + path, data=data, timeout=10) as answer:
            return answer.read().decode()


def test_tornado_s_blog_demo_with_its_pool_on_each_instance_s_loop(
    postgres: int, blog_image: str
) -> None:
    env = {"APP": "blog_app:make_app", "BLOG_DB_PORT": str(postgres), "WORKERS": "2"}
    with running(env, image=blog_image, host_network=True, ready="/auth/create") as bundle:
        assert int(psql(postgres, BLOG_CONNECTIONS)) >= 2
        browser = Browser(bundle.port)
        browser.submit("/auth/create", {"email": "a@example.org", "name": "A", "password": "pw"})
        entry = browser.submit(
            "/compose", {"title": "Written through the bundle", "markdown": "*hi*"}
        )
        assert "Written through the bundle" in entry and "<em>hi</em>" in entry
        # Every instance reads what one of them wrote (round robin: the home page from both).
        for _ in range(4):
            assert "Written through the bundle" in browser.get("/")
        assert psql(postgres, "SELECT title FROM entries") == "Written through the bundle"
        docker("stop", bundle.name, timeout=30)
        assert bundle.logs().count("blog: database pool closed") == 2, bundle.logs()
        assert psql(postgres, BLOG_CONNECTIONS) == "0"


# --- Secrets from files ---------------------------------------------------------------------


def test_a_name_file_variable_gives_the_app_the_file_s_content_and_shows_it_nowhere(
    tmp_path: Path,
) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "cookie").write_text(secret + "\n")
    (secrets / "cookie").chmod(0o644)
    options = (*mounted(APPS / "probe"), "--volume", f"{secrets}:/run/secrets:ro")
    env = {"APP": "probe:make_app", "COOKIE_SECRET_FILE": "/run/secrets/cookie"}
    with running(env, options=options, ready="/healthz") as bundle:
        assert bundle.get("/secret").body == secret.encode()
        assert secret not in json.dumps(bundle.inspect())
        assert secret not in bundle.logs()
        command_lines = bundle.exec("sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").stdout
        assert "supervisord" in command_lines and secret not in command_lines
    # A file the image's user cannot read: one line, exit 1, nothing started.
    (secrets / "cookie").chmod(0o600)
    result = docker("run", "--rm", *options, *[f"--env={k}={v}" for k, v in env.items()],
                    IMAGE, check=False, timeout=30)  # fmt: skip
    assert result.returncode == 1
    lines = (result.stdout + result.stderr).splitlines()
    assert lines[-1] == (
        "30-secrets-from-files: error: COOKIE_SECRET_FILE='/run/secrets/cookie' is not allowed: "
        "a file that uid 10001 can read (mount it, e.g. -v ./secrets:/run/secrets:ro)"
    ), lines
    assert not any("supervisord" in line for line in lines), lines


def test_the_prestart_script_migrates_the_database_before_any_instance_starts(
    postgres: int, blog_image: str
) -> None:
    psql(postgres, "CREATE DATABASE blog_fresh OWNER blog", "postgres")
    env = {"APP": "blog_app:make_app", "BLOG_DB_PORT": str(postgres), "BLOG_DB_NAME": "blog_fresh"}
    with running(env, image=blog_image, host_network=True) as bundle:
        # The demo's home page reads what the migration wrote.
        assert b"Welcome, from the migration" in bundle.get("/").body
        logs = bundle.logs()
        assert logs.index("migrate: created the tables and a first entry") < logs.index("spawned")
    # A migration that fails: one line naming the script, exit code 1, nothing started.
    failing = start(
        {**env, "BLOG_DB_NAME": "no_such_database"}, image=blog_image, host_network=True
    )
    try:
        assert exit_code(failing, 30) == 1
        lines = failing.logs().splitlines()
    finally:
        remove(failing.name)
    assert lines[-1] == (
        "40-prestart: error: /app/prestart.sh exited with status 1 (its own lines above say why); "
        "nothing was started"
    ), lines
    assert any('database "no_such_database" does not exist' in line for line in lines), lines
