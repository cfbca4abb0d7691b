"""Whole third-party servers built on Tornado, each in its own image FROM the bundle
(tests/apps/*_app), with WORKERS=2 and LB_METHOD=sticky (their state lives in one process),
driven by a real browser: Debian's chromium, through playwright's bundled driver. The page
renders, and its WebSocket carries an interaction both ways."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, WebSocket, sync_playwright

from harness import BUILDER_IMAGE, LOOPBACK, Container, docker, free_ports, running

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("image")]

APPS = Path(__file__).resolve().parents[1] / "apps"
CHROMIUM = "/usr/bin/chromium"
# What the browser saw, for a look after a run (not kept in the repository).
SCREENSHOTS = Path(__file__).resolve().parents[1] / ".screenshots"
# No sandbox (root in CI), and nothing that would reach out to the network on its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def app_image(image: str, folder: str) -> str:
    tag = f"tornado-bundle-test-{folder.replace('_', '-')}:{uuid.uuid4().hex[:8]}"
    docker(
        "build", "--quiet", f"--build-arg=BUNDLE_IMAGE={image}",
        f"--build-arg=BUNDLE_BUILDER={BUILDER_IMAGE}", f"--tag={tag}",
        "--file", str(APPS / folder / "Dockerfile"), str(APPS),
        timeout=900,
    )  # fmt: skip
    return tag


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Frames:
    """What the page's WebSockets sent and received, as the browser saw it."""

    def __init__(self, page: Page) -> None:
        self.urls: list[str] = []
        self.sent = 0
        self.received = 0
        page.on("websocket", self.opened)

    def opened(self, socket: WebSocket) -> None:
        self.urls.append(socket.url)
        socket.on("framesent", lambda _: self.count("sent"))
        socket.on("framereceived", lambda _: self.count("received"))

    def count(self, which: str) -> None:
        setattr(self, which, getattr(self, which) + 1)


def sticky(env: dict[str, str]) -> dict[str, str]:
    return {"WORKERS": "2", "LB_METHOD": "sticky", **env}


def upstreams(bundle: Container) -> set[str]:
    """The instances nginx's access log says it used (127.0.0.1:PORT)."""
    return set(
        line.split("upstream=")[1].split()[0]
        for line in bundle.logs().splitlines()
        if "upstream=" in line and "/healthz" not in line
    )


@pytest.fixture(scope="module")
def bokeh_image(image: str) -> Iterator[str]:
    tag = app_image(image, "bokeh_app")
    yield tag
    docker("image", "rm", "--force", tag, check=False)


def test_a_bokeh_server_app_renders_and_runs_its_python_callbacks_over_the_websocket(
    bokeh_image: str, browser: Browser
) -> None:
    port = free_ports(1)
    # Bokeh's own origin check, as `bokeh serve --allow-websocket-origin` sets it.
    env = sticky({"LISTEN_PORT": str(port), "BOKEH_ALLOW_WS_ORIGIN": f"{LOOPBACK}:{port}"})
    with running(env, image=bokeh_image, host_network=True) as bundle:
        page = browser.new_page()
        frames = Frames(page)
        page.goto(f"http://{LOOPBACK}:{port}/")
        button = page.get_by_role("button", name="Click")
        for _ in range(3):
            button.click()
        # Each click goes to the server's Python callback and its new text comes back.
        page.get_by_text("clicked 3 times").wait_for(timeout=10_000)
        page.screenshot(path=str(SCREENSHOTS / "bokeh.png"))
        page.close()
        assert frames.urls == [f"ws://{LOOPBACK}:{port}/ws"], frames.urls
        assert frames.sent >= 3 and frames.received >= 3, vars(frames)
        # One browser, one instance: its session lived where its WebSocket went.
        assert len(upstreams(bundle)) == 1, upstreams(bundle)
