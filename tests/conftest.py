"""Shared fixtures. Integration tests need a Docker engine and the image: without them they fail
with the reason (never skip), so a run cannot go green by testing nothing."""

from __future__ import annotations

import subprocess

import pytest

from bundle import IMAGE, NAME_PREFIX, docker


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


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Removes any test container that a crashed test left behind, by its name prefix."""
    try:
        names = docker("ps", "-aq", "--filter", f"name={NAME_PREFIX}", check=False).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return
    if names:
        docker("rm", "-f", *names, check=False)
