"""Unit tests of tornado_bundle/watchdog.py's decisions, with a fake Supervisor and fake
instances (the real thing: tests/test_watchdog.py)."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import pytest

from tornado_bundle import settings, watchdog

NAME = "tornadoes:tornado-8000"


ANSWERING = watchdog.Probe(listening=True, answered=True)
# Listening (its app loaded) but not answering: a blocked loop.
HUNG = watchdog.Probe(listening=True, answered=False)
# Not listening yet: still importing or setting up its app.
LOADING = watchdog.Probe(listening=False, answered=False)
STATE = [ANSWERING]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[int, int]]:
    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(watchdog, "probe", lambda port, timeout=1.0: STATE[0])
    monkeypatch.setattr(watchdog.os, "kill", lambda pid, signum: signals.append((pid, signum)))
    monkeypatch.setattr(watchdog.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(watchdog, "REPORT", tmp_path / "unresponsive")
    return signals


def make(
    timeout: int,
    memory: int | None = None,
    state: watchdog.Probe = ANSWERING,
    running: bool = True,
    startup: int = 30,
) -> watchdog.Watchdog:
    dog = watchdog.Watchdog(
        dataclasses.replace(
            settings.defaults(),
            watchdog_timeout=timeout,
            instance_max_memory=memory,
            startup_timeout=startup,
        ),
        [8000],
        lambda: {NAME: 42} if running else {},
        lambda: True,
    )
    STATE[0] = state
    return dog


def test_an_instance_that_answers_is_left_alone(sent: list[tuple[int, int]]) -> None:
    dog = make(timeout=10)
    for second in range(30):
        dog.check(float(second))
    assert sent == []
    assert watchdog.REPORT.read_text() == ""


def test_silent_for_the_timeout_gets_its_stack_dumped_then_killed_once(
    sent: list[tuple[int, int]],
) -> None:
    dog = make(timeout=10)
    dog.check(0.0)
    STATE[0] = HUNG
    for second in range(1, 10):
        dog.check(float(second))
    assert sent == []
    dog.check(10.0)
    assert sent == [(42, signal.SIGUSR1), (42, signal.SIGKILL)]
    dog.check(11.0)
    assert len(sent) == 2, "the same pid is not killed twice"


def test_timeout_0_never_kills_but_reports_after_10_seconds(sent: list[tuple[int, int]]) -> None:
    dog = make(timeout=0)
    dog.check(0.0)
    STATE[0] = HUNG
    for second in range(1, 12):
        dog.check(float(second))
    assert sent == []
    assert watchdog.REPORT.read_text().startswith(f"{NAME} 11.0")


def test_a_starting_instance_has_the_startup_timeout_not_the_watchdog_s(
    sent: list[tuple[int, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    # An app that takes 20 s to load, with WATCHDOG_TIMEOUT=10: neither killed nor reported.
    dog = make(timeout=10, state=LOADING, startup=30)
    for second in range(20):
        dog.check(float(second))
    STATE[0] = ANSWERING
    dog.check(20.0)
    assert sent == []
    assert watchdog.REPORT.read_text() == ""
    assert dog.has_started(42)


def test_an_instance_that_never_answers_is_killed_at_the_startup_timeout(
    sent: list[tuple[int, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    dog = make(timeout=10, state=LOADING, startup=30)
    for second in range(30):
        dog.check(float(second))
    assert sent == []
    assert watchdog.REPORT.read_text() == ""
    dog.check(30.0)
    assert sent == [(42, signal.SIGUSR1), (42, signal.SIGKILL)]
    assert "(STARTUP_TIMEOUT=30s): it has not finished loading its app" in capsys.readouterr().out
    dog.check(31.0)
    assert watchdog.REPORT.read_text().startswith(f"{NAME} 31.0")
    assert not dog.has_started(42)


def test_an_instance_blocked_as_soon_as_it_listens_has_the_watchdog_s_timeout(
    sent: list[tuple[int, int]],
) -> None:
    # Its first request blocks its loop before any probe got an answer: it has started.
    dog = make(timeout=3, state=HUNG, startup=30)
    for second in range(3):
        dog.check(float(second))
    assert sent == []
    dog.check(3.0)
    assert sent == [(42, signal.SIGUSR1), (42, signal.SIGKILL)]
    assert dog.has_started(42)


def test_a_stopped_instance_is_not_reported(sent: list[tuple[int, int]]) -> None:
    dog = make(timeout=5, state=HUNG, running=False)
    for second in range(20):
        dog.check(float(second))
    assert sent == []
    assert watchdog.REPORT.read_text() == ""


def test_above_the_memory_limit_a_graceful_restart(
    sent: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watchdog, "resident_bytes", lambda pid: 200 * 2**20)
    dog = make(timeout=10, memory=100 * 2**20)
    dog.check(0.0)
    dog.check(1.0)
    assert sent == [(42, signal.SIGTERM)], "one SIGTERM, then wait for the new instance"
