"""Admission control for one router replica: hold load in a bounded queue instead of shedding it.

`max_in_flight` requests run at once; above that, up to `max_queued` wait (first come, first served) for at most
`queue_timeout_s`. Only a full queue or a passed deadline answers 429, with `Retry-After`, so a burst above the
in-flight limit is absorbed while the engine (which batches many sequences) works through it, and clients that do
retry are told when.
"""

from __future__ import annotations

import asyncio
import collections
import math

from serving.protocol import APIError


class Admission:
    """A FIFO semaphore with a bounded wait queue and a wait deadline; single event loop (a Serve replica)."""

    def __init__(self, max_in_flight: int, max_queued: int, queue_timeout_s: float) -> None:
        self.max_in_flight, self.max_queued, self.queue_timeout_s = max_in_flight, max_queued, queue_timeout_s
        self.in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.rejected = 0  # 429s answered since start (metrics, tests)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def _retry_after(self) -> int:
        return max(1, math.ceil(self.queue_timeout_s / 4))

    def _busy(self, why: str) -> APIError:
        self.rejected += 1
        return APIError(
            429,
            f"server busy: {why}; retry after {self._retry_after()} s",
            type_="rate_limit_error",
            code="overloaded",
            headers={"Retry-After": str(self._retry_after())},
        )

    async def acquire(self) -> None:
        """Take a slot now, or queue for one; APIError 429 when the queue is full or the deadline passes."""
        if self.in_flight < self.max_in_flight and not self._waiters:
            self.in_flight += 1
            return
        if len(self._waiters) >= self.max_queued:
            raise self._busy(
                f"{self.in_flight} requests in flight and {len(self._waiters)} queued on this replica"
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout=self.queue_timeout_s)
        except asyncio.TimeoutError:
            if fut.done():  # granted in the same tick as the deadline: keep the slot
                return
            self._waiters.remove(fut)
            raise self._busy(
                f"no slot freed within router.queue_timeout_s={self.queue_timeout_s:g} s"
            ) from None
        except asyncio.CancelledError:  # the client left while queued
            if fut.done():
                self.release()  # the slot was handed over: pass it on
            else:
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        """Free a slot: hand it straight to the oldest waiter (in_flight stays), else decrement."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.in_flight -= 1
