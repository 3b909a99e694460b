"""Leases: an app's data lives on a node only as long as somebody renews it (PROTOCOL.md "LEASE").

A node deletes an app (as DELETE_APP does, locally) when nobody renewed it for `ttl` seconds. Renewals are a
LEASE (the taking node forwards it to every live node) and the requests that name an app: REGISTER_SHUFFLE,
MAP_END, FETCH, PARTITION_INFO (not PUSH: the push path stays as it was). Apps found in the pool at open
count as renewed then, so a restarted node gives every app a full TTL.

Only apps the node holds are tracked (an entry is made when one of its shuffles is registered here, or found
at open), so LEASEs of made-up names cost nothing and the table stays as large as the node's app set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable


class Leases:
    def __init__(self, ttl: float, apps: Iterable[str] = (), clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl  # seconds; 0: apps never expire
        self.clock = clock
        now = clock()
        self.renewed: dict[str, float] = {app: now for app in apps}  # app -> when it was last renewed

    @property
    def ttl_ms(self) -> int:
        """The TTL as LEASE answers it: u32 milliseconds (config.py bounds the TTL so that it fits)."""
        return min(round(self.ttl * 1000), 0xFFFFFFFF)

    @property
    def interval(self) -> float:
        """How often the janitor looks for expired apps: a quarter of the TTL, at most a minute."""
        return min(self.ttl / 4, 60.0) if self.ttl > 0 else 60.0

    def hold(self, app: str) -> None:
        """The node holds data of `app` now (a registration): renewed, and tracked from now on."""
        self.renewed[app] = self.clock()

    def renew(self, app: str) -> bool:
        """Renew `app` if this node holds it; False if it does not (nothing to renew here)."""
        if app not in self.renewed:
            return False
        self.renewed[app] = self.clock()
        return True

    def expired(self, held: Iterable[str]) -> list[str]:
        """The apps of `held` (what the node holds now) whose lease ran out. Also brings the table in line with
        `held`: apps held but not tracked (they came some other way) start a full TTL now; tracked apps no
        longer held (deleted) are forgotten."""
        now = self.clock()
        held = set(held)
        for app in held - self.renewed.keys():
            self.renewed[app] = now
        for app in self.renewed.keys() - held:
            del self.renewed[app]
        if self.ttl <= 0:
            return []
        return sorted(app for app, t in self.renewed.items() if now - t > self.ttl)

    def forget(self, app: str) -> None:
        self.renewed.pop(app, None)
