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
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# The harness (harness/ at the top of the repository) starts containers and waits for them, for
# the tests and the bench alike; it reads the image's defaults from tornado_bundle.
sys.path.insert(0, str(BENCH.parent))
from harness import docker as docker_run  # noqa: E402
from harness import http_get, wait_for, wrk  # noqa: E402
from harness import start as start_container  # noqa: E402

RESULTS = BENCH / "results"
LOOPBACK = "127.0.0.1"
NAME_PREFIX = "tornado-bundle-bench-"


@dataclass
class Contender:
    name: str
    key: str
    image: str
    # docker run options and the command after the image; the port the contender listens on
    # inside the container when it is published instead of on the host network (LISTEN_PORT).
    options: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    container_port: int = 80
    # On the host network (the production path: no docker-proxy) unless it says otherwise.
    host_network: bool = True
    # What the load asks for.
    path: str = "/"
    container: str = ""
    host_port: int = 0
    rounds: list[dict[str, float]] = field(default_factory=list)
    memory_mib: float = 0.0


@dataclass
class Load:
    seconds: int
    connections: int


def docker(*args: str, check: bool = True) -> str:
    return docker_run(*args, check=check, timeout=300).stdout


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
    alone = [mount, "--entrypoint", "python"]
    one, two = ["/bench/tornado_alone.py", "1"], ["/bench/tornado_alone.py", "2"]
    app = [f"--volume={app_dir}:/app:ro", "--env=APP=app:make_app"]
    # The ceiling: nginx alone, on LISTEN_PORT (host network) or 80 (published).
    ceiling = 'sed "s/listen 80;/listen ${LISTEN_PORT:-80};/" /bench/ceiling.conf >/tmp/c.conf'
    return [
        Contender("bundle: nginx -> 2 Tornado", "bundle", image),
        # The same again in a second container: how far two identical containers differ here
        # (the floor under which a variant's difference means nothing).
        Contender("bundle, an identical second container", "bundle_twin", image),
        Contender("seed setup: nginx -> 2 Tornado", "seed", seed_image),
        Contender("Tornado alone, 1 process", "alone1", image, alone, one),
        Contender("Tornado fork_processes(2)", "fork2", image, alone, two),
        Contender(
            "nginx return 200 (ceiling)",
            "ceiling",
            image,
            [mount, "--entrypoint", "sh"],
            ["-c", f"{ceiling} && exec nginx -c /tmp/c.conf"],
        ),
        Contender("bundle, WORKERS=1", "workers1", image, ["--env=WORKERS=1"]),
        Contender("bundle, WORKERS=4", "workers4", image, ["--env=WORKERS=4"]),
        Contender(
            "bundle, watchdog and blocked-loop monitor off",
            "unwatched",
            image,
            ["--env=WATCHDOG_TIMEOUT=0", "--env=BLOCKED_LOOP_WARNING=0"],
        ),
        # The metrics' cost on the hot path (the bundle counts every request by default).
        Contender(
            "bundle, metrics off (METRICS_PORT=0)", "unmetered", image, ["--env=METRICS_PORT=0"]
        ),
        Contender(
            "static 10 KB: nginx in the bundle",
            "static_nginx",
            image,
            app,
            path=STATIC_FILE,
        ),
        Contender(
            "static 10 KB: Tornado StaticFileHandler alone",
            "static_tornado",
            image,
            [*app, *alone],
            one,
            path=STATIC_FILE,
        ),
        # Through Docker's published ports (docker-proxy, a userland copy loop): what it costs.
        Contender("bundle, published port", "bundle_published", image, host_network=False),
        Contender(
            "Tornado alone, published port",
            "alone1_published",
            image,
            alone,
            one,
            host_network=False,
        ),
    ]


def wait_for_200(port: int, timeout: float = 30) -> float:
    """Seconds until GET / answers 200."""
    started = time.monotonic()
    wait_for(lambda: http_get(port, "/", timeout=2).status == 200, timeout, 0.01, "GET / 200")
    return time.monotonic() - started


def start(contender: Contender) -> None:
    print(f"starting: {contender.name}", flush=True)
    running = start_container(
        options=tuple(contender.options),
        container_port=contender.container_port,
        image=contender.image,
        host_network=contender.host_network,
        command=tuple(contender.command),
        name_prefix=NAME_PREFIX,
    )
    contender.container, contender.host_port = running.name, running.port
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
    return wrk(port, load.connections, load.seconds, path)


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
    """`docker run` until the first 200, `times` times (the engine's own start-up included), on
    the host network."""
    seconds = []
    for _ in range(times):
        started = time.monotonic()
        container = start_container(image=image, host_network=True, name_prefix=NAME_PREFIX)
        try:
            wait_for_200(container.port)
            seconds.append(time.monotonic() - started)
        finally:
            docker("rm", "--force", container.name, check=False)
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


@dataclass(frozen=True)
class Goal:
    """A ratio or figure the bundle aims for: at most (or at least) `bound`."""

    name: str
    bound: float
    at_most: bool

    def verdict(self, value: float) -> str:
        met = value <= self.bound if self.at_most else value >= self.bound
        return "yes" if met else "NO"

    def text(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {self.bound:g}"


@dataclass
class Results:
    runs: dict[str, Contender]
    websockets: dict[str, list[dict[str, float]]]
    starts: list[float]
    sizes: dict[str, float]

    def ratio(self, a: str, b: str, metric: str) -> float:
        return median(self.runs[a], metric) / median(self.runs[b], metric)

    def ws(self, key: str, metric: str) -> float:
        return statistics.median(r[metric] for r in self.websockets[key])

    def noise(self, key: str, metric: str) -> float:
        """The spread of one contender's own rounds, relative to their median."""
        values = [r[metric] for r in self.runs[key].rounds]
        return (max(values) - min(values)) / statistics.median(values)


CPU = "cpu_us_per_request"
# The goals, each with how it is computed from the results.
GOALS: list[tuple[Goal, Callable[[Results], float]]] = [
    (
        Goal("CPU/request, bundle ÷ Tornado alone", 1.3, True),
        lambda r: r.ratio("bundle", "alone1", CPU),
    ),
    (Goal("CPU/request, bundle ÷ seed setup", 0.5, True), lambda r: r.ratio("bundle", "seed", CPU)),
    (Goal("req/s, bundle ÷ seed setup", 1.6, False), lambda r: r.ratio("bundle", "seed", "rps")),
    (Goal("p99, bundle ÷ seed setup", 1.0, True), lambda r: r.ratio("bundle", "seed", "p99_ms")),
    (
        Goal("req/s, bundle ÷ fork_processes(2)", 0.9, False),
        lambda r: r.ratio("bundle", "fork2", "rps"),
    ),
    (Goal("image MB", 130, True), lambda r: r.sizes["image"]),
    (Goal("cold start s (median of 5)", 1.5, True), lambda r: statistics.median(r.starts)),
    (Goal("memory MiB, 2 instances", 60, True), lambda r: r.runs["bundle"].memory_mib),
    (
        Goal("static 10 KB req/s, nginx ÷ Tornado StaticFileHandler", 10, False),
        lambda r: r.ratio("static_nginx", "static_tornado", "rps"),
    ),
    (
        Goal("WebSocket round trips/s, through nginx ÷ straight to one instance", 0.8, False),
        lambda r: r.ws("ws_through_nginx", "rate") / r.ws("ws_one_instance", "rate"),
    ),
]


def contender_table(runs: list[Contender]) -> list[str]:
    lines = [
        "| contender | req/s | p50 ms | p99 ms | errors | CPU µs/request | memory MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in runs:
        lines.append(
            f"| {c.name} | {median(c, 'rps'):,.0f} | {median(c, 'p50_ms'):.2f} | "
            f"{median(c, 'p99_ms'):.2f} | {sum(r['errors'] for r in c.rounds):.0f} | "
            f"{median(c, CPU):.0f} | {c.memory_mib:.1f} |"
        )
    return lines


def report(results: Results, load: Load, rounds: int, breakdown: list[tuple[str, float]]) -> str:
    runs = list(results.runs.values())
    host = [c for c in runs if c.host_network]
    published = [c for c in runs if not c.host_network]
    tool = "wrk" if shutil.which("wrk") else "a Python load generator (wrk not installed)"
    lines = [
        f"# make bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {machine()}.",
        f"Load: {tool}, {load.connections} keep-alive connections, {load.seconds} s per round, "
        f"{rounds} rounds alternating between contenders, median shown; only 2xx answers count. "
        "All traffic to 127.0.0.1, on the host network (no docker-proxy: the path production "
        "traffic takes) unless the contender says published port.",
        "",
        *contender_table(host),
        "",
        "Through Docker's published ports (docker-proxy, a userland copy loop on the same cores):",
        "",
        *contender_table(published),
        "",
        "| measure | value | goal | met |",
        "|---|---:|---:|---|",
    ]
    for goal, compute in GOALS:
        value = compute(results)
        lines.append(f"| {goal.name} | {value:.2f} | {goal.text()} | {goal.verdict(value)} |")
    watch = results.ratio("bundle", "unwatched", CPU)
    metered = results.ratio("bundle", "unmetered", CPU)
    twin = results.ratio("bundle", "bundle_twin", CPU)
    noise = results.noise("bundle", CPU)
    sizes, starts = results.sizes, results.starts
    per_core = 1e6 / median(results.runs["bundle"], CPU)
    lines += [
        f"| CPU/request, bundle ÷ bundle with watchdog and blocked-loop monitor off | "
        f"{watch:.2f} | within the bundle's own round-to-round spread ({noise:.2f}) | "
        f"{'yes' if abs(watch - 1) <= noise else 'NO'} |",
        f"| CPU/request, bundle ÷ bundle with metrics off | {metered:.2f} | ≤ 1.10 | "
        f"{'yes' if metered <= 1.10 else 'NO'} |",
        f"| CPU/request, bundle ÷ the identical second container (the floor) | {twin:.2f} | "
        "(how far two identical containers differ) | |",
        f"| req/s, published port ÷ host network (bundle) | "
        f"{results.ratio('bundle_published', 'bundle', 'rps'):.2f} | (what docker-proxy costs) | |",
        "",
        f"Image: {sizes['image']:.1f} MB, of which {sizes['image'] - sizes['base']:.1f} MB on top "
        f"of the base image ({sizes['base']:.1f} MB). Cold start (docker run to first 200): "
        + ", ".join(f"{s:.2f}" for s in sorted(starts))
        + " s.",
        f"Expected throughput per core, from the bundle's CPU per request: ~{per_core:,.0f} req/s.",
        "",
        f"WebSocket echo ({WEBSOCKET_CLIENTS} connections, median of the rounds): through nginx "
        f"to 2 instances {results.ws('ws_through_nginx', 'rate'):,.0f} round trips/s at "
        f"{results.ws('ws_through_nginx', 'cpu_us'):.0f} µs of container CPU each; straight to one "
        f"instance {results.ws('ws_one_instance', 'rate'):,.0f} at "
        f"{results.ws('ws_one_instance', 'cpu_us'):.0f} µs.",
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
    hello = [c for c in runs if c.host_network and not c.key.startswith(("workers", "static"))]
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
    # The WebSocket echo runs against the two containers of the static-file contenders (the
    # bench app's bundle, and the app alone in one process): by WebSocket path -> contender.
    echo_on = {"ws_through_nginx": "static_nginx", "ws_one_instance": "static_tornado"}
    websockets: dict[str, list[dict[str, float]]] = {key: [] for key in echo_on}
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
                websockets[key].append(websocket_rate(by_key[echo_on[key]], load.seconds))
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
    results = Results({c.key: c for c in runs}, websockets, starts, sizes)
    text = report(results, load, arguments.rounds, breakdown)
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
