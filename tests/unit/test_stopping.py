"""A service's loops end when it stops, even one that swallowed a cancellation."""

from __future__ import annotations

import asyncio

from shared.adapters.lifecycle import Tasks


async def test_stop_ends_a_loop_that_swallowed_the_first_cancellation() -> None:
    swallowed = []

    async def loop() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(1)  # what Python 3.11's asyncio.wait_for can do

    tasks = Tasks()
    tasks.start(loop(), "stubborn")
    await asyncio.sleep(0)
    await asyncio.wait_for(tasks.stop(), 5)
    assert swallowed == [1] and not tasks.tasks
