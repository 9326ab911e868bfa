"""The one contract every protocol core follows, and the one asyncio driver that runs any core.

A protocol core (GRASP engine, RPL node, peer channel, DULL adjacency, pledge, ...) is a plain
class that does no I/O and never reads a clock (docs/core-contract.md):

- every input method takes `now` (a monotonic time in seconds, `loop.time()` in acpd) and
  returns the outputs it caused as a list (bytes to send, actions, events), in order;
- `next_timer()` says when the core next has work by itself (None: nothing pending);
- `handle_timer(now)` does that work and returns its outputs the same way.

The edge (an acpd part) owns sockets and netlink, turns what they hear into input calls, and
hands every returned list to one `execute` function. `CoreTimer` keeps exactly one loop timer
armed at the core's `next_timer()`, so no part polls.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

LOG = logging.getLogger("acpd.core")

Output = TypeVar("Output")
Output_co = TypeVar("Output_co", covariant=True)


class ProtocolCore(Protocol[Output_co]):
    """What the driver needs from a core; input methods are the core's own."""

    def next_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> Sequence[Output_co]: ...


class CoreTimer(Generic[Output]):
    """Runs `core.handle_timer` at `core.next_timer()` on the running loop.

    Call `rearm()` after every input given to the core (`feed()` does it for you). `ceiling`
    bounds the sleep for cores whose housekeeping (cache expiry) need not be exact.
    """

    def __init__(self, core: ProtocolCore[Output], execute: Callable[[Sequence[Output]], None],
                 *, loop: asyncio.AbstractEventLoop | None = None,
                 ceiling: float | None = None, name: str = "core") -> None:
        self.core = core
        self.execute = execute
        self.ceiling = ceiling
        self.name = name
        self._loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self._when = 0.0
        self._closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def now(self) -> float:
        """The core's clock: the loop's monotonic time."""
        return self.loop.time()

    def feed(self, outputs: Sequence[Output]) -> None:
        """Execute what an input returned, then re-arm the timer."""
        if outputs:
            self.execute(outputs)
        self.rearm()

    def rearm(self) -> None:
        """Arm the loop timer at the core's next_timer() (earlier timer kept if sooner)."""
        if self._closed:
            return
        due = self.core.next_timer()
        capped = False
        if self.ceiling is not None:
            cap = self.now() + self.ceiling
            if due is None or due > cap:
                due, capped = cap, True
        if due is None:
            self._cancel()
            return
        if self._handle is not None:
            # Under the ceiling a timer armed sooner stays: the ceiling only bounds the sleep,
            # and moving it with every input would re-create the loop's timer each time.
            if abs(self._when - due) <= 0.001 or (capped and self._when <= due):
                return
            self._handle.cancel()
        self._when = due
        self._handle = self.loop.call_at(due, self._fire)

    def close(self) -> None:
        """Stop timing (the part is stopping); later feed()/rearm() calls do nothing."""
        self._closed = True
        self._cancel()

    def _cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        try:
            outputs = self.core.handle_timer(self.now())
            if outputs:
                self.execute(outputs)
        except Exception:  # a broken timer must not stop the loop; the next input re-arms
            LOG.exception("%s timer failed", self.name)
        self.rearm()
