"""The rendered nginx files for the defaults and a few combinations of settings, held in
tests/unit/golden/ in nginx -T's layout, so that a change to what nginx runs is a visible diff
in review. After a deliberate change: `make golden`, then read the diff."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest
from repo import template

from tornado_bundle import nginx, settings
from tornado_bundle.limits import Capacity
from tornado_bundle.names import NGINX_APP_DIR, NGINX_RUN_DIR

GOLDEN = Path(__file__).resolve().parent / "golden"
# The open-file limit and listen queue of this machine's containers (20,000; somaxconn 4096).
LIMITS = Capacity(open_files=20_000, listen_backlog=4096)
STATIC = nginx.StaticFiles(url_prefix="/static/", path="/app/static/")
# Certificate files are checked when parsed from the environment; these need not exist.
TLS = {"tls_cert_file": "/run/secrets/cert.pem", "tls_key_file": "/run/secrets/key.pem"}

CASES: dict[str, tuple[dict[str, str], dict[str, object], nginx.StaticFiles | None]] = {
    "default": ({}, {}, None),
    "weighted-diagnostics-quiet": (
        {"WORKERS": "3", "LB_METHOD": "weighted", "LB_WEIGHTS": "3,7,1", "ACCESS_LOG": "off",
         "METRICS_PORT": "0", "DIAGNOSTICS": "on"},
        {},
        None,
    ),
    "least-conn-proxies-json-static": (
        {"LB_METHOD": "least_conn", "REAL_IP_FROM": "10.0.0.0/8,192.168.1.10",
         "LOG_FORMAT": "json", "CLIENT_MAX_BODY_SIZE": "10m", "PROXY_READ_TIMEOUT": "300"},
        {},
        STATIC,
    ),
    "tls-hsts-redirect": (
        {"LB_METHOD": "uri_hash", "TLS_PORT": "8443"},
        {**TLS, "tls_hsts": True, "tls_redirect": True},
        None,
    ),
}  # fmt: skip


def dump(case: str) -> str:
    """What `nginx -T` prints of the rendered files: each file's path, then its text."""
    env, replaced, static = CASES[case]
    parsed = dataclasses.replace(settings.parse(env), **replaced)  # type: ignore[arg-type]
    files = {
        NGINX_RUN_DIR / name: text for name, text in nginx.render(template, parsed, LIMITS).items()
    }
    if static is not None:
        # What an instance writes once it has loaded an app with a static_path.
        static_conf = nginx.render_static(template, parsed, LIMITS, static)
        files[NGINX_APP_DIR / nginx.STATIC_FILES] = static_conf
    return "".join(f"# configuration file {path}:\n{text}\n" for path, text in files.items())


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_nginx_files_are_the_golden_ones(case: str) -> None:
    path = GOLDEN / f"{case}.conf"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(dump(case))
    assert path.read_text() == dump(case), f"{path.name} differs: `make golden`, then review"


def test_no_placeholder_or_flag_is_left_in_any_case() -> None:
    for case in CASES:
        assert not nginx.PLACEHOLDER.search(dump(case)), case
        assert not re.search(r"^@[?!]", dump(case), re.M), case
