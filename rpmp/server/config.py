"""Node configuration: defaults < config file < RPMP_* environment variables < command-line flags."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from rpmp import protocol

UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str | int) -> int:
    """'512m', '4g', '4096', '1.5g' -> bytes."""
    if isinstance(text, int):
        return text
    t = str(text).strip().lower().removesuffix("b").removesuffix("i")
    try:
        if t and t[-1] in UNITS:
            return int(float(t[:-1]) * UNITS[t[-1]])
        return int(t)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (use e.g. 4096, 512m, 4g)") from None


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a host:port: {text!r}")
    return host, int(port)


@dataclass
class NodeConfig:
    host: str = "127.0.0.1"
    port: int = 7077
    node_id: str = ""  # default host:port
    pool: str = "/dev/shm/rpmp.pool"
    pool_size: int = 1 << 30
    seeds: list[str] = field(default_factory=list)
    heartbeat_interval: float = 0.5
    dead_after: float = 3.0
    max_data: int = protocol.DEFAULT_MAX_DATA
    max_connections: int = 1024
    verify_on_open: bool = True
    verify_push: bool = True
    verify_fetch: bool = True  # FETCH records are checked against their XXH3 before they leave (CORRUPT if not)
    sendfile: bool = False  # FETCH replies by sendfile(2) from the pool file (slower on tmpfs: ARCHITECTURE.md)
    send_timeout: float = 120.0  # seconds a client may take nothing of a reply before it is dropped
    frame_timeout: float = 30.0  # seconds a frame may take to arrive (plus 1 s per MiB of data)
    idle_timeout: float = 600.0  # seconds a connection may send nothing before it is closed
    staging_memory: int = 64 << 20  # bytes all connections' staging buffers may grow by together
    # The disk tier (ARCHITECTURE.md "The disk tier"): spill files in these directories, spread over them.
    spill_dirs: list[str] = field(default_factory=list)  # none: no disk tier (a full pool answers POOL_FULL)
    spill_size: int = 0  # bytes the spill files may hold together; 0: what the directories' file systems have
    spill_high: float = 0.85  # pool use (fraction of its capacity) above which idle blocks move to disk...
    spill_low: float = 0.65  # ...until use is below this
    full_wait: float = 30.0  # seconds a push waits for room while spilling makes some, before POOL_FULL
    app_quota: int = 0  # bytes one app may hold on this node, both tiers together; 0: no quota
    app_ttl: float = 3600.0  # seconds an app nobody renewed (LEASE, or a request naming it) lives on; 0: forever
    metrics_port: int = 0  # serve Prometheus /metrics on host:metrics_port (docs/OPERATIONS.md); 0: off
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if not self.node_id:
            self.node_id = f"{self.host}:{self.port}"
        self.check_values()

    def check_values(self) -> None:
        """ValueError (one line naming the setting) for a disk-tier setting out of range. Pure: no file is
        touched, so it runs on every construction; validate() adds the directories."""
        check_spill_values(self.spill_size, self.spill_high, self.spill_low, self.full_wait, self.app_quota)
        check_app_ttl(self.app_ttl)
        if not 0 <= self.metrics_port < 65536:
            raise ValueError(f"metrics_port={self.metrics_port}: must be a TCP port in 1..65535 (0: no metrics)")

    def validate(self) -> NodeConfig:
        """check_values(), then the spill directories: each must be a writable directory, or be creatable (its
        parent exists: it is then created, mode 0700), and no two may be the same directory. load() calls it, so
        a node started from the command line fails here, before its pool is created; a node built from a
        NodeConfig made otherwise should call it before opening storage. Idempotent."""
        self.check_values()
        prepare_spill_dirs(self.spill_dirs)
        return self

    @classmethod
    def load(cls, path: str | None = None, env: Mapping[str, str] | None = None, **overrides: object) -> NodeConfig:
        """Build a config from a key = value file, RPMP_<NAME> variables and explicit overrides."""
        values: dict[str, object] = {}
        if path:
            values.update(_unalias(read_conf_file(path)))
        environ: Mapping[str, str] = os.environ if env is None else env
        for name in (*ALIASES, *(f.name for f in fields(cls))):  # aliases first: the field's own name wins
            v = environ.get("RPMP_" + name.upper())
            if v is not None:
                values[ALIASES.get(name, name)] = v
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**{k: _convert(cls, k, v) for k, v in values.items()}).validate()


# Other names a setting is known by in a file (`spill_dir = /a,/b`, `spill-dir`) and the environment
# (RPMP_SPILL_DIR); the field's own name wins when both are given.
ALIASES = {"spill_dir": "spill_dirs"}


def _unalias(values: dict[str, str]) -> dict[str, str]:
    out = {ALIASES.get(k, k): v for k, v in values.items() if k in ALIASES}
    out.update({k: v for k, v in values.items() if k not in ALIASES})
    return out


def check_spill_values(spill_size: int | None = None, spill_high: float | None = None,
                       spill_low: float | None = None, full_wait: float | None = None,
                       app_quota: int | None = None) -> None:
    """ValueError (one line naming the setting) for a disk-tier value out of range; None: not given, not checked
    (NodeConfig checks all of them; LocalNode and LocalCluster check theirs before they start anything)."""
    for name, v in (("spill_high", spill_high), ("spill_low", spill_low)):
        if v is not None and not 0 < v <= 1:
            raise ValueError(f"{name}={v}: must be a fraction of the pool's capacity in (0, 1]")
    if spill_high is not None and spill_low is not None and not spill_low < spill_high:
        raise ValueError(f"spill_low={spill_low} must be below spill_high={spill_high} (spilling runs from high "
                         f"down to low)")
    if full_wait is not None and not (math.isfinite(full_wait) and full_wait >= 0):
        raise ValueError(f"full_wait={full_wait}: must be a number of seconds >= 0")
    if spill_size is not None and spill_size < 0:
        raise ValueError(f"spill_size={spill_size}: must be >= 0 bytes (0: what the directories' file systems have)")
    if app_quota is not None and app_quota < 0:
        raise ValueError(f"app_quota={app_quota}: must be >= 0 bytes (0: no quota)")


MAX_APP_TTL = 0xFFFFFFFF / 1000  # LEASE answers the TTL as u32 milliseconds: about 49.7 days


def check_app_ttl(app_ttl: float) -> None:
    """ValueError (one line) for an app TTL that is not 0 (never expire) or a number of seconds up to ~49 days."""
    if not (math.isfinite(app_ttl) and 0 <= app_ttl <= MAX_APP_TTL):
        raise ValueError(f"app_ttl={app_ttl}: must be seconds in [0, {MAX_APP_TTL:.0f}] (0: apps never expire)")


def spill_dir_problem(path: str) -> str | None:
    """Why `path` cannot be a spill directory (None if it can: a writable directory, or a missing one whose
    parent is a writable directory). Touches nothing."""
    if not path:
        return "spill dir '': an empty path"
    if os.path.lexists(path):
        if not os.path.isdir(path):
            return f"spill dir {path!r}: exists and is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"spill dir {path!r}: not writable"
        return None
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"spill dir {path!r}: does not exist, nor does its parent {parent!r}"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"spill dir {path!r}: does not exist and its parent {parent!r} is not writable"
    return None


def check_spill_dirs(dirs: Sequence[str]) -> None:
    """ValueError if a directory cannot be a spill directory (spill_dir_problem) or two name the same
    directory. Touches nothing."""
    seen: dict[str, str] = {}
    for d in dirs:
        problem = spill_dir_problem(d)
        if problem:
            raise ValueError(problem)
        real = os.path.realpath(d)
        if real in seen:
            raise ValueError(f"spill dir {d!r} is given twice (as {seen[real]!r} too)")
        seen[real] = d


def prepare_spill_dirs(dirs: Sequence[str]) -> list[str]:
    """check_spill_dirs(), then create the missing directories (mode 0700): ValueError before anything is
    created. Returns the directories it created."""
    check_spill_dirs(dirs)
    made = []
    for d in dirs:
        if not os.path.isdir(d):
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                continue
            except OSError as e:
                raise ValueError(f"spill dir {d!r}: cannot create it ({e.strerror})") from None
            made.append(d)
    return made


def read_conf_file(path: str) -> dict[str, str]:
    """Lines of `name = value` (or `rpmp.node.name value`); `#` starts a comment."""
    out: dict[str, str] = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if "=" in line:
                k, v = (s.strip() for s in line.split("=", 1))
            else:
                k, _, v = line.partition(" ")
                v = v.strip()
            k = k.removeprefix("rpmp.node.").replace("-", "_").replace(".", "_")
            if not k or not v:
                raise ValueError(f"{path}:{n}: expected `name = value`")
            out[k] = v
    return out


def _convert(cls: type[NodeConfig], name: str, value: object) -> Any:
    """`value` as the field's type (a str from a file or the environment is parsed; anything else is kept)."""
    kinds = {f.name: f.type for f in fields(cls)}
    if name not in kinds:
        raise ValueError(f"unknown setting {name!r} (known: {', '.join(sorted(kinds))})")
    kind = kinds[name]
    if isinstance(value, str):
        if kind == "int":
            return parse_size(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            return value.strip().lower() in ("1", "true", "yes", "on")
        if kind == "list[str]":
            return [s.strip() for s in value.split(",") if s.strip()]
    return value
