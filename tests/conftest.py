"""Shared fixtures. Integration tests need a Docker engine and the image: without them they fail
with the reason (never skip), so a run cannot go green by testing nothing."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from harness import (
    BUILDER_IMAGE,
    IMAGE,
    LOOPBACK,
    NAME_PREFIX,
    RUN_ID,
    docker,
    free_ports,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
# swarm-lab/stack.py, the one place where deploy/compose.yaml becomes the lab's stack.
sys.path.insert(0, str(ROOT / "swarm-lab"))
EXAMPLE = ROOT / "examples" / "chat"


@pytest.fixture(scope="session")
def image() -> str:
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.fail("the docker CLI is not installed; the integration tests need a Docker engine")
    if info.returncode != 0:
        pytest.fail(f"no Docker engine answers `docker info`: {info.stderr.strip()}")
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.fail(f"image {IMAGE} does not exist; build it first (make build)")
    return IMAGE


@pytest.fixture(scope="session")
def example_image(image: str) -> Iterator[str]:
    """examples/chat built FROM the bundle image, as a user builds an app image; removed after."""
    tag = f"tornado-bundle-test-example:{RUN_ID}"
    docker(
        "build",
        "--quiet",
        f"--build-arg=BUNDLE_IMAGE={image}",
        f"--build-arg=BUNDLE_BUILDER={BUILDER_IMAGE}",
        f"--tag={tag}",
        str(EXAMPLE),
        timeout=600,
    )
    yield tag
    docker("image", "rm", "--force", tag, check=False)


@pytest.fixture
def redis_port() -> Iterator[int]:
    """A real Redis server on 127.0.0.1, for the example's shared message log."""
    server_binary = shutil.which("redis-server")
    assert server_binary, "redis-server is not installed (apt-get install redis-server)"
    port = free_ports(1)
    server = subprocess.Popen(
        [
            server_binary,
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _redis_ping(port), 10, what="redis-server answers PING")
        yield port
    finally:
        server.terminate()
        server.wait(10)


def _redis_ping(port: int) -> bool:
    with socket.create_connection((LOOPBACK, port), timeout=1) as client:
        client.sendall(b"PING\r\n")
        return client.recv(16).startswith(b"+PONG")


# Debian's chromium, driven by playwright's bundled driver (no browser download). No sandbox
# (root in CI), and nothing that would reach out to the network on its own.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# What the browser saw, for a look after a run (not kept in the repository).
SCREENSHOTS = ROOT / "tests" / ".screenshots"


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Per test: playwright's sync API runs an event loop in this thread while it is open, and
    the other tests' asyncio.run() must not find one."""
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Removes the test containers of this run that a crashed test left behind, by their name
    prefix (which holds this run's id)."""
    try:
        names = docker("ps", "-aq", "--filter", f"name={NAME_PREFIX}", check=False).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return
    if names:
        try:
            docker("rm", "-f", *names, check=False)
        except subprocess.TimeoutExpired:
            print(f"could not remove {names} within 60 s")
