"""What the container offers, read at start: open files per process, the kernel's listen queue
(nginx's connection slots and every listen backlog follow from them), and whether it has IPv6."""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
# One line per IPv6 address of the network namespace; empty (or absent) without IPv6, as in
# Docker's default bridge network.
IF_INET6 = Path("/proc/net/if_inet6")
# Open files nginx keeps for what is not a connection: static files, logs, temporary files.
FILES_RESERVE = 1024


@dataclass(frozen=True)
class Capacity:
    open_files: int
    listen_backlog: int
    # The container has an IPv6 address (LISTEN_IPV6=auto listens on [::] then).
    ipv6: bool = False

    @property
    def worker_connections(self) -> int:
        return max(self.open_files - FILES_RESERVE, 512)

    @property
    def max_active_requests(self) -> int:
        # An active request holds two connections (the client's and one to an instance); a
        # quarter of them stays free for idle keep-alive clients and for the 503s past this.
        return self.worker_connections * 3 // 8

    @property
    def per_client_auto(self) -> int:
        # Half: one address alone can never take every other client's capacity.
        return self.max_active_requests // 2


def capacity() -> Capacity:
    """From this process's hard RLIMIT_NOFILE and the kernel's net.core.somaxconn."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    open_files = 1_048_576 if hard == resource.RLIM_INFINITY else min(hard, 1_048_576)
    try:
        backlog = int(SOMAXCONN.read_text())
    except (OSError, ValueError):
        backlog = 4096
    try:
        ipv6 = bool(IF_INET6.read_text().strip())
    except OSError:
        ipv6 = False
    return Capacity(open_files=open_files, listen_backlog=backlog, ipv6=ipv6)
