"""Tornado's demos under tests/apps/tornado_demos are byte for byte the ones Tornado ships: each
file's git blob id is the one SOURCE records from Tornado's repository."""

from __future__ import annotations

import hashlib
from pathlib import Path

DEMOS = Path(__file__).resolve().parents[1] / "apps" / "tornado_demos"


def blob_id(path: Path) -> str:
    """What `git hash-object` prints for the file."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_every_demo_file_is_tornado_s_own() -> None:
    recorded = dict(
        reversed(line.split())
        for line in (DEMOS / "SOURCE").read_text().splitlines()
        if line and not line.startswith("#")
    )
    present = {
        str(path.relative_to(DEMOS))
        for path in DEMOS.rglob("*")
        if path.is_file()
        and path.name not in ("SOURCE", "LICENSE")
        and "__pycache__" not in path.parts
    }
    assert present == set(recorded)
    for name, expected in recorded.items():
        assert blob_id(DEMOS / name) == expected, f"{name} differs from Tornado's demo"
