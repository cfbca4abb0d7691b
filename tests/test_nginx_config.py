"""The effective nginx configuration of the image (`nginx -T` after the start hook rendered it),
checked by gixy, a static analyser for nginx configurations (alias traversal, header injection,
host spoofing, ...): with the defaults, with the diagnostics header, a trusted proxy and
least_conn, and with an app's static files (the example)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import IMAGE, docker

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("image")]

GIXY = Path(sys.executable).parent / "gixy"
RENDER_AND_DUMP = "/docker-entrypoint.d/10-render-config.sh >/dev/null && nginx -T 2>/dev/null"


def effective_config(image: str, env: dict[str, str]) -> str:
    options = [f"--env={key}={value}" for key, value in env.items()]
    result = docker("run", "--rm", *options, "--entrypoint", "sh", image, "-c", RENDER_AND_DUMP)
    return result.stdout


@pytest.mark.parametrize(
    "env",
    [{}, {"DIAGNOSTICS": "on", "REAL_IP_FROM": "10.0.0.0/8", "LB_METHOD": "least_conn"}],
    ids=["defaults", "diagnostics-real-ip-least-conn"],
)
def test_gixy_finds_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    check(tmp_path, effective_config(IMAGE, env))


def test_gixy_finds_nothing_with_an_app_s_static_files(tmp_path: Path, example_image: str) -> None:
    config = effective_config(example_image, {})
    assert "location ^~ /static/ {" in config
    check(tmp_path, config)


def check(tmp_path: Path, config: str) -> None:
    assert "server {" in config
    dump = tmp_path / "nginx-T.conf"
    dump.write_text(config)
    # worker_rlimit_nofile_vs_connections wants twice as many open files as connections, as if
    # every connection were proxied; an idle keep-alive client holds one file, and limits.conf
    # sizes connections to the open files actually there (README: Crowds).
    skip = "--skips=worker_rlimit_nofile_vs_connections"
    result = subprocess.run(
        [str(GIXY), skip, str(dump)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
