"""Authentication and tenant primitives both the node and the client use (docs/PROTOCOL.md, "Authentication
and tenants"). No I/O except reading the two secret files, so each side's protocol code stays small: the asking
side of the handshake (ClientHandshake) serves the Python client and the node's peers alike.

- proofs: ``HMAC-SHA256(secret, "rpmp-auth-v1 node\\0" | "rpmp-auth-v1 client\\0" || u8 len(tenant) || tenant
  || cn || nn)``; the two labels keep a node's proof from ever being usable as a client's;
- tenant names: 1..32 bytes of ``A-Z a-z 0-9 . _ -``; ``@cluster`` is the nodes' own identity;
- qualified names: app ``a`` of tenant ``t`` is ``t\\x1fa`` on the node (``t/a`` in logs and STATS), key ``k``
  is ``0x1F || XXH3-64(t) as u64 LE || k``, an ALLOC block records the same 8-byte tag;
- files: an auth file (``tenant secret`` per line) and a cluster secret file (one line), both refused when
  group or others may read or write them: a secret anyone on the host can read is no secret.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import secrets
import stat
import struct

import xxhash

from rpmp._wire import decode_auth_resp, encode_auth, encode_auth_proof
from rpmp.protocol import NONCE_SIZE, TENANT_MAX

CLUSTER = "@cluster"  # the nodes' identity (and the operator tools', with the cluster secret)
SEP = "\x1f"  # between tenant and app in a qualified app name
KEY_PREFIX = b"\x1f"
_TENANT_RE = re.compile(r"[A-Za-z0-9._-]{1,%d}" % TENANT_MAX)  # noqa: UP031 (braces of the regex)
_NODE_LABEL = b"rpmp-auth-v1 node\0"
_CLIENT_LABEL = b"rpmp-auth-v1 client\0"


class AuthFileError(ValueError):
    """An auth or cluster secret file the node must not start with; the message is one line for the operator."""


def valid_tenant(name: str) -> bool:
    """True for a name an auth file may define (``@cluster`` is not one: only the cluster secret gives it)."""
    return bool(_TENANT_RE.fullmatch(name))


def new_nonce() -> bytes:
    """32 bytes from the OS's cryptographic source: one per connection and side, never reused."""
    return secrets.token_bytes(NONCE_SIZE)


def _transcript(label: bytes, tenant: str, cn: bytes, nn: bytes) -> bytes:
    t = tenant.encode("utf-8")
    return label + bytes([len(t)]) + t + cn + nn


def node_proof(secret: bytes, tenant: str, cn: bytes, nn: bytes) -> bytes:
    """What the node answers AUTH with: it proves the node knows the tenant's secret."""
    return hmac.new(secret, _transcript(_NODE_LABEL, tenant, cn, nn), hashlib.sha256).digest()


def client_proof(secret: bytes, tenant: str, cn: bytes, nn: bytes) -> bytes:
    """What the client sends in AUTH_PROOF."""
    return hmac.new(secret, _transcript(_CLIENT_LABEL, tenant, cn, nn), hashlib.sha256).digest()


def proofs_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison (a timing difference would tell an attacker how many bytes were right)."""
    return hmac.compare_digest(a, b)


class ClientHandshake:
    """The asking side of one connection's handshake, without I/O: the Python client (blocking sockets) and the
    node's peer pool (asyncio) send what it gives and hand it what comes back, so what is checked, and in what
    order, is written once.

    ``auth_meta`` goes out in AUTH; ``proof_meta(answer)`` takes AUTH's response meta and returns AUTH_PROOF's meta,
    or None when the node's proof is wrong (it does not know the secret: send nothing more)."""

    def __init__(self, tenant: str, secret: bytes):
        self.tenant, self._secret, self._cn = tenant, secret, new_nonce()
        self.auth_meta = encode_auth(tenant, self._cn)

    def proof_meta(self, answer: bytes) -> bytes | None:
        nn, proof = decode_auth_resp(answer)
        if not proofs_equal(proof, node_proof(self._secret, self.tenant, self._cn, nn)):
            return None
        return encode_auth_proof(client_proof(self._secret, self.tenant, self._cn, nn))


@functools.lru_cache(maxsize=4096)  # a few tenants, asked on every key-value request
def key_tag(tenant: str) -> bytes:
    """The 8 bytes (XXH3-64 of the tenant, little-endian) that prefix a tenant's keys and mark its ALLOC blocks."""
    return struct.pack("<Q", xxhash.xxh3_64_intdigest(tenant.encode("utf-8")))


def qualify_key(tenant: str | None, key: bytes) -> bytes:
    """The stored key of a tenant's key; open mode and ``@cluster`` use keys as they are."""
    if tenant is None or tenant == CLUSTER:
        return key
    return KEY_PREFIX + key_tag(tenant) + key


def qualify_app(tenant: str | None, app: str) -> str:
    """The node's name of a tenant's app; open mode and ``@cluster`` (forwarded frames) use names as they are."""
    if tenant is None or tenant == CLUSTER:
        return app
    return tenant + SEP + app


def display_app(app: str) -> str:
    """A stored app name as STATS and logs print it: ``tenant/app`` (``/`` cannot occur in either part)."""
    return app.replace(SEP, "/", 1)


def app_tenant(app: str) -> str | None:
    """The tenant part of a qualified app name, None for an unqualified (open-mode) one."""
    head, sep, _ = app.partition(SEP)
    return head if sep else None


def _check_mode(path: str, what: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except OSError as e:
        raise AuthFileError(f"{what} {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise AuthFileError(f"{what} {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise AuthFileError(f"{what} {path} has mode {mode:04o}: group or others may access it "
                            f"(it holds secrets): run chmod 600 {path}")
    return st


def _read(path: str, what: str) -> str:
    _check_mode(path, what)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise AuthFileError(f"{what} {path}: cannot read it: {e}") from None


def parse_auth_text(text: str, where: str = "auth file") -> dict[str, bytes]:
    """``tenant secret`` per line (blank lines and ``#`` comments ignored) -> {tenant: secret bytes}.
    Refuses bad names, empty secrets, duplicates and two tenants whose key tags collide (their keys would mix)."""
    tenants: dict[str, bytes] = {}
    tags: dict[bytes, str] = {}
    for no, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or not parts[1].strip():
            raise AuthFileError(f"{where} line {no}: expected 'tenant secret'")
        name, secret = parts[0], parts[1].strip()
        if not valid_tenant(name):
            raise AuthFileError(f"{where} line {no}: tenant name {name[:40]!r} is not 1..{TENANT_MAX} characters "
                                f"of A-Z a-z 0-9 . _ -")
        if name in tenants:
            raise AuthFileError(f"{where} line {no}: tenant {name} is defined twice")
        tag = key_tag(name)
        if tag in tags:
            raise AuthFileError(f"{where} line {no}: tenants {tags[tag]} and {name} have the same key tag "
                                f"(XXH3-64): rename one")
        tags[tag] = name
        tenants[name] = secret.encode("utf-8")
    return tenants


def load_auth_file(path: str) -> dict[str, bytes]:
    """Read and check an auth file (see parse_auth_text); AuthFileError with a one-line reason otherwise."""
    return parse_auth_text(_read(path, "auth file"), f"auth file {path}")


def load_secret_file(path: str, what: str = "cluster secret file") -> bytes:
    """A one-line secret file (the cluster secret, or a client's secret); AuthFileError otherwise."""
    lines = [ln.strip() for ln in _read(path, what).splitlines() if ln.strip()]
    if len(lines) != 1:
        raise AuthFileError(f"{what} {path}: expected one line with the secret, found {len(lines)}")
    return lines[0].encode("utf-8")


def client_secret(tenant: str | None, secret: str | bytes | None, secret_file: str | None) -> bytes | None:
    """A client's secret from exactly one of `secret` and `secret_file` (ValueError otherwise); None without a
    tenant. `tenant` is a name an auth file may define, or CLUSTER (with the cluster secret)."""
    if tenant is None:
        if secret is not None or secret_file is not None:
            raise ValueError("secret and secret_file need tenant= too")
        return None
    if tenant != CLUSTER and not valid_tenant(tenant):
        raise ValueError(f"tenant {tenant[:40]!r} is not 1..{TENANT_MAX} characters of A-Z a-z 0-9 . _ - (or "
                         f"{CLUSTER})")
    if (secret is None) == (secret_file is None):
        raise ValueError(f"tenant {tenant}: give exactly one of secret= and secret_file=")
    if secret_file is not None:
        return load_secret_file(secret_file, "secret file")
    assert secret is not None
    raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not raw:
        raise ValueError(f"tenant {tenant}: the secret is empty")
    return raw


def write_private(path: str, text: str) -> None:
    """Create (or replace) a file only its owner may read: for the files above, in tests and LocalCluster."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)
