#!/usr/bin/env python3
"""rpmp-ping: the chart's readiness probe. Sends one PING (docs/PROTOCOL.md) to a node and exits 0 when it
answers, 1 (one line on stderr) when it does not.

Why not `rpmp stat`: stat asks the node for its members and then every live member for STATS, so one pod's
readiness would hang on its peers, and STATS needs authentication when the node has an auth file. PING is
answered before authentication ("for health probes; it tells nothing"). The standard library only: it starts
in tens of milliseconds, where importing the rpmp package takes longer.

Usage: rpmp-ping [--host HOST] [--port PORT] [--timeout S] [--tls [--ca FILE] [--cert FILE --key FILE]]
HOST defaults to $RPMP_HOST (the name the node listens on), PORT to $RPMP_PORT, else 7177.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import struct
import sys

MAGIC, VERSION, OP_PING = 0x504D5052, 2, 0x02
FLAG_RESPONSE, FLAG_ERROR = 0x1, 0x2
HEADER = struct.Struct("<IBBHQIIQ")  # magic, version, opcode, flags, request_id, meta_len, reserved, data_len
REQUEST_ID = 0x70696E67  # "ping"


def ping(host: str, port: int, timeout: float, tls: ssl.SSLContext | None) -> None:
    """Raise (OSError, ValueError) unless the node answers the PING with a response frame."""
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw
        sock.sendall(HEADER.pack(MAGIC, VERSION, OP_PING, 0, REQUEST_ID, 0, 0, 0))
        head = _recv(sock, HEADER.size)
        magic, version, op, flags, rid, meta_len, _, data_len = HEADER.unpack(head)
        if magic != MAGIC or op != OP_PING or rid != REQUEST_ID or not flags & FLAG_RESPONSE:
            raise ValueError(f"answered, but not as an RPMP node (header {head[:8].hex()})")
        body = _recv(sock, meta_len + data_len) if meta_len + data_len <= 1 << 20 else b""
        if flags & FLAG_ERROR:
            code = struct.unpack_from("<H", body)[0] if len(body) >= 2 else -1
            raise ValueError(f"answered PING with error code {code}")


def _recv(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        got = sock.recv(n - len(out))
        if not got:
            raise ValueError("closed the connection without an answer")
        out += got
    return bytes(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rpmp-ping", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default=os.environ.get("RPMP_HOST", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("RPMP_PORT", "7177")))
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--tls", action="store_true", help="speak TLS (the node runs with --tls-cert)")
    ap.add_argument("--ca", help="CA to check the node's certificate against (default: not checked)")
    ap.add_argument("--cert", help="client certificate, when the node checks clients' (--tls-ca)")
    ap.add_argument("--key", help="its key")
    args = ap.parse_args(argv)
    tls = None
    if args.tls:
        tls = ssl.create_default_context(cafile=args.ca)  # the node's name, as the certificate must give it
        if not args.ca:
            tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
        if args.cert:
            tls.load_cert_chain(args.cert, args.key)
    try:
        ping(args.host, args.port, args.timeout, tls)
    except (OSError, ValueError) as e:
        print(f"rpmp-ping: {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
