"""The router's admission queue: hold load above max_in_flight, answer 429 + Retry-After only when full or late."""

from __future__ import annotations

import asyncio

import pytest

from serving.admission import Admission
from serving.config import RouterConfig
from serving.protocol import APIError


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


def test_queued_requests_get_slots_in_arrival_order() -> None:
    async def main() -> list[int]:
        adm = Admission(max_in_flight=2, max_queued=3, queue_timeout_s=5)
        order: list[int] = []

        async def req(i: int) -> None:
            await adm.acquire()
            order.append(i)
            await asyncio.sleep(0.05)
            adm.release()

        await asyncio.gather(*(req(i) for i in range(5)))
        assert adm.in_flight == 0 and adm.queued == 0 and adm.rejected == 0
        return order

    assert run(main()) == [0, 1, 2, 3, 4]


def test_full_queue_answers_429_with_retry_after_at_once() -> None:
    async def main() -> None:
        adm = Admission(max_in_flight=1, max_queued=1, queue_timeout_s=8)
        await adm.acquire()
        waiter = asyncio.ensure_future(adm.acquire())
        await asyncio.sleep(0)
        assert adm.queued == 1
        with pytest.raises(APIError) as exc:
            await adm.acquire()
        assert exc.value.status == 429 and exc.value.headers == {"Retry-After": "2"}
        assert "queued" in exc.value.message
        adm.release()  # hands the slot to the waiter
        await waiter
        assert adm.in_flight == 1 and adm.queued == 0
        adm.release()
        assert adm.in_flight == 0

    run(main())


def test_wait_deadline_answers_429_and_leaves_no_waiter() -> None:
    async def main() -> None:
        adm = Admission(max_in_flight=1, max_queued=4, queue_timeout_s=0.1)
        await adm.acquire()
        with pytest.raises(APIError) as exc:
            await adm.acquire()
        assert exc.value.status == 429 and "queue_timeout_s" in exc.value.message
        assert adm.queued == 0 and adm.in_flight == 1
        adm.release()
        assert adm.in_flight == 0

    run(main())


def test_client_leaving_while_queued_or_just_granted_leaks_no_slot() -> None:
    async def main() -> None:
        adm = Admission(max_in_flight=1, max_queued=4, queue_timeout_s=5)
        await adm.acquire()
        gone = asyncio.ensure_future(adm.acquire())
        await asyncio.sleep(0)
        gone.cancel()  # disconnected while waiting
        await asyncio.gather(gone, return_exceptions=True)
        assert adm.queued == 0
        granted = asyncio.ensure_future(adm.acquire())
        await asyncio.sleep(0)
        adm.release()  # slot handed to `granted` ...
        granted.cancel()  # ... which is cancelled before it resumes: the slot must be passed on, not lost
        (outcome,) = await asyncio.gather(granted, return_exceptions=True)
        if not isinstance(outcome, asyncio.CancelledError):  # wait_for may return the result it already had:
            adm.release()  # then the request owns the slot and its handler's `finally` frees it
        assert adm.in_flight == 0 and adm.queued == 0

    run(main())


def test_router_config_refuses_a_serve_cap_below_its_queue() -> None:
    with pytest.raises(ValueError, match="max_ongoing_requests"):
        RouterConfig.model_validate(
            {"max_in_flight": 64, "max_queued": 100, "replicas": {"max_ongoing_requests": 128}}
        )
    RouterConfig.model_validate(
        {"max_in_flight": 64, "max_queued": 64, "replicas": {"max_ongoing_requests": 128}}
    )
