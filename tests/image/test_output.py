"""Nobody reading the container's output never stops the bundle serving: `docker run` attached,
its output piped to a reader that stops reading (a paused terminal, a blocking log driver), for
a minute of load; then the reader resumes and so does the output, with one line saying how
much was dropped meanwhile."""

from __future__ import annotations

import re
import subprocess
import threading
import uuid

import pytest

from harness import (
    IMAGE,
    NAME_PREFIX,
    Container,
    LoadLoop,
    docker,
    free_ports,
    http_get,
    remove,
    wait_for,
)

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("image")]

LOAD_SECONDS = 60


def dropped_lines(metrics_port: int) -> float:
    text = http_get(metrics_port, "/metrics").body.decode()
    match = re.search(r"^tornado_bundle_log_lines_dropped_total (\S+)$", text, re.M)
    assert match, text[:500]
    return float(match.group(1))


def test_an_unread_output_drops_old_lines_and_never_stops_serving() -> None:
    listen, metrics_port = free_ports(1), free_ports(1)
    base = free_ports(2)
    name = NAME_PREFIX + uuid.uuid4().hex[:10]
    env = {"LISTEN_PORT": listen, "INSTANCE_BASE_PORT": base, "METRICS_PORT": metrics_port}
    # Attached, as `docker run` in a terminal: its output is this pipe, which nobody reads.
    attached = subprocess.Popen(
        ["docker", "run", "--rm", "--name", name, "--network=host",
         *(f"--env={key}={value}" for key, value in env.items()), IMAGE],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    bundle = Container(name, listen, 80, base_port=base)
    output: list[bytes] = []
    # Started when the reader comes back (or at the end whatever happens, so that the docker
    # CLI can finish and the container can be removed).
    reader = threading.Thread(
        target=lambda: output.extend(iter(lambda: attached.stdout.read1(65536), b"")),  # type: ignore[union-attr]
        daemon=True,
    )
    try:
        wait_for(lambda: http_get(listen, "/", timeout=1).status == 200, 20, what="serving")
        bundle.wait_every_instance_healthy()
        pids = bundle.wait_running("nginx", *bundle.instances)
        with LoadLoop(listen, clients=4) as load:
            load.run_for(LOAD_SECONDS - 10)
            before_last_window = load.result.ok
            load.run_for(10)
        result = load.result
        dropped = dropped_lines(metrics_port)
        last = result.ok - before_last_window
        print(f"unread output: {result.ok} GETs ok in {LOAD_SECONDS} s, {last} in the last 10 s,"
              f" {dropped:.0f} lines dropped")  # fmt: skip
        assert result.failures == [], result.failures[:5]
        assert last > 1000, "the last 10 s served almost nothing"
        assert dropped > 0, "the output never stalled: no proof here"
        assert bundle.supervisor_status() == pids
        # The reader comes back: the output flows again, and says what it dropped.
        reader.start()
        marker = f"/after-the-stall-{uuid.uuid4().hex[:8]}"
        http_get(listen, marker)

        def resumed() -> bool:
            seen = b"".join(output)
            return b"line(s) of output dropped" in seen and marker.encode() in seen

        wait_for(resumed, 30, 0.2, "the output to resume with the note")
    finally:
        if reader.ident is None:
            reader.start()
        remove(name)
        attached.wait(timeout=30)
    assert docker("ps", "-aq", "--filter", f"name={name}").stdout.strip() == ""
