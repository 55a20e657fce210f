"""The clock seam: ManualClock.sleep_until wakes when another thread advances it."""

from __future__ import annotations

import asyncio
import threading

from streamkit.clock import ManualClock, SystemClock


def test_manual_sleep_until_returns_once_another_thread_moves_the_clock_past_it() -> None:
    clock = ManualClock(epoch=100.0)
    woke: list[float] = []

    async def sleeper() -> None:
        await clock.sleep_until(100.0)  # already there: at once
        waiting = asyncio.ensure_future(clock.sleep_until(105.0))
        await asyncio.sleep(0)
        threading.Thread(target=clock.advance, args=(4,)).start()
        await asyncio.sleep(0.05)
        assert not waiting.done(), "104 is not 105 yet"
        threading.Thread(target=clock.advance, args=(1,)).start()
        await asyncio.wait_for(waiting, 5)
        woke.append(clock.time())

    asyncio.run(sleeper())
    assert woke == [105.0]


def test_a_cancelled_manual_sleep_is_forgotten_and_the_system_clock_sleeps_for_real() -> None:
    clock = ManualClock(epoch=0.0)

    async def cancelled() -> None:
        waiting = asyncio.ensure_future(clock.sleep_until(1.0))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await SystemClock().sleep_until(0.0)  # long past: returns at once

    asyncio.run(cancelled())
    assert clock._waiters == []
    clock.advance(2)  # nobody to wake, and no error for it
