"""Shared fixtures. Integration tests need a Docker engine and the image: without them they fail
with the reason (never skip), so a run cannot go green by testing nothing."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import BUILDER_IMAGE, IMAGE, NAME_PREFIX, RUN_ID, docker

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
