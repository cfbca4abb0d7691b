"""The repository as the unit tests read it: where the image's templates come from."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def template(name: str) -> str:
    """A template as the image has it in /etc/nginx/templates (Dockerfile: COPY tornado.conf
    container/nginx/*.template)."""
    folder = ROOT if name == "tornado.conf" else ROOT / "container" / "nginx"
    return (folder / name).read_text()
