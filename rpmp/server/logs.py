"""The node's log lines: text or JSON (`--log-format`), and the one line a failed request gets.

A failed request's line names its app, shuffle and peer as `logging` extras (`app`, `shuffle`, `peer`): the text
format appends them as `app=... shuffle=... peer=...`, the JSON format has them as keys, so a log pipeline can
select one app's failures without parsing messages. Only failures are logged: a request that succeeds costs
nothing here.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from rpmp import _wire as wire
from rpmp.auth import CLUSTER, SEP, display_app
from rpmp.protocol import ErrorCode, Op, ProtocolError

LOG_FORMATS = ("text", "json")

#: The structured fields a record may carry (logging's `extra=`), in the order the text format prints them.
FIELDS = ("app", "shuffle", "partition", "peer", "op", "code", "node")

_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class TextFormatter(logging.Formatter):
    """The classic line, then the record's structured fields as ` key=value`."""

    def __init__(self) -> None:
        super().__init__(_TEXT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={_text(getattr(record, k))}" for k in FIELDS if hasattr(record, k))
        if not extra:
            return line
        head, nl, tail = line.partition("\n")  # a traceback stays below the line
        return f"{head} {extra}{nl}{tail}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts (UTC, ISO 8601 with milliseconds), level, logger, msg, the structured fields
    given (null where a failed request names no app or shuffle), and exc (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STANDARD and not k.startswith("_"):
                out[k] = v if v is None or isinstance(v, (str, int, float, bool)) else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def _text(v: object) -> str:
    """A field's value in the text format: `-` for none, quoted if it has spaces, quotes or `=`."""
    if v is None:
        return "-"
    s = str(v)
    return json.dumps(s) if not s or any(c.isspace() or c in '"=' for c in s) else s


def configure(level: str, fmt: str = "text") -> None:
    """The root logger to stderr, at `level`, in `fmt` (text or json); replaces handlers set before."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log_format={fmt!r}: must be text or json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


# ---- failed requests ------------------------------------------------------------------------------------------

E = TypeVar("E", bound=BaseException)

_DECODERS: dict[int, Callable[[Any], tuple[Any, ...]]] = {
    Op.PUSH: wire.decode_push, Op.FETCH: wire.decode_fetch, Op.MAP_END: wire.decode_map_end,
    Op.PARTITION_INFO: wire.decode_partition_info, Op.DELETE_SHUFFLE: wire.decode_delete_shuffle}


def subject(op: int, meta: bytes | memoryview | None) -> tuple[str | None, int | None]:
    """The app and shuffle a request names (None where it names none, or its meta does not decode). Called on
    failure paths only: it decodes the meta a second time."""
    if meta is None:
        return None, None
    try:
        if op in _DECODERS:
            fields = _DECODERS[op](meta)
            return str(fields[0]), int(fields[1])
        if op == Op.REGISTER_SHUFFLE:
            try:
                app, sid, _, _ = wire.decode_register(meta)
            except ProtocolError:
                (app, sid, _, _), _ = wire.decode_register_forwarded(meta)
            return app, sid
        if op == Op.DELETE_APP:
            return wire.decode_delete_app(meta), None
        if op == Op.LEASE:
            return wire.decode_lease(meta), None
    except Exception:  # a request malformed enough to fail: nothing to name
        pass
    return None, None


def tag(err: E, app: str | None, shuffle: int | None) -> E:
    """Note on `err` the app and shuffle of the request it failed (kept if already noted); returns `err`."""
    if getattr(err, "rpmp_subject", None) is None and (app is not None or shuffle is not None):
        err.rpmp_subject = (app, shuffle)  # type: ignore[attr-defined]
    return err


def tag_from(err: E, op: int, meta: bytes | memoryview | None) -> E:
    if getattr(err, "rpmp_subject", None) is None:
        tag(err, *subject(op, meta))
    return err


def peer_name(address: object) -> str:
    """A socket's peer address as log lines name it: host:port ([host]:port for IPv6)."""
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)


def subject_fields(err: BaseException, peer: str) -> dict[str, object]:
    """`extra=` of a line about a failed request: the app and shuffle noted on `err`, and the peer."""
    app, shuffle = getattr(err, "rpmp_subject", None) or (None, None)
    return {"app": None if app is None else display_app(app), "shuffle": shuffle, "peer": peer}


# What a client meets in normal operation (a retry, a full pool, a draining node, a missing key): INFO. The rest
# (a corrupt segment, a bad request, a denied tenant, a bug) is WARNING.
_ROUTINE = frozenset({ErrorCode.NOT_FOUND, ErrorCode.UNAVAILABLE, ErrorCode.POOL_FULL, ErrorCode.QUOTA_EXCEEDED,
                      ErrorCode.INCOMPLETE, ErrorCode.CONFLICT})
_KV_OPS = frozenset({Op.GET, Op.READ, Op.DELETE, Op.FREE})
MAX_LINES_PER_SECOND = 50  # failure lines; beyond, one line a second says how many were left out


class FailureLog:
    """Logs error replies, one line each (bounded: a client failing in a loop cannot fill the disk)."""

    def __init__(self, logger: logging.Logger):
        self.log = logger
        self.second = 0
        self.lines = 0
        self.suppressed = 0

    def __call__(self, peer: str, op: int, err: ProtocolError, tenant: str | None = None) -> None:
        """tenant: what the connection acts for (None: an open node); a tenant's app is named `tenant/app`, as
        STATS names it."""
        code = err.code
        if code == ErrorCode.NOT_FOUND and op in _KV_OPS:
            level = logging.DEBUG  # a cache miss of the key-value API
        else:
            level = logging.INFO if code in _ROUTINE else logging.WARNING
        now = int(time.monotonic())
        if now != self.second:  # a new second: first say how many the last one left out
            if self.suppressed:
                self.log.warning("%d more failed requests not logged (over %d lines a second)", self.suppressed,
                                 MAX_LINES_PER_SECOND)
            self.second, self.lines, self.suppressed = now, 0, 0
        if not self.log.isEnabledFor(level):
            return
        if self.lines >= MAX_LINES_PER_SECOND:
            self.suppressed += 1
            return
        self.lines += 1
        app, shuffle = getattr(err, "rpmp_subject", None) or (None, None)
        if app is not None:  # a peer's forwarded frame names the node's own name, tenant U+001F app
            app = display_app(app) if tenant is None or tenant == CLUSTER or SEP in app else f"{tenant}/{app}"
        try:
            name = Op(op).name
        except ValueError:
            name = f"{op:#04x}"
        code_name = code.name if isinstance(code, ErrorCode) else str(code)
        self.log.log(level, "%s failed: %s: %s", name, code_name, err.message,
                     extra={"app": app, "shuffle": shuffle, "peer": peer, "op": name, "code": code_name})
