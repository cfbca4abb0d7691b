"""Whole third-party servers built on Tornado, each in its own image FROM the bundle
(tests/apps/bokeh_app, jupyter_app), with WORKERS=2 and LB_METHOD=sticky (their state lives in
one process), driven by a real browser: Debian's chromium, through playwright's bundled driver.
The page renders, and its WebSocket carries an interaction both ways."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from conftest import SCREENSHOTS
from playwright.sync_api import Browser, Page, WebSocket

from harness import LOOPBACK, Container, app_image, docker, free_ports, running

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("image")]


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
    """The instances that nginx's access log says served the browser (its user agent; not the
    test's own requests, nor what nginx served itself)."""
    used = {
        line.split("upstream=")[1].split()[0]
        for line in bundle.logs().splitlines()
        if "HeadlessChrome" in line and "upstream=" in line
    }
    return used - {"-"}


@pytest.fixture(scope="module")
def bokeh_image() -> Iterator[str]:
    tag = app_image("bokeh_app")
    yield tag
    docker("image", "rm", "--force", tag, check=False)


def test_a_bokeh_server_app_renders_and_runs_its_python_callbacks_over_the_websocket(
    bokeh_image: str, browser: Browser
) -> None:
    port = free_ports(1)
    # Bokeh's own origin check, as `bokeh serve --allow-websocket-origin` sets it.
    origin = f"{LOOPBACK}:{port}"
    env = sticky(
        {"APP": "bokeh_app:make_app", "LISTEN_PORT": str(port), "BOKEH_ALLOW_WS_ORIGIN": origin}
    )
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


@pytest.fixture(scope="module")
def jupyter_image() -> Iterator[str]:
    tag = app_image("jupyter_app")
    yield tag
    docker("image", "rm", "--force", tag, check=False)


def empty_notebook(base: str, token: str, name: str) -> None:
    """An empty Python notebook, made through Jupyter's own contents API."""
    notebook = {
        "type": "notebook",
        "content": {
            "cells": [{"cell_type": "code", "id": "probe", "source": "", "metadata": {},
                       "outputs": [], "execution_count": None}],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                        "language": "python"}},
            "nbformat": 4,
            "nbformat_minor": 5,
        },
    }  # fmt: skip
    request = urllib.request.Request(
        f"{base}/api/contents/{name}?token={token}",
        data=json.dumps(notebook).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 201
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{error}: {error.read()[:500]!r}") from None


def test_jupyterlab_runs_a_cell_on_its_kernel_and_shuts_the_kernel_down_at_stop(
    jupyter_image: str, browser: Browser
) -> None:
    token = uuid.uuid4().hex
    env = sticky({"APP": "jupyter_app:make_app", "JUPYTER_TOKEN": token})
    with running(env, image=jupyter_image, host_network=True) as bundle:
        base = f"http://{LOOPBACK}:{bundle.port}"
        empty_notebook(base, token, "probe.ipynb")
        page = browser.new_page()
        frames = Frames(page)
        page.goto(f"{base}/lab/tree/probe.ipynb?token={token}")
        editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
        editor.wait_for(timeout=60_000)
        # The kernel has started and its WebSocket is up (JupyterLab's status bar says so).
        page.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=60_000)
        editor.click()
        page.keyboard.type("6 * 7")
        page.keyboard.press("Shift+Enter")
        output = page.locator(".jp-OutputArea-output").first
        output.wait_for(timeout=30_000)
        assert output.inner_text().strip() == "42"
        page.screenshot(path=str(SCREENSHOTS / "jupyterlab.png"))
        page.close()
        assert any("/api/kernels/" in url and "/channels" in url for url in frames.urls), (
            frames.urls
        )
        assert frames.sent and frames.received
        assert len(upstreams(bundle)) == 1, upstreams(bundle)
        # The app's own stop after the drain: Jupyter shuts its kernel down.
        docker("stop", bundle.name, timeout=30)
        assert "Kernel shutdown:" in bundle.logs(), bundle.logs()[-3000:]
