"""Membership's heartbeat loop in-process: it always stops, whatever its seeds do."""

import asyncio
import threading

from rpmp.protocol import Node
from rpmp.server.membership import Membership


def test_stop_returns_while_a_dead_seed_refuses_every_heartbeat():
    """asyncio.wait_for (3.11) returns the inner result when a cancel meets an inner task that just finished:
    with a seed that refuses at once, stop()'s cancel used to land in that window now and then, the loop's
    `except Exception` took the refusal and went on, and stop() (and so SIGTERM) waited forever."""
    calls = 0

    async def refused(host, port, me, epoch):
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError(111, "Connection refused")

    async def cycles() -> None:
        me = Node("127.0.0.1:7000", "127.0.0.1", 7000, 1)
        for i in range(300):
            m = Membership(me, [("127.0.0.1", 1)], interval=0.0, dead_after=1.0, heartbeat=refused)
            m.start()
            for _ in range(i % 7):
                await asyncio.sleep(0)
            await asyncio.wait_for(m.stop(), 2.0)

    done = threading.Event()
    worker = threading.Thread(target=lambda: (asyncio.run(cycles()), done.set()), daemon=True)
    worker.start()
    worker.join(60)   # before the fix some stop() never returned: fail here rather than hang the suite
    assert done.is_set(), "Membership.stop() did not return"
    assert calls > 0
