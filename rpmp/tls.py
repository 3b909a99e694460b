"""TLS for RPMP connections: contexts for a node's port, its peer connections and clients (docs/PROTOCOL.md "TLS").

TLS is a layer under the frames: nothing here knows about RPMP. A node with `--tls-cert/--tls-key` serves TLS
1.2 or later; with `--tls-ca` too it requires client certificates signed by that CA and checks its peers'
certificates against it (presenting its own as a client certificate). Every problem with the files is one line
naming the setting, found before the node creates anything.

Failed handshakes are logged by the SSL objects themselves (asyncio drops them silently outside debug mode):
at most one WARNING line per LOG_EVERY seconds, with how many were not logged.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import subprocess
import threading
import time

log = logging.getLogger("rpmp.tls")

LOG_EVERY = 60.0  # seconds between two log lines about failed handshakes
HANDSHAKE_TIMEOUT = 10.0  # seconds a client may take for its TLS handshake with a node (at most frame_timeout)


class TlsError(ConnectionError):
    """A TLS connection could not be made: the message says why in one line (untrusted certificate, no client
    certificate, the other side does not speak TLS...)."""


# ---- files ------------------------------------------------------------------------------------------------
def _readable(setting: str, path: str) -> None:
    if not os.path.exists(path):
        raise ValueError(f"{setting} {path!r}: does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{setting} {path!r}: is a directory, not a PEM file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{setting} {path!r}: not readable by this user")


def _reason(e: ssl.SSLError) -> str:
    return (e.reason or e.strerror or str(e)).replace("_", " ").lower()


def _load_chain(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as e:
        why = _reason(e)
        if "key values mismatch" in why:
            raise ValueError(f"tls_key {key!r} does not match tls_cert {cert!r} (not the key of that "
                             f"certificate)") from None
        raise ValueError(f"tls_cert {cert!r} / tls_key {key!r}: not a PEM certificate and its unencrypted "
                         f"private key ({why})") from None


def _load_ca(ctx: ssl.SSLContext, ca: str, setting: str = "tls_ca") -> None:
    try:
        ctx.load_verify_locations(cafile=ca)
    except ssl.SSLError as e:
        raise ValueError(f"{setting} {ca!r}: not a PEM certificate ({_reason(e)})") from None


def check_node_files(cert: str, key: str, ca: str) -> None:
    """ValueError (one line naming the setting) unless the node's TLS settings are usable: none given, or cert and
    key given, readable and matching, and the CA (if given) readable PEM. Reads the files, creates nothing."""
    if not (cert or key or ca):
        return
    if not cert or not key:
        missing = "tls_key (--tls-key)" if cert else "tls_cert (--tls-cert)"
        raise ValueError(f"{missing} is not set: TLS needs both --tls-cert and --tls-key"
                         + (" (--tls-ca alone does nothing)" if not cert and not key else ""))
    server_context(cert, key, ca)


_server_contexts: dict[tuple[object, ...], ssl.SSLContext] = {}  # by the files' paths and identities


def server_context(cert: str, key: str, ca: str = "") -> ssl.SSLContext:
    """The context of a node's listening port: its certificate and key; with `ca`, client certificates signed by
    it are required. ValueError (one line) for a file that is missing, unreadable or does not fit. The files are
    loaded once: the node's check and its start share the context while the files stay the same."""
    files = (("tls_cert", cert), ("tls_key", key), *((("tls_ca", ca),) if ca else ()))
    for setting, path in files:
        _readable(setting, path)
    ident = tuple((path, st.st_ino, st.st_size, st.st_mtime_ns) for _, path in files for st in (os.stat(path),))
    if ident in _server_contexts:
        return _server_contexts[ident]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, cert, key)
    if ca:
        _load_ca(ctx, ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.sslobject_class = _LoggedSSLObject  # asyncio creates them: the node's failed handshakes are logged
    _server_contexts[ident] = ctx
    return ctx


def peer_context(cert: str, key: str, ca: str = "") -> ssl.SSLContext:
    """The context a TLS node connects to its peers with: their certificates are checked (host name included)
    against `ca`, or without one against the system's CAs and the node's own certificate (a node set sharing one
    self-signed certificate); with `ca` the node presents its own certificate as a client certificate."""
    ctx = ssl.create_default_context(cafile=ca or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca:
        _load_chain(ctx, cert, key)
    else:
        _load_ca(ctx, cert, "tls_cert")
    return ctx


def client_context(ca: str | None = None, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """A client's context: the node's certificate checked against `ca` (a PEM file, trusted alone; default: the
    system's CAs), with its host name; `cert`/`key`: a client certificate, for nodes started with --tls-ca.
    ValueError (one line) for unusable files."""
    for setting, path in (("ca", ca), ("cert", cert), ("key", key)):
        if path:
            _readable(setting, path)
    if key and not cert:
        raise ValueError("key given without cert: a client certificate needs both")
    try:  # `ca` alone, when given: the system's CAs are not trusted then
        ctx = ssl.create_default_context(cafile=ca or None)
    except ssl.SSLError as e:
        raise ValueError(f"ca {ca!r}: not a PEM certificate ({_reason(e)})") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        try:
            ctx.load_cert_chain(cert, key or None)
        except ssl.SSLError as e:
            raise ValueError(f"cert {cert!r} / key {key!r}: not a PEM certificate and its key ({_reason(e)})") from None
    return ctx


# ---- what went wrong --------------------------------------------------------------------------------------
def describe(e: BaseException, where: str) -> str:
    """One line saying why TLS with `where` (host:port) failed, and what to do about it."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return (f"{where}: TLS: the node's certificate is not trusted ({e.verify_message}): give the CA that "
                f"signed it (ca=..., --tls-ca FILE) and connect by a name or address the certificate holds")
    if isinstance(e, ssl.CertificateError):
        return f"{where}: TLS: the node's certificate does not fit: {e}"
    why = _reason(e) if isinstance(e, ssl.SSLError) else str(e)
    if isinstance(e, ssl.SSLError) and any(s in why for s in ("wrong version number", "record layer failure",
                                                                "packet length too long", "unknown protocol")):
        return (f"{where}: TLS: the node does not speak TLS (a plaintext RPMP node?): connect without tls, or "
                f"start the node with --tls-cert and --tls-key ({why})")
    if "certificate required" in why or "handshake failure" in why:
        return (f"{where}: TLS: the node requires a client certificate signed by its --tls-ca (cert=..., key=...; "
                f"rpmp: --tls-cert, --tls-key) ({why})")
    if "unknown ca" in why or "bad certificate" in why:
        return f"{where}: TLS: the node does not trust this client certificate ({why})"
    if isinstance(e, (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError)) or "eof" in why:
        return (f"{where}: TLS: the node closed the connection during the handshake (it requires a client "
                f"certificate, or does not speak TLS): {why}")
    return f"{where}: TLS: {why}"


def looks_like_tls(head: bytes | bytearray | memoryview) -> bool:
    """Whether bytes a plaintext client received start a TLS record (a handshake 0x16 0x03, an alert 0x15 0x03)."""
    return len(head) >= 2 and head[0] in (0x15, 0x16) and head[1] == 0x03


def is_client_hello(head: bytes | bytearray | memoryview) -> bool:
    """Whether bytes a plaintext node received start a TLS handshake record (0x16 0x03: a ClientHello)."""
    return len(head) >= 2 and head[0] == 0x16 and head[1] == 0x03


class _HandshakeLog:
    """Failed server-side handshakes: one WARNING line per kind (plaintext clients, others) and LOG_EVERY seconds
    at most (a port scanner or a misconfigured client must not flood the log)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last: dict[bool, float] = {}  # plaintext? -> when its last line was logged
        self.suppressed: dict[bool, int] = {}
        self.failures = 0  # all of them, logged or not

    def failed(self, e: ssl.SSLError) -> None:
        why = _reason(e)
        plaintext = "wrong version number" in why or "http request" in why
        with self.lock:
            self.failures += 1
            now = time.monotonic()
            if now - self.last.get(plaintext, -LOG_EVERY) < LOG_EVERY:
                self.suppressed[plaintext] = self.suppressed.get(plaintext, 0) + 1
                return
            more, self.suppressed[plaintext], self.last[plaintext] = self.suppressed.get(plaintext, 0), 0, now
        what = ("a client spoke plaintext to this TLS port (not a TLS ClientHello)" if plaintext
                else "TLS handshake from a client failed")
        log.warning("%s, connection closed: %s%s", what, why,
                    f"; {more} more like it since the last such line" if more else "")


handshakes = _HandshakeLog()


class _LoggedSSLObject(ssl.SSLObject):
    """An SSLObject whose failed server-side handshake is logged (handshakes)."""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as e:
            if self.server_side:
                handshakes.failed(e)
            raise


def wrap(sock: socket.socket, ctx: ssl.SSLContext, hostname: str, where: str) -> ssl.SSLSocket:
    """`sock` (connected, blocking with a timeout) after a TLS handshake with the node at `where` (host:port);
    TlsError saying why (and `sock` closed) when the handshake fails."""
    try:
        return ctx.wrap_socket(sock, server_hostname=hostname)
    except (ssl.SSLError, ssl.CertificateError, ConnectionResetError, BrokenPipeError) as e:
        sock.close()
        raise TlsError(describe(e, where)) from None


def self_signed_cert(directory: str, ip: str = "127.0.0.1", name: str = "rpmp", days: int = 7) -> tuple[str, str]:
    """(cert.pem, key.pem) in `directory`: a fresh self-signed EC P-256 certificate for `ip` (its IP SAN, so hostname
    verification passes), made with the `openssl` command (FileNotFoundError without it); the key file is 0600."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", cert, "-days", str(days), "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=IP:{ip}"], check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o600)
    return cert, key
