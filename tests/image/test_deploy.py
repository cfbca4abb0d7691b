"""Beyond one machine: the Kubernetes manifests against the API schema (offline), and
deploy/compose.yaml as a Swarm stack on a single-node swarm that the test creates and removes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from stack import lab_stack  # swarm-lab/stack.py (conftest puts swarm-lab/ on the path)

from harness import IMAGE, docker, http_get, wait_for
from tornado_bundle import settings

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
COMPOSE = ROOT / "deploy" / "compose.yaml"


def manifest(kind: str) -> dict:
    documents = [yaml.safe_load(path.read_text()) for path in KUBERNETES]
    return next(doc for doc in documents if doc["kind"] == kind)


def test_every_manifest_is_valid_against_the_kubernetes_schema() -> None:
    validator = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run(
        [str(validator), "--strict", *map(str, KUBERNETES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(KUBERNETES) == 3


def test_probes_and_ports_match_the_image() -> None:
    pod = manifest("Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {
        "http": int(env["LISTEN_PORT"]),
        "https": int(env["TLS_PORT"]),
        "metrics": int(env["METRICS_PORT"]),
    }
    annotations = manifest("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == env["METRICS_PORT"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    # The start-up grace is STARTUP_TIMEOUT's default, the instances' own.
    startup = container["startupProbe"]
    seconds = startup["periodSeconds"] * startup["failureThreshold"]
    assert seconds == settings.defaults().startup_timeout
    service_ports = {
        port["name"]: port["targetPort"] for port in manifest("Service")["spec"]["ports"]
    }
    assert service_ports == {"http": "http", "https": "https"}  # metrics: per pod, not balanced
    assert pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m.get("readOnly", False) for m in container["volumeMounts"]}
    assert mounts == {"/tmp": False, "/run/secrets/tls": True}
    # nginx (4 s) + Tornado's drain (3 s) must fit in the grace period.
    assert pod["terminationGracePeriodSeconds"] >= 10
    assert manifest("Deployment")["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# --- Swarm -----------------------------------------------------------------------------------


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()


@pytest.fixture
def swarm() -> Iterator[None]:
    """A single-node swarm for the test; one that existed before is left as it was."""
    created = swarm_state() != "active"
    if created:
        docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        yield
    finally:
        if created:
            docker("swarm", "leave", "--force", check=False)
            # swarm init created it; leave the engine's networks as they were.
            docker("network", "rm", "docker_gwbridge", check=False)


def stack_file(tmp_path: Path) -> Path:
    """deploy/compose.yaml as the swarm lab deploys it (swarm-lab/stack.py: host-mode ports, a
    random host port per task), with the file's own replica count."""
    replicas = yaml.safe_load(COMPOSE.read_text())["services"]["tornado"]["deploy"]["replicas"]
    path = tmp_path / "compose.yaml"
    path.write_text(lab_stack(IMAGE, replicas))
    return path


def task_containers(service: str) -> list[dict]:
    ids = docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}").stdout
    if not ids.split():
        return []
    return json.loads(docker("inspect", *ids.split()).stdout)


def healthy_replicas(service: str, replicas: int) -> list[dict] | None:
    containers = task_containers(service)
    healthy = [c for c in containers if c["State"].get("Health", {}).get("Status") == "healthy"]
    return healthy if len(healthy) == replicas == len(containers) else None


def host_port(container: dict) -> int:
    return int(container["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"])


@pytest.mark.docker
@pytest.mark.usefixtures("image", "swarm")
def test_swarm_stack_runs_scales_and_rolls_out_start_first(tmp_path: Path) -> None:
    assert shutil.which("docker")
    stack = "tornado-bundle-test-" + uuid.uuid4().hex[:8]
    service = f"{stack}_tornado"
    try:
        docker(
            "stack", "deploy", "--resolve-image", "never", "-c", str(stack_file(tmp_path)), stack
        )
        replicas = wait_for(lambda: healthy_replicas(service, 2), 60, 0.5, "2 healthy replicas")
        for container in replicas:  # type: ignore[union-attr]
            assert http_get(host_port(container)).body == b"Hello, Tornado\n"
            assert container["HostConfig"]["ReadonlyRootfs"] is True
            assert container["HostConfig"]["CapDrop"] == ["ALL"]
            assert [m["Target"] for m in container["HostConfig"]["Mounts"]] == ["/tmp"]

        docker("service", "scale", "--detach", f"{service}=3")
        wait_for(lambda: healthy_replicas(service, 3), 60, 0.5, "3 healthy replicas")

        before = {c["Id"] for c in task_containers(service)}
        docker("service", "update", "--detach", "--force", service, timeout=30)
        wait_for(
            lambda: (
                docker(
                    "service", "inspect", "--format", "{{.UpdateStatus.State}}", service
                ).stdout.strip()
                == "completed"
            ),
            120,
            0.5,
            "the rolling update to complete",
        )
        replicas = wait_for(lambda: healthy_replicas(service, 3), 30, 0.5, "3 healthy replicas")
        assert not before & {c["Id"] for c in replicas}  # type: ignore[union-attr]
        spec = json.loads(docker("service", "inspect", service).stdout)[0]["Spec"]
        assert spec["UpdateConfig"]["Order"] == "start-first"
        for container in replicas:  # type: ignore[union-attr]
            assert http_get(host_port(container)).status == 200
    finally:
        docker("stack", "rm", stack, check=False)
        wait_for(lambda: not task_containers(service), 60, 0.5, "the stack's containers to go")
        networks = docker("network", "ls", "-q", "--filter", f"name={stack}_").stdout.split()
        if networks:
            wait_for(
                lambda: (
                    docker("network", "rm", *networks, check=False).returncode == 0
                    or not docker(
                        "network", "ls", "-q", "--filter", f"name={stack}_"
                    ).stdout.strip()
                ),
                30,
                0.5,
                "the stack's network to go",
            )
