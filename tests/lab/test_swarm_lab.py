"""Beyond one machine: deploy/compose.yaml on a swarm of 4 engines (3 managers, 1 worker), each
its own dockerd in its own network namespace (swarm-lab/lab.sh), behind a front nginx on
127.0.0.1 that retries on another node. A rolling update, a node lost and back, a scale-up, all
under GET load through the front. Traffic goes to 127.0.0.1 and to the lab's own namespaces.

The tests run in order on one lab (module fixture): each starts from where the last left it."""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from stack import lab_stack  # swarm-lab/stack.py (conftest puts swarm-lab/ on the path)

from harness import IMAGE, RUN_ID, LoadLoop, docker, free_ports, http_get, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("image")]

ROOT = Path(__file__).resolve().parents[2]
LAB_SCRIPT = ROOT / "swarm-lab" / "lab.sh"
ARTIFACTS = ROOT / "tests" / "artifacts"
NODES = ("m1", "m2", "m3", "w1")
STACK = "tblab"
SERVICE = f"{STACK}_tornado"
MANAGERS = ("m1", "m2", "m3")
RESCHEDULE_GOAL_SECONDS = 30


@dataclass
class Lab:
    name: str
    env: dict[str, str]
    front_port: int
    figures: dict[str, float] = field(default_factory=dict)
    # The node that test_a_lost_node... lost, and the next test brings back.
    lost: str = ""

    def script(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(LAB_SCRIPT), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)  # fmt: skip

    def docker(self, node: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return docker("-H", f"unix:///run/{self.name}/{node}/docker.sock", *args, check=check)

    def healthy(self, nodes: tuple[str, ...] = NODES) -> Counter[str]:
        """Healthy task containers of the service, per node."""
        counts: Counter[str] = Counter()
        for node in nodes:
            task = f"label=com.docker.swarm.service.name={SERVICE}"
            result = self.docker(node, "ps", "-q", "--filter", task, "--filter", "health=healthy",
                                 check=False)  # fmt: skip
            counts[node] = len(result.stdout.split())
        return counts

    def front_targets(self) -> int:
        upstreams = Path(f"/run/{self.name}/front/upstreams.conf")
        return upstreams.read_text().count(" max_fails=1 ") if upstreams.exists() else 0

    def update_completed(self) -> bool:
        state = self.docker("m1", "service", "inspect", "--format", "{{.UpdateStatus.State}}",
                            SERVICE).stdout.strip()  # fmt: skip
        return state == "completed"


def stack_file(folder: Path, replicas: int) -> Path:
    """The stack as `make swarm-lab` deploys it (swarm-lab/stack.py), one replica per node."""
    path = folder / "stack.yaml"
    path.write_text(lab_stack(IMAGE, replicas))
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("the swarm lab needs root (network namespaces, a bridge, dockerd)")
    name = f"tbl{RUN_ID[:5]}"
    env = {**os.environ, "LAB": name, "LAB_SUBNET": f"10.213.{random.randrange(256)}"}
    lab = Lab(name, env, free_ports(1))
    front: subprocess.Popen[str] | None = None
    try:
        started = time.monotonic()
        up = lab.script("up", IMAGE, timeout=300)
        assert up.returncode == 0, up.stderr
        lab.figures["lab_up_seconds"] = time.monotonic() - started
        stack = stack_file(tmp_path_factory.mktemp("stack"), len(NODES))
        lab.docker("m1", "stack", "deploy", "--resolve-image", "never", "-c", str(stack), STACK)
        command = [str(LAB_SCRIPT), "front", str(lab.front_port), SERVICE, IMAGE]
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        front = subprocess.Popen(command, env=env, **quiet)  # type: ignore[call-overload]
        wait_for(
            lambda: lab.healthy() == Counter(dict.fromkeys(NODES, 1)),
            120,
            0.5,
            "a replica per node",
        )
        wait_for(lambda: serves_from_every_node(lab), 20, 0.2, "the front to reach every node")
        yield lab
    finally:
        if front is not None:
            front.terminate()
            front.wait(timeout=10)
        down = lab.script("down", timeout=120)
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / f"swarm-lab-{RUN_ID}.json").write_text(json.dumps(lab.figures, indent=2))
        print(f"swarm lab figures: {lab.figures}")
        assert down.returncode == 0, down.stderr
        # Nothing of the lab is left: namespace, interface, firewall rule, mount, process, files.
        leftovers = {
            "namespaces": subprocess.run(["ip", "netns", "list"], capture_output=True, text=True),
            "links": subprocess.run(["ip", "-o", "link"], capture_output=True, text=True),
            "rules": subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True),
            "mounts": subprocess.run(["mount"], capture_output=True, text=True),
            "processes": subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True),
        }
        for what, listing in leftovers.items():
            assert f"/run/{name}/" not in listing.stdout and f"{name}-" not in listing.stdout, what
        assert f" {name}0:" not in leftovers["links"].stdout  # the bridge
        assert not Path(f"/run/{name}").exists() and not Path(f"/var/lib/{name}").exists()


def nodes_behind_the_front(lab: Lab, requests: int) -> Counter[str]:
    """Which node answered each of `requests` GETs through the front (its address's last byte)."""
    answered: Counter[str] = Counter()
    for _ in range(requests):
        response = http_get(lab.front_port, "/")
        assert response.status == 200 and response.body == b"Hello, Tornado\n"
        address = response.headers["X-Front-Upstream"].split(", ")[-1].split(":")[0]
        answered[NODES[int(address.rsplit(".", 1)[1]) - 11]] += 1
    return answered


def serves_from_every_node(lab: Lab) -> bool:
    """40 GETs through the front reach every node. The front's target list is a file that its
    refresh loop rewrites before it reloads nginx: poll this, not the file."""
    return set(nodes_behind_the_front(lab, 40)) == set(NODES)


def test_every_node_runs_a_healthy_replica_and_serves_through_the_front(lab: Lab) -> None:
    assert lab.healthy() == Counter(dict.fromkeys(NODES, 1))
    managers = lab.docker("m1", "node", "ls", "--format", "{{.ManagerStatus}}").stdout.split()
    assert sorted(managers) == ["Leader", "Reachable", "Reachable"]
    assert serves_from_every_node(lab)


def retried_by_the_front(lab: Lab, since: str) -> int:
    """Requests the front sent to more than one node (its access log: "a, b")."""
    logs = docker("logs", "--since", since, f"{lab.name}-front").stdout
    return sum(1 for line in logs.splitlines() if ", " in line)


def test_rolling_update_start_first_across_all_nodes_fails_nothing(lab: Lab) -> None:
    since = str(int(time.time()))
    with LoadLoop(lab.front_port, clients=4) as load:
        load.run_for(1)
        started = time.monotonic()
        lab.docker("m1", "service", "update", "--detach", "--force", SERVICE)
        wait_for(lab.update_completed, 180, 0.5, "the rolling update")
        lab.figures["rolling_update_seconds"] = time.monotonic() - started
        # start-first: each new task starts beside its old one, on the least loaded zone of the
        # moment, so the spread afterwards need not be one per node.
        wait_for(lambda: sum(lab.healthy().values()) == len(NODES), 60, 0.5, "all healthy")
        load.run_for(1)
    assert load.result.failures == [], load.result.failures[:5]
    lab.figures["rolling_update_requests"] = load.result.ok
    lab.figures["rolling_update_retried_by_front"] = retried_by_the_front(lab, since)
    assert load.result.ok > 500


def node_to_lose(lab: Lab) -> str:
    """A manager that is not the leader and runs a replica (so that losing it tests both the
    quorum and the rescheduling); the worker when neither such manager runs one."""
    healthy = lab.healthy()
    candidates = [node for node in MANAGERS[1:] if healthy[node]] or ["w1"]
    return max(candidates, key=lambda node: healthy[node])


def test_a_lost_node_is_replaced_on_the_others_and_no_request_fails(lab: Lab) -> None:
    lost = lab.lost = node_to_lose(lab)
    survivors = tuple(node for node in NODES if node != lost)
    lab.figures["node_lost_replicas"] = lab.healthy()[lost]
    since = str(int(time.time()))
    with LoadLoop(lab.front_port, clients=4) as load:
        load.run_for(1)
        lost_at = time.monotonic()
        assert lab.script("kill", lost).returncode == 0
        wait_for(lambda: sum(lab.healthy(survivors).values()) == len(NODES), 90, 0.5,
                 "its replica healthy on another node")  # fmt: skip
        rescheduled = time.monotonic() - lost_at
        load.run_for(2)
    lab.figures["node_lost_replaced_seconds"] = rescheduled
    lab.figures["node_lost_requests"] = load.result.ok
    lab.figures["node_lost_retried_by_front"] = retried_by_the_front(lab, since)
    assert load.result.failures == [], load.result.failures[:5]
    # The quorum holds (at least two managers of three): the swarm answers, sees the node down.
    states = lab.docker("m1", "node", "ls", "--format", "{{.Status}} {{.ManagerStatus}}").stdout
    assert sum(1 for line in states.splitlines() if line.startswith("Down")) == 1, states
    assert rescheduled <= RESCHEDULE_GOAL_SECONDS, rescheduled


def test_the_node_returns_and_an_update_rebalances(lab: Lab) -> None:
    returned_at = time.monotonic()
    revive = lab.script("revive", lab.lost)
    assert revive.returncode == 0, revive.stderr

    def all_ready() -> bool:
        states = lab.docker("m1", "node", "ls", "--format", "{{.Status}}").stdout.split()
        return states == ["Ready"] * len(NODES)

    wait_for(all_ready, 120, 0.5, "the node to rejoin")
    lab.figures["node_rejoined_seconds"] = time.monotonic() - returned_at
    assert lab.healthy()[lab.lost] == 0  # Swarm does not move running tasks back by itself
    with LoadLoop(lab.front_port, clients=2) as load:
        lab.docker("m1", "service", "update", "--detach", "--force", SERVICE)
        wait_for(lab.update_completed, 180, 0.5, "the rebalancing update")
        wait_for(lambda: sum(lab.healthy().values()) == len(NODES), 60, 0.5, "all healthy")
    assert load.result.failures == [], load.result.failures[:5]
    # Where the new tasks go is Swarm's choice: start-first places each beside its old one on
    # the least loaded zone of that moment, and a returned node may still count its old tasks.
    # In 4 runs the returned node got 1, 1, 1 and 0 replicas: recorded, not asserted.
    lab.figures["after_rebalance"] = dict(lab.healthy())  # type: ignore[assignment]


def test_scale_from_one_to_three_replicas_per_node(lab: Lab) -> None:
    started = time.monotonic()
    lab.docker("m1", "service", "scale", "--detach", f"{SERVICE}={3 * len(NODES)}")
    wait_for(lambda: sum(lab.healthy().values()) == 3 * len(NODES), 180, 0.5, "12 healthy")
    lab.figures["scale_4_to_12_seconds"] = time.monotonic() - started
    spread = lab.healthy()
    lab.figures["after_scale"] = dict(spread)  # type: ignore[assignment]
    # The placement preference spreads the new tasks over the zones (a node each here).
    assert max(spread.values()) - min(spread.values()) <= 1, spread
    wait_for(lambda: lab.front_targets() == 3 * len(NODES), 10, 0.2, "the front to list them")
    wait_for(lambda: serves_from_every_node(lab), 20, 0.2, "the front to reach every node")
