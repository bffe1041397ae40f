"""Time budgets for outbound calls: one for a whole command, one for each call inside it.

Why: a per-attempt socket timeout bounds nothing a user can plan on — with retries and back-off, a
PACS that accepts and never answers took 46-56 s under ``--timeout 3``, and one that trickles a
byte every 2 s never tripped a 3 s read timeout at all. A :class:`Deadline` is an end time on the
monotonic clock; :func:`call_deadline` is the earlier of "this call's own budget" and "what is left
of the command's", so every call, its retries and its back-off end by then. The HTTP session
(:mod:`serving.common.http_policy`) enforces it on the socket; a gRPC stub takes
``deadline.remaining()`` as its ``timeout``. Pure Python.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import requests


class DeadlineExceeded(requests.Timeout):
    """The call (or the command it belongs to) ran out of time; ``budget_s`` is what it had.

    A :class:`requests.Timeout`, so code that already words a timeout words this one too.
    """

    def __init__(self, budget_s: float, what: str = "the call") -> None:
        super().__init__(f"{what} did not finish within its {budget_s:g} s deadline")
        self.budget_s = budget_s


@dataclass(frozen=True)
class Deadline:
    """An end time: ``seconds`` from ``start`` (``time.monotonic``). ``seconds=None``: none."""

    seconds: float | None
    start: float = field(default_factory=time.monotonic)

    @property
    def end(self) -> float:
        return float("inf") if self.seconds is None else self.start + self.seconds

    def remaining(self) -> float:
        """Seconds left (``inf`` without a limit, never negative)."""
        return max(0.0, self.end - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def check(self, what: str = "the command") -> None:
        """Raise :class:`DeadlineExceeded` when no time is left."""
        if self.expired:
            raise DeadlineExceeded(self.seconds or 0.0, what)


NO_DEADLINE = Deadline(None)


def call_deadline(call_s: float | None, command: Deadline | None = None) -> Deadline:
    """The deadline of one call: its own ``call_s`` budget, cut to what the command has left."""
    own = Deadline(call_s)
    if command is None or command.end >= own.end:
        return own
    return Deadline(max(0.0, command.end - own.start), own.start)
