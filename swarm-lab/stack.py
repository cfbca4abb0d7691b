"""Writes deploy/compose.yaml as the swarm lab deploys it, to stdout:

    python swarm-lab/stack.py IMAGE REPLICAS > stack.yaml

Only what the lab needs differs: the image, the replica count, and the HTTP port published in
host mode on a random port per task (Swarm's routing mesh needs IPVS, which this kernel may lack;
a random port lets a node run several replicas; the lab's front finds them). Everything else is
deploy/compose.yaml's: the update order, health check, limits, placement preference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parent.parent / "deploy" / "compose.yaml"


def lab_stack(image: str, replicas: int) -> str:
    compose = yaml.safe_load(COMPOSE.read_text())
    service = compose["services"]["tornado"]
    service["image"] = image
    service["ports"] = [{"target": 80, "protocol": "tcp", "mode": "host"}]
    service["deploy"]["replicas"] = replicas
    return yaml.safe_dump(compose)


if __name__ == "__main__":
    sys.stdout.write(lab_stack(sys.argv[1], int(sys.argv[2])))
