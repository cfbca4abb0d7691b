"""The blocked-loop warning (BLOCKED_LOOP_WARNING): the stack of the code that keeps an
instance's event loop from running, logged while it blocks."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback

from tornado_bundle.instance_logs import log


class BlockedLoopMonitor:
    """Logs one warning, with the stack of the code that blocks it, whenever the event loop has
    not run for `threshold` seconds (a handler calling time.sleep, a slow C call, a CPU loop).

    The loop touches a heartbeat every threshold/4 seconds; a daemon thread looks at it as
    often. Cost in normal operation: one tiny callback and one thread wake-up per period.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.period = threshold / 4
        self.heartbeat = time.monotonic()
        self._loop_thread = threading.get_ident()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop_thread = threading.get_ident()
        loop.call_soon(self._beat, loop)
        threading.Thread(target=self._watch, name="blocked-loop-monitor", daemon=True).start()

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        self.heartbeat = time.monotonic()
        loop.call_later(self.period, self._beat, loop)

    def _watch(self) -> None:
        warned_for = 0.0
        while True:
            time.sleep(self.period)
            beat = self.heartbeat
            blocked = time.monotonic() - beat
            if blocked > self.threshold and beat != warned_for:
                warned_for = beat
                self.warn(blocked)

    def warn(self, blocked: float) -> None:
        frame = sys._current_frames().get(self._loop_thread)
        frames = traceback.extract_stack(frame) if frame else traceback.StackSummary()
        # What the loop runs: the frames below asyncio's callback runner (events.py, _run).
        starts = [i for i, f in enumerate(frames) if f.name == "_run" and "asyncio" in f.filename]
        shown = frames[starts[-1] + 1 :] if starts else frames
        stack = "".join(traceback.format_list(shown)) or "(no stack)\n"
        log.warning(
            "event loop blocked for %.1fs (BLOCKED_LOOP_WARNING=%gs); it is running:\n%s",
            blocked,
            self.threshold,
            stack.rstrip("\n"),
        )
