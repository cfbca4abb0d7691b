"""Unit tests of tornado_bundle/fail_fast.py's crash-loop rule, with fake Supervisor events.

The real thing: test_an_instance_that_cannot_stay_up_stops_the_container_non_zero in
tests/test_resilience.py (its quick-exit path shows only on a busy machine).
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from supervisor.states import SupervisorStates

from tornado_bundle import fail_fast
from tornado_bundle.fail_fast import FailFastSupervisor


@pytest.fixture
def supervisor(monkeypatch: pytest.MonkeyPatch) -> FailFastSupervisor:
    monkeypatch.setattr(FailFastSupervisor, "failure", None)
    instance = object.__new__(FailFastSupervisor)
    instance.quick_exits = {}
    instance.failed_starts = {}
    # Pids 1-99 listened before they exited; 100 and above never did.
    instance.watchdog = SimpleNamespace(  # type: ignore[assignment]
        has_started=lambda pid: pid < 100, forget=lambda pid: None
    )
    logged: list[str] = []
    instance.options = SimpleNamespace(  # type: ignore[assignment]
        mood=SupervisorStates.RUNNING, logger=SimpleNamespace(critical=logged.append)
    )
    return instance


def exited(started_ago: float, expected: bool = False, pid: int = 1) -> SimpleNamespace:
    process = SimpleNamespace(
        config=SimpleNamespace(name="tornado-8001"),
        group=SimpleNamespace(config=SimpleNamespace(name="tornadoes")),
        laststart=time.time() - started_ago,
    )
    return SimpleNamespace(process=process, expected=expected, extra_values=[("pid", pid)])


def test_three_quick_exits_in_a_row_shut_down_with_a_reason(supervisor: FailFastSupervisor) -> None:
    for _ in range(fail_fast.QUICK_EXITS - 1):
        supervisor.on_exited(exited(2.0))  # type: ignore[arg-type]
    assert supervisor.options.mood == SupervisorStates.RUNNING
    supervisor.on_exited(exited(2.0))  # type: ignore[arg-type]
    assert supervisor.options.mood == SupervisorStates.SHUTDOWN
    assert FailFastSupervisor.failure is not None
    assert FailFastSupervisor.failure.startswith("tornadoes:tornado-8001 exited 3 times in a row")


def test_an_exit_after_a_long_run_or_an_expected_one_resets_the_count(
    supervisor: FailFastSupervisor,
) -> None:
    for started_ago, expected in [(2, False), (2, False), (600, False), (2, False), (2, True)]:
        supervisor.on_exited(exited(started_ago, expected))  # type: ignore[arg-type]
    assert supervisor.options.mood == SupervisorStates.RUNNING
    assert FailFastSupervisor.failure is None


def test_two_exits_in_a_row_before_ever_answering_are_a_failed_start(
    supervisor: FailFastSupervisor,
) -> None:
    # A slow import that fails after 40 s, twice: Supervisor's startsecs never notices.
    supervisor.on_exited(exited(40.0, pid=100))  # type: ignore[arg-type]
    assert supervisor.options.mood == SupervisorStates.RUNNING
    supervisor.on_exited(exited(40.0, pid=101))  # type: ignore[arg-type]
    assert supervisor.options.mood == SupervisorStates.SHUTDOWN
    assert FailFastSupervisor.failure == (
        "tornadoes:tornado-8001 exited 2 times in a row before it ever listened (its app did "
        "not load; its own last lines above say why)"
    )


def test_an_instance_that_started_between_two_failed_starts_resets_the_count(
    supervisor: FailFastSupervisor,
) -> None:
    for pid in (100, 1, 101, 2):
        supervisor.on_exited(exited(40.0, pid=pid))  # type: ignore[arg-type]
    assert FailFastSupervisor.failure is None
