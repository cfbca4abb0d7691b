"""Where shell, Supervisor's config, nginx.conf, the Dockerfile and the manifests must spell a
fact that tornado_bundle/names.py or settings.py owns, this test reads every copy."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import yaml

from tornado_bundle import names, settings

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "container").rglob("*")) + [ROOT / "container" / "entrypoint.sh"]
DEFAULTS = settings.defaults()


def text(*parts: str) -> str:
    return ROOT.joinpath(*parts).read_text()


def test_every_run_path_in_the_shell_scripts_is_one_names_py_has() -> None:
    known = {
        str(path)
        for path in (
            names.RUN_DIR,
            names.INSTANCES_FILE,
            names.SHELL_SETTINGS_FILE,
            names.UNRESPONSIVE_FILE,
        )
    }
    scripts = [path for path in (ROOT / "container").rglob("*") if path.is_file()]
    found = {
        match
        for path in scripts
        if not path.name.endswith((".template", ".conf"))
        for match in re.findall(r"/tmp/tornado-bundle[A-Za-z0-9_./-]*", path.read_text())
    }
    assert found and found <= known, found - known
    # The healthcheck builds the report's path from the run directory.
    healthcheck = text("container", "bin", "healthcheck")
    assert "report=$run/unresponsive" in healthcheck
    assert names.UNRESPONSIVE_FILE == names.RUN_DIR / "unresponsive"


def test_nginx_conf_writes_only_below_the_rendered_files_folder() -> None:
    paths = re.findall(r"(/tmp/[A-Za-z0-9_./-]+)", text("container", "nginx", "nginx.conf"))
    assert paths and all(Path(path).parent == names.NGINX_RUN_DIR for path in paths), paths


def test_supervisord_conf_spells_the_names_and_expands_what_the_hook_writes() -> None:
    conf = configparser.RawConfigParser()
    conf.read_string(text("supervisord.conf"))
    assert conf.get(f"group:{names.GROUP}", "programs") == names.PROGRAM_NAME
    program = f"program:{names.PROGRAM_NAME}"
    assert conf.get(program, "process_name") == "%(program_name)s-%(process_num)d"
    assert names.process_name(8000) == f"{names.PROGRAM_NAME}-8000"
    assert conf.has_section(f"program:{names.NGINX_PROCESS}")
    expanded = set(re.findall(r"%\(ENV_([A-Z_]+)\)s", text("supervisord.conf")))
    written = set(re.findall(r"^([A-Z_]+)=", settings.shell_lines(DEFAULTS), re.M))
    assert expanded and expanded <= written, expanded - written


def test_the_shell_settings_are_the_parsed_ones() -> None:
    lines = settings.shell_lines(settings.parse({"WORKERS": "3", "LISTEN_PORT": "8080"}))
    assert lines.splitlines() == [
        "BUNDLE_WORKERS='3'",
        "BUNDLE_BASE_PORT='8000'",
        "BUNDLE_LISTEN_PORT='8080'",
        "BUNDLE_STARTUP_TIMEOUT='60'",
        "BUNDLE_FILE_SETTINGS='TLS_CERT_FILE TLS_KEY_FILE'",
    ]


def test_the_dockerfile_repeats_no_default_and_exposes_the_default_ports() -> None:
    dockerfile = text("Dockerfile")
    env_lines = re.findall(r"^(?:ENV|\s+)\s*([A-Z_]+)=", dockerfile, re.M)
    assert env_lines, "no ENV in the Dockerfile"
    assert not set(env_lines) & set(settings.BY_NAME), set(env_lines) & set(settings.BY_NAME)
    exposed = re.search(r"^EXPOSE (.*)$", dockerfile, re.M)
    assert exposed
    ports = [DEFAULTS.listen_port, DEFAULTS.tls_port, DEFAULTS.metrics_port]
    assert exposed.group(1).split() == [str(port) for port in ports]


def test_compose_and_kubernetes_scrape_the_default_metrics_port() -> None:
    compose = yaml.safe_load(text("deploy", "compose.yaml"))
    labels = next(iter(compose["services"].values()))["labels"]
    assert labels["prometheus.io/port"] == str(DEFAULTS.metrics_port)
    deployment = text("deploy", "kubernetes", "deployment.yaml")
    assert f'prometheus.io/port: "{DEFAULTS.metrics_port}"' in deployment


def test_the_health_path_is_the_one_every_probe_asks_for() -> None:
    assert f"GET {names.HEALTH_PATH} HTTP/1.0" in text("container", "bin", "healthcheck")
    assert "    http@HEALTH_PATH@ 0;" in text("tornado.conf")


def test_every_start_up_grace_is_startup_timeout_s_default() -> None:
    seconds = settings.defaults().startup_timeout
    assert f"--start-period={seconds}s " in text("Dockerfile")
    assert f"      start_period: {seconds}s\n" in text("deploy", "compose.yaml")


def test_the_drop_in_folders_are_the_ones_nginx_includes_and_the_image_makes() -> None:
    assert f"    include {names.NGINX_CONF_D}/*.conf;\n" in text("container", "nginx", "nginx.conf")
    assert "    include @SERVER_D@/*.conf;\n" in text("tornado.conf")
    assert f"mkdir {names.NGINX_CONF_D} {names.NGINX_SERVER_D};" in text("Dockerfile")


def test_every_mutation_still_applies_once() -> None:
    """tests/mutate.py: each change's text is in its file exactly once, or it proves nothing."""
    import mutate  # tests/mutate.py (tests/ is on the path)

    for number, mutation in enumerate(mutate.MUTATIONS, 1):
        found = text(mutation.path).count(mutation.before)
        assert found == 1, f"mutation {number} ({mutation.what}): {found} times in {mutation.path}"


def test_the_prestart_hook_runs_the_script_names_py_names() -> None:
    assert f"script={names.PRESTART}\n" in text("container", "entrypoint.d", "40-prestart.sh")
