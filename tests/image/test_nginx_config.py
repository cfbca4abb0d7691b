"""The effective nginx configuration of the image (`nginx -T` after the start hook rendered it,
and the app's static files as an instance adds them):
the golden files of tests/unit/golden are what the image really renders, and gixy, a static
analyser for nginx configurations (alias traversal, header injection, host spoofing, ...), finds
nothing with the defaults, with the diagnostics header, a trusted proxy and least_conn, and with
an app's static files (the example)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import IMAGE, docker, running

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("image")]

GIXY = Path(sys.executable).parent / "gixy"
RENDER_AND_DUMP = "/docker-entrypoint.d/10-render-config.sh >/dev/null && nginx -T 2>/dev/null"


GOLDEN = Path(__file__).resolve().parents[1] / "unit" / "golden"


def effective_config(image: str, env: dict[str, str], *options: str) -> str:
    env_options = [f"--env={key}={value}" for key, value in env.items()]
    result = docker(
        "run", "--rm", *env_options, *options, "--entrypoint", "sh", image, "-c", RENDER_AND_DUMP
    )
    return result.stdout


def sections(dump: str) -> dict[str, str]:
    """`nginx -T`'s output (or a golden file) as file name -> text."""
    parts = re.split(r"^# configuration file (\S+):\n", dump, flags=re.M)
    return {name: text.rstrip("\n") for name, text in zip(parts[1::2], parts[2::2], strict=True)}


def test_the_image_renders_the_golden_default() -> None:
    # The limits the golden files were rendered with (tests/unit/test_golden.py LIMITS).
    limits = ("--ulimit=nofile=20000:20000", "--sysctl=net.core.somaxconn=4096")
    effective = sections(effective_config(IMAGE, {}, *limits))
    golden = sections((GOLDEN / "default.conf").read_text())
    assert golden and {name: effective.get(name) for name in golden} == golden


@pytest.mark.parametrize(
    "env",
    [{}, {"DIAGNOSTICS": "on", "REAL_IP_FROM": "10.0.0.0/8", "LB_METHOD": "least_conn"}],
    ids=["defaults", "diagnostics-real-ip-least-conn"],
)
def test_gixy_finds_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    check(tmp_path, effective_config(IMAGE, env))


def test_gixy_finds_nothing_with_an_app_s_static_files(tmp_path: Path, example_image: str) -> None:
    # An instance writes the static-files location as it loads the app: a running bundle's.
    with running(image=example_image) as bundle:
        config = bundle.exec("nginx", "-T").stdout
    assert "# configuration file /tmp/nginx/app.d/static-files.conf:" in config
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
