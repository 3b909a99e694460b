"""The node's side of authentication (docs/PROTOCOL.md "Authentication and tenants"): the tenants it knows, each
connection's handshake, and the slow-down of addresses whose authentications keep failing.

The network layer owns one `Session` per connection and asks it, frame by frame, whether the frame may pass; it
answers AUTH and AUTH_PROOF itself. What the connection acts for reaches the controller through `IDENTITY`, a
context variable the network sets around each handler call: the coroutines a handler starts inherit it, so no
handler signature had to carry it, and nothing else (peer connections, timers) ever sees a client's identity.
"""

from __future__ import annotations

import enum
import logging
import secrets
import time
from collections import OrderedDict
from contextvars import ContextVar

from rpmp import _wire as wire
from rpmp.auth import CLUSTER, AuthFileError, client_proof, load_auth_file, new_nonce, node_proof, proofs_equal
from rpmp.protocol import FLAG_FORWARDED, ErrorCode, Op, ProtocolError

log = logging.getLogger("rpmp.auth")

#: What the connection whose request is being handled acts for: None on a node that runs open, CLUSTER for
#: peers and operator tools, else the tenant's name.
IDENTITY: ContextVar[str | None] = ContextVar("rpmp_identity", default=None)

PUBLIC_OPS = frozenset({Op.HELLO, Op.PING, Op.AUTH, Op.AUTH_PROOF})  # what may come before the handshake ended
CLUSTER_OPS = frozenset({Op.HEARTBEAT, Op.DRAIN})  # only the nodes (and the operator, with the cluster secret)
FAILED = "authentication failed"  # all a client learns: never whether the tenant or the proof was wrong
DELAY_FIRST = 0.05  # seconds the second failure in a row from one address waits; each further one doubles it
DELAY_MAX = 2.0
FORGET_AFTER = 60.0  # seconds without a failure after which an address starts again from no delay
MAX_ADDRESSES = 10_000  # failing addresses remembered (the oldest are forgotten first)
LOG_PER_SECOND = 20  # failure lines a second at most; then one line says how many were left out


class State(enum.Enum):
    OPEN = "open"  # the node runs without authentication
    AWAITING = "awaiting AUTH"
    CHALLENGED = "challenged"
    AUTHENTICATED = "authenticated"


def forbidden(identity: str | None, op: int, flags: int) -> ProtocolError | None:
    """FORBIDDEN for a tenant's frame that only the cluster may send (FORWARDED, HEARTBEAT, DRAIN); None when the
    node runs open (identity None) or the sender is the cluster."""
    if identity is None or identity == CLUSTER:
        return None
    if flags & FLAG_FORWARDED:
        return ProtocolError(ErrorCode.FORBIDDEN, "only nodes (@cluster) may send FORWARDED frames")
    if op in CLUSTER_OPS:
        return ProtocolError(ErrorCode.FORBIDDEN, f"only nodes (@cluster) may send {Op(op).name}")
    return None


class AuthFailure(Exception):
    """The handshake failed: answer AUTH_FAILED after `delay` seconds and close the connection."""

    def __init__(self, message: str, delay: float):
        super().__init__(message)
        self.message = message
        self.delay = delay


class Authenticator:
    """The tenants of the auth file (re-read on SIGHUP), the cluster secret, and failure bookkeeping."""

    def __init__(self, auth_file: str, cluster_secret: bytes | None):
        self.path = auth_file
        self.tenants = load_auth_file(auth_file)  # AuthFileError: the node does not start
        self.cluster_secret = cluster_secret
        self.failures = 0  # STATS auth_failures
        self._failing: OrderedDict[str, tuple[int, float]] = OrderedDict()  # address -> (failures in a row, last)
        self._log_second = 0  # the second the lines below were logged in
        self._logged = self._unlogged = 0

    def reload(self) -> bool:
        """Re-read the auth file; a file that does not pass keeps the tenants as they were (ERROR logged)."""
        try:
            tenants = load_auth_file(self.path)
        except AuthFileError as e:
            log.error("auth file not reloaded, keeping its %d tenants: %s", len(self.tenants), e)
            return False
        added = sorted(set(tenants) - set(self.tenants))
        removed = sorted(set(self.tenants) - set(tenants))
        changed = sorted(t for t in set(tenants) & set(self.tenants) if tenants[t] != self.tenants[t])
        self.tenants = tenants
        log.info("auth file %s reloaded: %d tenants (added %s, removed %s, new secret for %s)", self.path,
                 len(tenants), added or "none", removed or "none", changed or "none")
        return True

    def secret(self, tenant: str) -> bytes | None:
        if tenant == CLUSTER:
            return self.cluster_secret
        return self.tenants.get(tenant)

    def failed(self, address: str, why: str) -> float:
        """Count a failure from `address`, log it, and return how long its answer should wait."""
        self.failures += 1
        now = time.monotonic()
        count, last = self._failing.pop(address, (0, now))
        if now - last > FORGET_AFTER:
            count = 0
        count += 1
        self._failing[address] = (count, now)
        while len(self._failing) > MAX_ADDRESSES:
            self._failing.popitem(last=False)
        delay = 0.0 if count < 2 else min(DELAY_MAX, DELAY_FIRST * 2 ** (count - 2))
        second = int(now)
        if second != self._log_second:
            if self._unlogged:
                log.warning("%d more authentication failures were not logged", self._unlogged)
            self._log_second, self._logged, self._unlogged = second, 0, 0
        if self._logged < LOG_PER_SECOND:  # a flood of failures must not flood the log
            self._logged += 1
            log.warning("authentication from %s failed: %s (%d in a row from there; answer delayed %.2f s)",
                        address, why, count, delay)
        else:
            self._unlogged += 1
        return delay


class Session:
    """One connection's handshake: which frames may pass, and what the connection acts for once it passed."""

    def __init__(self, auth: Authenticator | None, address: str):
        self.auth = auth
        self.address = address
        self.state = State.OPEN if auth is None else State.AWAITING
        self.identity: str | None = None
        self.began = time.monotonic()
        self._tenant = ""
        self._cn = self._nn = self._key = b""
        self._known = False

    def overdue(self, now: float, limit: float) -> bool:
        """Connected for `limit` seconds without authenticating: the node closes it (an open connection takes a
        slot of max_connections; PINGs alone must not keep one)."""
        return self.state in (State.AWAITING, State.CHALLENGED) and now - self.began > limit

    def admits(self, op: int) -> bool:
        """Whether a frame with this opcode may be handled now (AUTH and AUTH_PROOF go to `answer`)."""
        return self.state in (State.OPEN, State.AUTHENTICATED) or op in PUBLIC_OPS

    def fail(self, why: str) -> AuthFailure:
        delay = self.auth.failed(self.address, why) if self.auth is not None else 0.0
        self.state = State.AWAITING if self.auth is not None else State.OPEN
        return AuthFailure(FAILED, delay)

    def refuse(self, op: int) -> AuthFailure:
        """A frame that is not allowed before the handshake ended."""
        name = Op(op).name if op in Op._value2member_map_ else f"opcode {op:#04x}"
        return self.fail(f"{name} before authenticating")

    def answer(self, op: int, meta: memoryview) -> bytes:
        """The response meta of AUTH or AUTH_PROOF; AuthFailure when the handshake fails, ProtocolError
        (BAD_REQUEST, BAD_FRAME) for a malformed meta."""
        if self.auth is None:
            raise AuthFailure("this node runs without authentication", 0.0)
        if op == Op.AUTH:
            tenant, cn = wire.decode_auth(meta)
            if self.state is not State.AWAITING:
                raise self.fail(f"AUTH in state {self.state.value}")
            secret = self.auth.secret(tenant)
            self._known = secret is not None
            self._key = secret if secret is not None else secrets.token_bytes(32)  # the answer tells nothing
            self._tenant, self._cn, self._nn = tenant, cn, new_nonce()
            self.state = State.CHALLENGED
            return wire.encode_auth_resp(self._nn, node_proof(self._key, tenant, cn, self._nn))
        proof = wire.decode_auth_proof(meta)
        if self.state is not State.CHALLENGED:
            raise self.fail(f"AUTH_PROOF in state {self.state.value}")
        expected = client_proof(self._key, self._tenant, self._cn, self._nn)
        if not (proofs_equal(proof, expected) and self._known):
            who = self._tenant if self._known else "unknown tenant " + repr(self._tenant[:32])
            raise self.fail(f"wrong proof for {who}" if self._known else who)
        # A success does not clear the address's failures: a tenant could otherwise guess another's secret at full
        # speed between its own successful handshakes. Only failures are ever delayed.
        self.state, self.identity = State.AUTHENTICATED, self._tenant
        self._key = b""
        return b""

