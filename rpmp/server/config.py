"""Node configuration: defaults < config file < RPMP_* environment variables < command-line flags."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from rpmp import protocol

MIN_POOL_SIZE = 8 << 20  # rpmp._pool.MIN_POOL_SIZE (native/rpmp_pool.h), without importing the extension

V = TypeVar("V")

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
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or host_problem(host) is not None:
        raise ValueError(f"not a host:port: {text!r} (e.g. 10.0.0.5:{DEFAULT_PORT})")
    return host, int(port)


def host_problem(host: str) -> str | None:
    """Why `host` cannot be a host name or address (None if it may be one; whether it resolves is for bind or
    connect to find out). Touches nothing."""
    h = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not h:
        return "an empty host"
    if any(c.isspace() or c in "/,;@" for c in h) or ".." in h or h.startswith(("-", ".")):
        return f"not a host name or address: {host!r}"
    return None


# Not 7077 (Spark's standalone master), 7337 (Spark's external shuffle service), 4040, 8080/8081, 9097 (Celeborn),
# 19997/19999 (Uniffle), 9092 (Kafka) nor any port /etc/services names: RPMP nodes often run beside all of these.
DEFAULT_PORT = 7177
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL")


class SettingError(ValueError):
    """A setting's value is wrong; `key` names the setting, so that NodeConfig.load can say where it came from."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


@dataclass
class NodeConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
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
    # TLS (docs/PROTOCOL.md "TLS"): the port speaks TLS with this certificate and key; with tls_ca, clients and
    # peers must present certificates signed by it. PEM files, checked (and matched) by check().
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    # Authentication (docs/PROTOCOL.md "Authentication and tenants"): `tenant secret` lines; without it the node
    # runs open. The cluster secret (one line) is what nodes and operator tools authenticate with as @cluster.
    auth_file: str = ""
    cluster_secret_file: str = ""
    pool_mode: int = 0o600  # mode of the pool and spill files the node creates (who may map them: every tenant)
    log_level: str = "INFO"
    log_format: str = "text"  # text, or json: one object a line (rpmp/server/logs.py)

    def __post_init__(self) -> None:
        if not self.node_id:
            self.node_id = f"{self.host}:{self.port}"
        self.check_values()

    def check_values(self) -> None:
        """ValueError (one line naming the setting) for a disk-tier setting out of range. Pure: no file is
        touched, so it runs on every construction; validate() adds the directories."""
        check_spill_values(self.spill_size, self.spill_high, self.spill_low, self.full_wait, self.app_quota)
        check_app_ttl(self.app_ttl)
        self.check_node_values()

    def check_node_values(self) -> None:
        """SettingError (one line naming the setting) for an address, port, size, count or time out of range."""
        problem = host_problem(self.host)
        if problem:
            raise SettingError("host", f"host={self.host!r}: {problem}")
        if not (isinstance(self.port, int) and 0 <= self.port <= 65535):
            raise SettingError("port", f"port={self.port}: must be a TCP port in 0..65535 (0: any free port)")
        if not self.pool:
            raise SettingError("pool", "pool='': names no file")
        if not isinstance(self.pool_size, int) or self.pool_size < MIN_POOL_SIZE:
            raise SettingError("pool_size", f"pool_size={self.pool_size}: must be at least {MIN_POOL_SIZE >> 20} "
                               f"MiB (e.g. 512m, 4g)")
        for seed in self.seeds:
            try:
                parse_hostport(seed)
            except ValueError as e:
                raise SettingError("seeds", f"seeds: {e}") from None
        for name in ("heartbeat_interval", "dead_after", "send_timeout", "frame_timeout", "idle_timeout"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise SettingError(name, f"{name}={v}: must be a number of seconds > 0")
        if not self.dead_after > self.heartbeat_interval:
            raise SettingError("dead_after", f"dead_after={self.dead_after} must be above heartbeat_interval="
                               f"{self.heartbeat_interval} (a node is dead after missing several heartbeats)")
        if not (isinstance(self.max_connections, int) and self.max_connections >= 1):
            raise SettingError("max_connections", f"max_connections={self.max_connections}: must be at least 1")
        if not (isinstance(self.max_data, int) and self.max_data > 0):
            raise SettingError("max_data", f"max_data={self.max_data}: must be > 0 bytes")
        if not (isinstance(self.staging_memory, int) and self.staging_memory >= 0):
            raise SettingError("staging_memory", f"staging_memory={self.staging_memory}: must be >= 0 bytes")
        if str(self.log_level).upper() not in LOG_LEVELS:
            raise SettingError("log_level", f"log_level={self.log_level!r}: must be one of DEBUG, INFO, WARNING, "
                               f"ERROR, CRITICAL")
        if self.log_format not in ("text", "json"):
            raise SettingError("log_format", f"log_format={self.log_format!r}: must be text or json")
        if not 0 <= self.metrics_port < 65536:
            raise SettingError("metrics_port", f"metrics_port={self.metrics_port}: must be a TCP port in 1..65535 "
                               f"(0: no metrics)")

    def validate(self) -> NodeConfig:
        """check_values(), then the spill directories: each must be a writable directory, or be creatable (its
        parent exists: it is then created, mode 0700), and no two may be the same directory. load() calls it, so
        a node started from the command line fails here, before its pool is created; a node built from a
        NodeConfig made otherwise should call it before opening storage. Idempotent."""
        self.check_values()
        self.check_tls()
        self.check_auth()
        prepare_spill_dirs(self.spill_dirs)
        return self

    def check(self) -> NodeConfig:
        """check_values(), then the spill directories as check_spill_dirs() sees them: everything validate() checks,
        creating nothing (the node creates the directories once its port and pool checks passed too)."""
        self.check_values()
        self.check_tls()
        self.check_auth()
        check_spill_dirs(self.spill_dirs)
        return self

    def check_tls(self) -> None:
        """SettingError (one line) unless the TLS files are usable together: readable, key matching cert."""
        from rpmp.tls import check_node_files

        try:
            check_node_files(self.tls_cert, self.tls_key, self.tls_ca)
        except ValueError as e:
            key = next((k for k in ("tls_key", "tls_ca", "tls_cert") if str(e).startswith(k)), "tls_cert")
            raise SettingError(key, str(e)) from None

    def check_auth(self) -> None:
        """SettingError (one line) unless the auth settings work together: files readable by their owner only
        and well-formed, a cluster secret when seeds are given (peers must authenticate), a sane pool mode."""
        from rpmp.auth import AuthFileError, load_auth_file, load_secret_file

        if not (isinstance(self.pool_mode, int) and 0 <= self.pool_mode <= 0o777 and self.pool_mode & 0o600 == 0o600):
            raise SettingError("pool_mode", f"pool_mode={self.pool_mode!r}: must be an octal file mode with owner "
                               f"read and write (e.g. 0600, 0640)")
        for key, path, load in (("auth_file", self.auth_file, load_auth_file),
                                ("cluster_secret_file", self.cluster_secret_file, load_secret_file)):
            try:
                if path:
                    load(path)
            except AuthFileError as e:
                raise SettingError(key, str(e)) from None
        if self.auth_file and self.seeds and not self.cluster_secret_file:
            raise SettingError("cluster_secret_file", "auth_file without cluster_secret_file: with seeds, peers must "
                               "authenticate as @cluster (give --cluster-secret-file)")

    @classmethod
    def load(cls, path: str | None = None, env: Mapping[str, str] | None = None, **overrides: object) -> NodeConfig:
        """Build a config from a key = value file, RPMP_<NAME> variables and explicit overrides, and check it
        (check(): nothing is created). A bad value is a ValueError of one line naming where it came from: the
        file and line, or the environment variable (a flag's is named by the caller)."""
        values: dict[str, object] = {}
        where: dict[str, str] = {}  # setting -> where its value came from, for messages
        if path:
            for k, (n, text) in _unalias(read_conf_lines(path)).items():
                values[k], where[k] = text, f"{path}:{n}: "
        environ: Mapping[str, str] = os.environ if env is None else env
        for name in (*ALIASES, *(f.name for f in fields(cls))):  # aliases first: the field's own name wins
            got = environ.get("RPMP_" + name.upper())
            if got is not None:
                values[ALIASES.get(name, name)], where[ALIASES.get(name, name)] = got, f"RPMP_{name.upper()}: "
        for k, given in overrides.items():
            if given is not None:
                values[k] = given
                where.pop(k, None)
        converted = {}
        for k, value in values.items():
            try:
                converted[k] = _convert(cls, k, value)
            except ValueError as e:
                raise ValueError(f"{where.get(k, '')}{e}") from None
        try:
            return cls(**converted).check()
        except SettingError as e:
            raise ValueError(f"{where.get(e.key, '')}{e}") from None


SECRET_WORDS = ("secret", "password", "token", "passphrase")


def public_config(config: NodeConfig) -> dict[str, object]:
    """The node's effective settings as STATS shows them (`rpmp admin config`): every field, except that a
    setting whose name says it holds a secret is shown only when it names a file (`..._file`, `..._path`,
    `..._dir`): a secret's value never leaves the node, where it is kept is what an operator needs."""
    out: dict[str, object] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if any(w in f.name for w in SECRET_WORDS) and not f.name.endswith(("_file", "_path", "_dir", "_files")):
            value = None if value in (None, "", b"") else "(hidden)"
        if isinstance(value, (list, tuple)):
            value = [v if isinstance(v, (str, int, float, bool)) else str(v) for v in value]
        elif not isinstance(value, (str, int, float, bool, type(None))):
            value = str(value)  # JSON has no other kinds
        out[f.name] = value
    return out


# The meaning of settings that have no flag (a flag's help text is the meaning of the others): what
# docs/CONFIGURATION.md says of them (scripts/gen_config_reference.py; a setting with neither fails its test).
UNFLAGGED_HELP = {
    "verify_on_open": "check every record of the pool (and of spill files not known intact) against its XXH3 when "
                      "the node opens them; a damaged one is quarantined, never served (config file and environment "
                      "only)",
}


# Other names a setting is known by in a file (`spill_dir = /a,/b`, `spill-dir`) and the environment
# (RPMP_SPILL_DIR); the field's own name wins when both are given.
ALIASES = {"spill_dir": "spill_dirs"}


def _unalias(values: dict[str, V]) -> dict[str, V]:
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
            raise SettingError(name, f"{name}={v}: must be a fraction of the pool's capacity in (0, 1]")
    if spill_high is not None and spill_low is not None and not spill_low < spill_high:
        raise SettingError("spill_low", f"spill_low={spill_low} must be below spill_high={spill_high} (spilling "
                           f"runs from high down to low)")
    if full_wait is not None and not (math.isfinite(full_wait) and full_wait >= 0):
        raise SettingError("full_wait", f"full_wait={full_wait}: must be a number of seconds >= 0")
    if spill_size is not None and spill_size < 0:
        raise SettingError("spill_size", f"spill_size={spill_size}: must be >= 0 bytes (0: what the directories' "
                           f"file systems have)")
    if app_quota is not None and app_quota < 0:
        raise SettingError("app_quota", f"app_quota={app_quota}: must be >= 0 bytes (0: no quota)")


MAX_APP_TTL = 0xFFFFFFFF / 1000  # LEASE answers the TTL as u32 milliseconds: about 49.7 days


def check_app_ttl(app_ttl: float) -> None:
    """ValueError (one line) for an app TTL that is not 0 (never expire) or a number of seconds up to ~49 days."""
    if not (math.isfinite(app_ttl) and 0 <= app_ttl <= MAX_APP_TTL):
        raise SettingError("app_ttl", f"app_ttl={app_ttl}: must be seconds in [0, {MAX_APP_TTL:.0f}] (0: apps "
                           f"never expire)")


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
    return {k: v for k, (_, v) in read_conf_lines(path).items()}


def read_conf_lines(path: str) -> dict[str, tuple[int, str]]:
    """read_conf_file's settings with the line each came from. ValueError (one line) for a file that cannot be
    read or a line that is not a setting."""
    out: dict[str, tuple[int, str]] = {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise ValueError(f"config file {path}: does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"config file {path}: is a directory") from None
    except UnicodeDecodeError:
        raise ValueError(f"config file {path}: not a text file") from None
    except OSError as e:
        raise ValueError(f"config file {path}: cannot read it ({e.strerror})") from None
    for n, line in enumerate(lines, 1):
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
        out[k] = (n, v)
    return out


TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _convert(cls: type[NodeConfig], name: str, value: object) -> Any:
    """`value` as the field's type (a str from a file or the environment is parsed strictly: ValueError naming the
    setting for anything but a value of its type; anything else is kept)."""
    kinds = {f.name: f.type for f in fields(cls)}
    if name not in kinds:
        raise ValueError(f"unknown setting {name!r} (known: {', '.join(sorted(kinds))})")
    kind = kinds[name]
    if isinstance(value, str):
        text = value.strip()
        if name == "pool_mode":
            try:
                return int(text, 8)
            except ValueError:
                raise ValueError(f"{name} = {value!r}: not an octal file mode (e.g. 0600)") from None
        if kind == "int":
            try:
                return parse_size(text)
            except ValueError:
                raise ValueError(f"{name} = {value!r}: not a whole number or size (e.g. 1024, 512m, 4g)") from None
        if kind == "float":
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"{name} = {value!r}: not a number") from None
        if kind == "bool":
            if text.lower() in TRUE:
                return True
            if text.lower() in FALSE:
                return False
            raise ValueError(f"{name} = {value!r}: not a boolean (true/false, yes/no, on/off, 1/0)")
        if kind == "list[str]":
            return [s.strip() for s in value.split(",") if s.strip()]
        return text
    return value
