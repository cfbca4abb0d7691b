"""`make bench`: the bundle measured side by side with the seed's setup, Tornado alone, Tornado's
multi-process mode and nginx answering by itself, on the same image, machine and load.

All contenders run at once, each published on 127.0.0.1 only; the load (wrk, or a Python
fallback) goes to one at a time, alternating round by round, and the median of the rounds is
reported. Prints a markdown table and writes it, with a PNG chart, to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
LOOPBACK = "127.0.0.1"
NAME_PREFIX = "tornado-bundle-bench-"


@dataclass
class Contender:
    name: str
    run_args: list[str]
    port: int
    key: str
    container: str = ""
    host_port: int = 0
    rounds: list[dict[str, float]] = field(default_factory=list)
    memory_mib: float = 0.0
    # What the load asks for, and whether the contender runs on the host network (no
    # docker-proxy: nginx and the instances on free 127.0.0.1 ports).
    path: str = "/"
    host_network: bool = False


@dataclass
class Load:
    seconds: int
    connections: int


def docker(*args: str, check: bool = True) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"bench: docker {' '.join(args[:3])} failed: {result.stderr.strip()}")
    return result.stdout


STATIC_FILE = "/static/10k.txt"


def bench_app_dir() -> Path:
    """A folder to mount on /app: bench_app.py as app.py, and the 10 KB static file."""
    folder = Path(tempfile.mkdtemp(prefix="tornado-bundle-bench-"))
    (folder / "static").mkdir()
    (folder / "app.py").write_text((BENCH / "bench_app.py").read_text())
    line = "Static file served by the bench, ten kilobytes in all.\n"
    (folder / "static" / "10k.txt").write_text((line * 200)[:10240])
    for path in (folder, folder / "static"):
        path.chmod(0o755)  # readable by the image's user (10001)
    return folder


def contenders(image: str, seed_image: str, app_dir: Path) -> list[Contender]:
    mount = f"--volume={BENCH}:/bench:ro"
    alone = [mount, "--entrypoint", "python", image, "/bench/tornado_alone.py"]
    app = [f"--volume={app_dir}:/app:ro", "--env=APP=app:make_app"]
    return [
        Contender("bundle: nginx -> 2 Tornado", [image], 80, "bundle"),
        Contender("seed setup: nginx -> 2 Tornado", [seed_image], 80, "seed"),
        Contender("Tornado alone, 1 process", [*alone, "1"], 8000, "alone1"),
        Contender("Tornado fork_processes(2)", [*alone, "2"], 8000, "fork2"),
        Contender(
            "nginx return 200 (ceiling)",
            [mount, "--entrypoint", "nginx", image, "-c", "/bench/ceiling.conf"],
            80,
            "ceiling",
        ),
        Contender("bundle, WORKERS=1", ["--env=WORKERS=1", image], 80, "workers1"),
        Contender("bundle, WORKERS=4", ["--env=WORKERS=4", image], 80, "workers4"),
        Contender(
            "static 10 KB: nginx in the bundle (host network)",
            [*app, image],
            0,
            "static_nginx",
            path=STATIC_FILE,
            host_network=True,
        ),
        Contender(
            "static 10 KB: Tornado StaticFileHandler alone (host network)",
            [*app, *alone, "1"],
            0,
            "static_tornado",
            path=STATIC_FILE,
            host_network=True,
        ),
    ]


def get_status(port: int) -> int:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=2)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def wait_for_200(port: int, timeout: float = 30) -> float:
    """Seconds until GET / answers 200 (polling every 10 ms)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if get_status(port) == 200:
                return time.monotonic() - started
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.01)
    raise SystemExit(f"bench: nothing answered 200 on 127.0.0.1:{port} within {timeout}s")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def start(contender: Contender) -> None:
    contender.container = NAME_PREFIX + uuid.uuid4().hex[:8]
    if contender.host_network:
        contender.host_port = free_port()
        # The bundle: nginx on the port, its instances on the next two. Tornado alone: its
        # command's last words are "1 PORT ADDRESS".
        network = [
            "--network=host",
            f"--env=LISTEN_PORT={contender.host_port}",
            f"--env=INSTANCE_BASE_PORT={free_port()}",
        ]
        arguments = list(contender.run_args)
        if "/bench/tornado_alone.py" in arguments:
            arguments += [str(contender.host_port), LOOPBACK]
        docker("run", "--detach", "--name", contender.container, *network, *arguments)
    else:
        docker(
            "run",
            "--detach",
            "--name",
            contender.container,
            f"--publish={LOOPBACK}:0:{contender.port}",
            *contender.run_args,
        )
        published = docker("port", contender.container, f"{contender.port}/tcp")
        contender.host_port = int(re.search(r"127\.0\.0\.1:(\d+)", published).group(1))  # type: ignore[union-attr]
    wait_for_200(contender.host_port)


def container_cpu_ns(name: str) -> int:
    """CPU time the container's processes used, from its cgroup (v1 or v2)."""
    full_id = docker("inspect", "--format", "{{.Id}}", name).strip()
    candidates = [
        Path(f"/sys/fs/cgroup/cpuacct/docker/{full_id}/cpuacct.usage"),
        Path(f"/sys/fs/cgroup/system.slice/docker-{full_id}.scope/cpu.stat"),
        Path(f"/sys/fs/cgroup/docker/{full_id}/cpu.stat"),
    ]
    for path in candidates:
        if path.name == "cpuacct.usage" and path.exists():
            return int(path.read_text())
        if path.exists():
            usage = re.search(r"usage_usec (\d+)", path.read_text())
            return int(usage.group(1)) * 1000  # type: ignore[union-attr]
    raise SystemExit(f"bench: no cgroup CPU accounting found for {name}")


def cpu_ticks_by_process(name: str) -> dict[str, int]:
    """CPU time (clock ticks) of each process in the container, keyed by 'pid command'."""
    script = (
        'for p in /proc/[0-9]*; do echo "${p#/proc/} $(cut -d" " -f14,15 $p/stat) '
        '$(tr "\\0" " " <$p/cmdline | cut -c1-48)"; done 2>/dev/null'
    )
    ticks = {}
    for line in docker("exec", name, "sh", "-c", script).splitlines():
        pid, user, system, *command = line.split()
        ticks[f"{pid} {' '.join(command)}"] = int(user) + int(system)
    return ticks


def where_the_cpu_goes(contender: Contender, load: Load) -> list[tuple[str, float]]:
    """µs of CPU per request for each process, over one more round of load."""
    before = cpu_ticks_by_process(contender.container)
    requests = measure(contender, load)["requests"]
    after = cpu_ticks_by_process(contender.container)
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    shares = [
        (key.split(" ", 1)[1], (after[key] - before[key]) * tick_us / requests)
        for key in after
        if key in before and after[key] > before[key]
    ]
    return sorted(shares, key=lambda share: -share[1])


def memory_mib(name: str) -> float:
    usage = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", name).split("/")[0]
    number, unit = re.match(r"\s*([\d.]+)\s*(\w+)", usage).groups()  # type: ignore[union-attr]
    return float(number) * {"B": 1 / 2**20, "KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[unit]


def run_wrk(port: int, load: Load, path: str = "/") -> dict[str, float]:
    output = subprocess.run(
        [
            "wrk",
            "--threads",
            "1",
            "--connections",
            str(load.connections),
            "--duration",
            f"{load.seconds}s",
            "--latency",
            f"http://{LOOPBACK}:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx_match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    non_2xx = int(non_2xx_match.group(1)) if non_2xx_match else 0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    return {
        "requests": requests,
        # Only successful answers count: a contender that answers 502 fast must not win.
        "rps": rps * (requests - non_2xx) / max(requests, 1),
        "p50_ms": _wrk_latency(output, "50%"),
        "p99_ms": _wrk_latency(output, "99%"),
        "errors": errors + non_2xx,
    }


def _wrk_latency(output: str, percentile: str) -> float:
    value, unit = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_python_load(port: int, load: Load, path: str = "/") -> dict[str, float]:
    """Fallback when wrk is missing: keep-alive clients in threads (far slower than wrk)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + load.seconds

    def client() -> None:
        connection = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
        mine: list[float] = []
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                connection.close()
                ok = False
            if ok:
                mine.append(time.monotonic() - started)
            else:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(load.connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    return {
        "requests": len(latencies) + errors[0],
        "rps": len(latencies) / load.seconds,
        "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else 0.0,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0,
        "errors": errors[0],
    }


def measure(contender: Contender, load: Load) -> dict[str, float]:
    generate = run_wrk if shutil.which("wrk") else run_python_load
    before = container_cpu_ns(contender.container)
    result = generate(contender.host_port, load, contender.path)
    used_ns = container_cpu_ns(contender.container) - before
    result["cpu_us_per_request"] = used_ns / 1000 / max(result["requests"], 1)
    return result


WEBSOCKET_CLIENTS = 16


async def _echo_round_trips(port: int, seconds: float) -> int:
    from websockets.asyncio.client import connect

    deadline = time.monotonic() + seconds
    done = [0]

    async def client() -> None:
        async with connect(f"ws://{LOOPBACK}:{port}/ws", compression=None) as socket_:
            while time.monotonic() < deadline:
                await socket_.send("ping")
                await socket_.recv()
                done[0] += 1

    await asyncio.gather(*(client() for _ in range(WEBSOCKET_CLIENTS)))
    return done[0]


def websocket_rate(contender: Contender, seconds: float) -> dict[str, float]:
    """WebSocket echo round trips per second, WEBSOCKET_CLIENTS connections each sending the
    next message when the last one came back, and the container's CPU per round trip."""
    before = container_cpu_ns(contender.container)
    round_trips = asyncio.run(_echo_round_trips(contender.host_port, seconds))
    used_ns = container_cpu_ns(contender.container) - before
    return {"rate": round_trips / seconds, "cpu_us": used_ns / 1000 / max(round_trips, 1)}


def median(contender: Contender, metric: str) -> float:
    return statistics.median(r[metric] for r in contender.rounds)


def cold_starts(image: str, times: int) -> list[float]:
    """`docker run` until the first 200, `times` times (the engine's own start-up included)."""
    seconds = []
    for _ in range(times):
        name = NAME_PREFIX + uuid.uuid4().hex[:8]
        started = time.monotonic()
        try:
            docker("run", "--detach", "--name", name, f"--publish={LOOPBACK}:0:80", image)
            port = int(docker("port", name, "80/tcp").split(":")[-1])
            wait_for_200(port)
            seconds.append(time.monotonic() - started)
        finally:
            docker("rm", "--force", name, check=False)
    return seconds


def image_mb(image: str) -> float:
    return int(docker("image", "inspect", "--format", "{{.Size}}", image)) / 1e6


def machine() -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        model = found.group(1).strip() if found else model
    engine = docker("version", "--format", "{{.Server.Version}}").strip()
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores, {model}, {system}, Docker {engine}"


def report(
    runs: list[Contender],
    load: Load,
    rounds: int,
    starts: list[float],
    sizes: dict[str, float],
    breakdown: list[tuple[str, float]],
    websockets: dict[str, list[dict[str, float]]],
) -> str:
    by_key = {c.key: c for c in runs}
    tool = "wrk" if shutil.which("wrk") else "a Python load generator (wrk not installed)"
    lines = [
        f"# make bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {machine()}.",
        f"Load: {tool}, {load.connections} keep-alive connections, {load.seconds} s per round, "
        f"{rounds} rounds alternating between contenders, median shown; all traffic to 127.0.0.1, "
        "through Docker's published ports unless the contender says host network; only 2xx "
        "answers count.",
        "",
        "| contender | req/s | p50 ms | p99 ms | errors | CPU µs/request | memory MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in runs:
        lines.append(
            f"| {c.name} | {median(c, 'rps'):,.0f} | {median(c, 'p50_ms'):.2f} | "
            f"{median(c, 'p99_ms'):.2f} | {sum(r['errors'] for r in c.rounds):.0f} | "
            f"{median(c, 'cpu_us_per_request'):.0f} | {c.memory_mib:.1f} |"
        )

    def ratio(a: str, b: str, metric: str) -> float:
        return median(by_key[a], metric) / median(by_key[b], metric)

    def ws(key: str, metric: str) -> float:
        return statistics.median(r[metric] for r in websockets[key])

    cpu = "cpu_us_per_request"
    goals = [
        ("CPU/request, bundle ÷ Tornado alone", ratio("bundle", "alone1", cpu), "≤ 1.3", 1.3, True),
        ("CPU/request, bundle ÷ seed setup", ratio("bundle", "seed", cpu), "≤ 0.5", 0.5, True),
        ("req/s, bundle ÷ seed setup", ratio("bundle", "seed", "rps"), "≥ 1.6", 1.6, False),
        ("p99, bundle ÷ seed setup", ratio("bundle", "seed", "p99_ms"), "< 1.0", 1.0, True),
        ("req/s, bundle ÷ fork_processes(2)", ratio("bundle", "fork2", "rps"), "≥ 0.9", 0.9, False),
        ("image MB", sizes["image"], "≤ 130", 130, True),
        ("cold start s (median of 5)", statistics.median(starts), "≤ 1.5", 1.5, True),
        ("memory MiB, 2 instances", by_key["bundle"].memory_mib, "≤ 60", 60, True),
        (
            "static 10 KB req/s, nginx ÷ Tornado StaticFileHandler",
            ratio("static_nginx", "static_tornado", "rps"),
            "≥ 10",
            10,
            False,
        ),
        (
            "WebSocket round trips/s, through nginx ÷ straight to one instance",
            ws("static_nginx", "rate") / ws("static_tornado", "rate"),
            "≥ 0.8",
            0.8,
            False,
        ),
    ]
    lines += ["", "| measure | value | goal | met |", "|---|---:|---:|---|"]
    for name, value, goal, bound, at_most in goals:
        met = value <= bound if at_most else value >= bound
        lines.append(f"| {name} | {value:.2f} | {goal} | {'yes' if met else 'NO'} |")
    per_core = 1e6 / median(by_key["bundle"], cpu)
    lines += [
        "",
        f"Image: {sizes['image']:.1f} MB, of which {sizes['image'] - sizes['base']:.1f} MB on top "
        f"of the base image ({sizes['base']:.1f} MB). Cold start (docker run to first 200): "
        + ", ".join(f"{s:.2f}" for s in sorted(starts))
        + " s.",
        f"Expected throughput per core, from the bundle's CPU per request: ~{per_core:,.0f} req/s.",
        "",
        f"WebSocket echo ({WEBSOCKET_CLIENTS} connections, host network, median of the rounds): "
        f"through nginx to 2 instances {ws('static_nginx', 'rate'):,.0f} round trips/s at "
        f"{ws('static_nginx', 'cpu_us'):.0f} µs of container CPU each; straight to one instance "
        f"{ws('static_tornado', 'rate'):,.0f} at {ws('static_tornado', 'cpu_us'):.0f} µs.",
        "",
        "Where the bundle's CPU goes (one more round, per process, µs per request):",
        "",
        "| process | CPU µs/request |",
        "|---|---:|",
        *(f"| `{command}` | {us:.1f} |" for command, us in breakdown),
        "",
    ]
    return "\n".join(lines)


def chart(runs: list[Contender], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib is not installed; no chart")
        return False
    by_key = {c.key: c for c in runs}
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), width_ratios=[3, 1.3])
    hello = [c for c in runs if not c.key.startswith(("workers", "static"))]
    left.barh([c.name for c in hello], [median(c, "rps") for c in hello], color="#4c72b0")
    left.invert_yaxis()
    left.set_xlabel("requests/s (median)")
    left.set_title("Throughput by contender")
    scaling = [("1", by_key["workers1"]), ("2", by_key["bundle"]), ("4", by_key["workers4"])]
    right.bar([n for n, _ in scaling], [median(c, "rps") for _, c in scaling], color="#55a868")
    right.set_xlabel("WORKERS")
    right.set_ylabel("requests/s (median)")
    right.set_title("Bundle by worker count")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", default="tornado-bundle:latest")
    parser.add_argument("--seed-image", default="tornado-bundle-seed:bench")
    parser.add_argument("--base-image", default="debian:trixie-slim")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    arguments = parser.parse_args()
    load = Load(arguments.seconds, arguments.connections)

    app_dir = bench_app_dir()
    runs = contenders(arguments.image, arguments.seed_image, app_dir)
    by_key = {c.key: c for c in runs}
    websockets: dict[str, list[dict[str, float]]] = {"static_nginx": [], "static_tornado": []}
    try:
        for contender in runs:
            start(contender)
            measure(contender, Load(1, load.connections))  # warm-up, not counted
            contender.memory_mib = memory_mib(contender.container)
        for round_number in range(arguments.rounds):
            order = runs if round_number % 2 == 0 else list(reversed(runs))
            for contender in order:
                contender.rounds.append(measure(contender, load))
                print(
                    f"round {round_number + 1}: {contender.name}: "
                    f"{contender.rounds[-1]['rps']:,.0f} req/s",
                    flush=True,
                )
        for round_number in range(arguments.rounds):
            keys = list(websockets) if round_number % 2 == 0 else list(reversed(websockets))
            for key in keys:
                websockets[key].append(websocket_rate(by_key[key], load.seconds))
            rates = {key: f"{runs_[-1]['rate']:,.0f}" for key, runs_ in websockets.items()}
            print(f"round {round_number + 1}: WebSocket round trips/s {rates}", flush=True)
        breakdown = where_the_cpu_goes(runs[0], load)
    finally:
        for contender in runs:
            if contender.container:
                docker("rm", "--force", contender.container, check=False)
        shutil.rmtree(app_dir, ignore_errors=True)
    starts = cold_starts(arguments.image, 5)
    sizes = {"image": image_mb(arguments.image), "base": image_mb(arguments.base_image)}

    RESULTS.mkdir(exist_ok=True)
    text = report(runs, load, arguments.rounds, starts, sizes, breakdown, websockets)
    if chart(runs, RESULTS / "latest.png"):
        text += "\n![throughput](latest.png)\n"
    (RESULTS / "latest.md").write_text(text)
    (RESULTS / "latest.json").write_text(
        json.dumps({c.key: {"name": c.name, "rounds": c.rounds} for c in runs}, indent=1)
    )
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
