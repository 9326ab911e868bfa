"""The join proxy's whole runtime: a poll() loop with explicit deadlines, and a one-line logger.

No asyncio, no selectors, no logging: the process imports C modules (`select`, `_socket`,
`_signal`, `_json`, `time`, `os`) and its own package, so it stays near the bare
interpreter's memory (measured in docs/brski-proxy.md). Callbacks, not coroutines: every
wait is either an fd in the poll set or a deadline in the timer heap.
"""
from __future__ import annotations

import os
import select
import sys
import time
from _heapq import heappop, heappush  # the C module: heapq.py adds nothing we use

TYPE_CHECKING = False  # typing itself is no lightweight import
if TYPE_CHECKING:
    from collections.abc import Callable

    Handler = Callable[[int], None]

IN = select.POLLIN
OUT = select.POLLOUT
ERR = select.POLLERR | select.POLLHUP | select.POLLNVAL
MAX_WAIT = 3600.0


class Timer:
    """A deadline in the heap; cancel() makes it a no-op when it comes up."""
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: Timer) -> bool:
        return self.when < other.when


class Loop:
    """fds with what they wait for (IN/OUT) and a handler; timers at monotonic deadlines.

    An fd waiting for nothing is taken out of the poll set, so a hung-up peer we do not read
    yet (backpressure) cannot make poll() spin.
    """

    def __init__(self) -> None:
        self._poll = select.poll()
        self._handlers: dict[int, Handler] = {}
        self._masks: dict[int, int] = {}
        self._timers: list[Timer] = []
        self.stopping = False

    # -- fds ------------------------------------------------------------------------------
    def watch(self, fd: int, handler: Handler, mask: int = 0) -> None:
        self._handlers[fd] = handler
        self._masks.setdefault(fd, 0)
        self.want(fd, mask)

    def want(self, fd: int, mask: int) -> None:
        """Set what fd waits for (IN, OUT, IN|OUT or 0)."""
        old = self._masks.get(fd)
        if old is None or old == mask:
            return
        self._masks[fd] = mask
        if mask == 0:
            self._poll.unregister(fd)
        elif old == 0:
            self._poll.register(fd, mask)
        else:
            self._poll.modify(fd, mask)

    def forget(self, fd: int) -> None:
        """Stop watching fd (call before closing it)."""
        if self._masks.pop(fd, 0):
            self._poll.unregister(fd)
        self._handlers.pop(fd, None)

    @property
    def watched(self) -> int:
        return len(self._handlers)

    # -- timers ---------------------------------------------------------------------------
    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback)
        heappush(self._timers, timer)
        return timer

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.call_at(time.monotonic() + delay, callback)

    def _next_wait(self, limit: float) -> float:
        while self._timers and self._timers[0].cancelled:
            heappop(self._timers)
        if not self._timers:
            return limit
        return min(limit, max(0.0, self._timers[0].when - time.monotonic()))

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and (self._timers[0].cancelled or self._timers[0].when <= now):
            timer = heappop(self._timers)
            if not timer.cancelled:
                timer.cancelled = True
                try:
                    timer.callback()
                except Exception as exc:
                    _internal_error(exc)

    # -- running --------------------------------------------------------------------------
    def run_once(self, limit: float = MAX_WAIT) -> None:
        """Wait (at most `limit` s, less if a timer is due) and dispatch what is ready."""
        wait = self._next_wait(limit)
        events = self._poll.poll(int(wait * 1000 + 0.999))
        for fd, mask in events:
            handler = self._handlers.get(fd)
            if handler is not None:  # an earlier handler may have forgotten it
                try:
                    handler(mask)
                except Exception as exc:  # one circuit's bug must not end every circuit
                    _internal_error(exc)
        self._run_timers()

    def run(self) -> None:
        """Until stop()."""
        while not self.stopping:
            self.run_once()

    def run_until(self, done: Callable[[], object], within: float) -> bool:
        """Step until done() is true or `within` s passed (for tests and draining)."""
        deadline = time.monotonic() + within
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.run_once(min(left, 0.02))
        return True

    def stop(self) -> None:
        self.stopping = True


def _internal_error(exc: Exception) -> None:
    """Log where it happened in one line (the traceback module would cost more than it says)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = (f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"
             if tb is not None else "?")
    Log.warning("internal error at %s: %s: %s", where, type(exc).__name__, exc)


LEVELS = {"debug": 10, "info": 20, "notice": 25, "warning": 30, "error": 40}  # acpd's log_level


class Log:
    """`acp-join-proxy[pid]: LEVEL message` lines on stderr (acpd points it at join-proxy.log)."""

    level = LEVELS["info"]

    @classmethod
    def set_level(cls, name: str) -> None:
        cls.level = LEVELS[name]

    @classmethod
    def _emit(cls, level: int, name: str, msg: str, args: tuple[object, ...]) -> None:
        if level < cls.level:
            return
        text = msg % args if args else msg
        try:
            sys.stderr.write(f"acp-join-proxy[{os.getpid()}]: {name} {text}\n")
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass  # no stderr: nothing to say it on

    @classmethod
    def debug(cls, msg: str, *args: object) -> None:
        cls._emit(10, "DEBUG", msg, args)

    @classmethod
    def info(cls, msg: str, *args: object) -> None:
        cls._emit(20, "INFO", msg, args)

    @classmethod
    def warning(cls, msg: str, *args: object) -> None:
        cls._emit(30, "WARNING", msg, args)
