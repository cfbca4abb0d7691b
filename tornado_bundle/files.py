"""Writing the files under /tmp that other processes read while they change."""

from __future__ import annotations

from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """Readers (nginx -s reload, a second start, the HEALTHCHECK) see the old file or the new
    one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    partial.replace(path)
