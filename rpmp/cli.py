"""The `rpmp` command: server, cluster, stat, drain.

Settings come from (lowest to highest) built-in defaults, a config file (`--config` or RPMP_CONFIG; none
by default: an installed package has no source tree to find spark-conf/rpmp-node.conf in, and a node
must not pick up whichever file sits next to its code), RPMP_<NAME> environment variables and flags.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from rpmp.server.config import DEFAULT_PORT, NodeConfig, parse_size

T = TypeVar("T")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rpmp")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _port(text: str) -> int:
    """A TCP port 0..65535 (argparse type: a bad one is a usage error, exit 2)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port}: a TCP port is 0..65535")
    return port


def _node_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="node config file (`name = value` lines, e.g. "
                   "spark-conf/rpmp-node.conf of the source tree); default: env RPMP_CONFIG, else none")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; env RPMP_HOST)")
    p.add_argument("--port", type=_port, help=f"TCP port, 0 picks a free one (default {DEFAULT_PORT}; env RPMP_PORT)")
    p.add_argument("--node-id", help="name of this node in the cluster (default host:port)")
    p.add_argument("--pool", help="pool file: a file on /dev/shm or on a PMem (fsdax) mount; created if "
                   "missing (default /dev/shm/rpmp.pool; env RPMP_POOL)")
    p.add_argument("--pool-size", type=_size, help="size of a new pool, e.g. 512m, 4g (default 1g)")
    p.add_argument("--seeds", help="comma-separated host:port of seed nodes to join (default: none, a "
                   "single node or the first seed)")
    p.add_argument("--heartbeat-interval", type=float, help="seconds between heartbeats to the seeds (0.5)")
    p.add_argument("--dead-after", type=float, help="seconds without heartbeats before a node is dead (3)")
    p.add_argument("--max-data", type=_size, help="largest data part a frame may carry (256m)")
    p.add_argument("--max-connections", type=int, help="client connections accepted at once (1024)")
    p.add_argument("--no-verify-push", dest="verify_push", action="store_const", const=False,
                   help="do not verify each pushed segment's XXH3 checksum on receipt (readers still verify)")
    p.add_argument("--no-verify-fetch", dest="verify_fetch", action="store_const", const=False,
                   help="do not check FETCH records against their XXH3 on the node before they leave (readers "
                   "still verify; the node then cannot quarantine a corrupt copy)")
    p.add_argument("--sendfile", action=argparse.BooleanOptionalAction, default=None,
                   help="send large FETCH replies with sendfile(2) from the pool file instead of writev(2) from "
                   "its mapping (off: on tmpfs it costs the node more CPU; see docs/ARCHITECTURE.md)")
    p.add_argument("--send-timeout", type=float, help="seconds a client may read nothing of a reply before "
                   "its connection is dropped (120)")
    p.add_argument("--frame-timeout", type=float, help="seconds a request frame may take to arrive, plus 1 s per "
                   "MiB of data, before its connection is dropped (30)")
    p.add_argument("--idle-timeout", type=float, help="seconds a connection may send nothing before it is "
                   "closed (600)")
    p.add_argument("--staging-memory", type=_size, help="memory all connections' frame buffers may grow by "
                   "together, beyond 64 KiB each (64m)")
    _spill_args(p)
    p.add_argument("--app-ttl", type=float, help="seconds an application's data stays on the node after its "
                   "last renewal (a LEASE, or a request naming it): a dead driver's data is deleted then "
                   "(default 3600; 0: never)")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics at "
                   "http://HOST:PORT/metrics (docs/OPERATIONS.md; default 0: off)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING (default INFO)")
    p.add_argument("--log-format", choices=("text", "json"), help="text lines, or one JSON object a line (ts, "
                   "level, logger, msg, and app, shuffle, peer, ... when a line has them; default text; env "
                   "RPMP_LOG_FORMAT)")
    p.add_argument("--tls-cert", metavar="FILE", help="speak TLS on the port with this PEM certificate (and "
                   "--tls-key); peers are reached with TLS too (docs/OPERATIONS.md \"TLS\"; env RPMP_TLS_CERT)")
    p.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert (unencrypted)")
    p.add_argument("--tls-ca", metavar="FILE", help="PEM CA: clients and peers must present a certificate it "
                   "signed; peers' certificates are checked against it")
    p.add_argument("--auth-file", metavar="FILE", help="`tenant secret` lines (mode 0600): every connection "
                   "authenticates; SIGHUP re-reads it (docs/OPERATIONS.md \"Authentication\"; default: none, open)")
    p.add_argument("--cluster-secret-file", metavar="FILE", help="one line (mode 0600): the secret nodes and "
                   "operator tools authenticate with as @cluster (needed with --auth-file and --seeds)")
    p.add_argument("--pool-mode", metavar="OCTAL", help="mode of the pool and spill files the node creates (default "
                   "0600; whoever may read them reads every tenant's data)")


def _client_tls_args(p: argparse.ArgumentParser) -> None:
    """`rpmp stat|drain` to nodes started with --tls-cert."""
    p.add_argument("--tls", action="store_true", help="connect with TLS (nodes started with --tls-cert)")
    p.add_argument("--tls-ca", metavar="FILE", help="with --tls: PEM CA the nodes' certificates are checked "
                   "against (default: the system's)")
    p.add_argument("--tls-cert", metavar="FILE", help="with --tls: client certificate (nodes started with --tls-ca)")
    p.add_argument("--tls-key", metavar="FILE", help="with --tls: the client certificate's key")


def _client_auth_args(p: argparse.ArgumentParser) -> None:
    """`rpmp stat|drain|admin` to nodes started with --auth-file: as a tenant, or as @cluster (the operator)."""
    p.add_argument("--tenant", help="authenticate as this tenant (with --secret-file); it sees its own apps only")
    p.add_argument("--secret-file", metavar="FILE", help="with --tenant: a file (mode 0600) holding its secret")
    p.add_argument("--cluster-secret-file", metavar="FILE", help="authenticate as @cluster with the nodes' "
                   "cluster secret (every tenant's apps; what DRAIN needs)")


def _auth_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Client(...) authentication arguments from _client_auth_args' flags ({}: connect without authenticating)."""
    if args.cluster_secret_file:
        if args.tenant or args.secret_file:
            raise ValueError("give --cluster-secret-file, or --tenant with --secret-file, not both")
        return {"tenant": "@cluster", "secret_file": args.cluster_secret_file}
    if bool(args.tenant) != bool(args.secret_file):
        raise ValueError("--tenant and --secret-file go together")
    return {"tenant": args.tenant, "secret_file": args.secret_file} if args.tenant else {}


def _tls_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Client(...) TLS arguments from _client_tls_args' flags."""
    if not args.tls:
        if args.tls_ca or args.tls_cert or args.tls_key:
            raise ValueError("--tls-ca, --tls-cert and --tls-key need --tls")
        return {}
    return {"tls": True, "ca": args.tls_ca, "cert": args.tls_cert, "key": args.tls_key}


def _spill_args(p: argparse.ArgumentParser, cluster: bool = False) -> None:
    """The disk tier's flags (rpmp server, and rpmp cluster for each of its nodes)."""
    p.add_argument("--spill-dir", action="append", metavar="DIR[,DIR...]",
                   help=("directory of spill files, where blocks move when the pool fills; repeatable or a comma list "
                         "(spread over them). Each node uses its own subdirectory DIR/<name>-node<i> "
                         "(rpmp-<user>-node0, ...)"
                         if cluster else
                         "directory of spill files, where idle blocks move when the pool fills; repeatable or a comma "
                         "list (spread over them); created (mode 0700) if only its parent exists (default: none, "
                         "no disk tier: a full pool answers POOL_FULL; env RPMP_SPILL_DIRS)"))
    p.add_argument("--spill-size", type=_size, help="bytes the spill files may hold together, e.g. 100g (default 0: "
                   "what the directories' file systems have)")
    p.add_argument("--spill-high", type=float, help="pool use, a fraction of its capacity, above which blocks move "
                   "to disk (0.85)")
    p.add_argument("--spill-low", type=float, help="...and until which they move: below --spill-high (0.65)")
    p.add_argument("--full-wait", type=float, help="seconds a push waits for room while spilling makes some, "
                   "before the node answers POOL_FULL (30)")
    p.add_argument("--app-quota", type=_size, help="bytes one application may hold on a node, pool and disk "
                   "together (default 0: no quota)")


SPILL_KEYS = ("spill_size", "spill_high", "spill_low", "full_wait", "app_quota")


def _spill_dirs(args: argparse.Namespace) -> list[str] | None:
    """--spill-dir's directories (repeated and comma lists flattened), None if not given."""
    given = getattr(args, "spill_dir", None)
    if given is None:
        return None
    return [d.strip() for arg in given for d in arg.split(",") if d.strip()]


def _config(args: argparse.Namespace, **extra: object) -> NodeConfig:
    path = args.config or os.environ.get("RPMP_CONFIG") or None
    over = {k: getattr(args, k, None) for k in ("host", "port", "node_id", "pool", "pool_size",
                                               "heartbeat_interval", "dead_after", "max_data",
                                               "max_connections", "verify_push", "verify_fetch", "sendfile",
                                               "send_timeout", "frame_timeout", "idle_timeout", "staging_memory",
                                               "log_level", "log_format",
                                               "app_ttl", "metrics_port", "tls_cert", "tls_key",
                                               "tls_ca", "auth_file", "cluster_secret_file", "pool_mode",
                                               *SPILL_KEYS)}
    if getattr(args, "seeds", None) is not None:
        over["seeds"] = [s.strip() for s in args.seeds.split(",") if s.strip()]
        if not over["seeds"]:
            raise ValueError(f"--seeds {args.seeds!r}: names no host:port")
    dirs = _spill_dirs(args)
    if dirs is not None:
        if not dirs:
            raise ValueError("--spill-dir: names no directory")
        over["spill_dirs"] = dirs
    over.update(extra)
    return NodeConfig.load(path, **over)


def cmd_server(args: argparse.Namespace) -> int:
    from rpmp.server.node import StartError, run

    config = _config(args)  # a bad setting: ValueError, exit 2 (main), before anything is created
    try:
        run(config, parent_fd=args.parent_fd, remove_pool_with_parent=args.remove_pool_with_parent)
    except StartError as e:  # port in use, pool unusable, ...: checked before anything was created
        print(f"rpmp server: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    """Start N nodes on loopback (node 0 is the seed of the others) and wait for Ctrl-C or SIGTERM."""
    from rpmp.cluster import LocalCluster, NodeError

    # Pools named per cluster and node index, and kept: a later `rpmp cluster` of the same --name on the same
    # --pool-dir finds its data; two users' clusters (the name holds the user's) never share a pool.
    dirs = _spill_dirs(args)
    if dirs is not None and not dirs:
        raise ValueError("--spill-dir: names no directory")
    if not args.name or not all(c.isalnum() or c in "._-" for c in args.name) or args.name[0] in ".-":
        raise ValueError(f"--name {args.name!r}: use letters, digits, '.', '_' and '-' (it names the pool files)")
    _check_cluster_pools(args)
    # Checked here (ValueError: one line, exit 2) before any node, pool or directory is made.
    cluster = LocalCluster(args.nodes, pool_size=args.pool_size, pool_dir=args.pool_dir,
                           pool_prefix=f"{args.name}-node",
                           host=args.host, base_port=args.base_port, stderr="inherit", spill_dirs=dirs,
                           **{k: getattr(args, k) for k in SPILL_KEYS})
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        cluster.start()
        for i, node in enumerate(cluster):
            print(f"node {i}: {node.address}" + (" (seed)" if i == 0 else ""), flush=True)
        print(f"RPMP cluster ready: {','.join(cluster.addresses)}", flush=True)
        while all(node.running for node in cluster):
            time.sleep(0.5)
        for i, node in enumerate(cluster):
            if not node.running:
                code = node.returncode
                how = f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0 \
                    else f"exited with code {code}"
                print(f"rpmp cluster: node {i} ({node.address}, pool {node.pool}) {how}; stopping the others",
                      file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    except NodeError as e:  # the node's own stderr (inherited) said why above: one line here
        print(f"rpmp cluster: {str(e).split('; stdout ', 1)[0]}", file=sys.stderr)
        return 1
    finally:
        cluster.close()  # never leaves a node behind (SIGKILL after 20 s); the pools stay


def _check_cluster_pools(args: argparse.Namespace) -> None:
    """Before any node starts: each node's pool can be opened or created, and the new ones fit the medium together
    (one line, exit 1, otherwise: node 0 would have made its pool before node 1 found no room)."""
    from rpmp._pool import PoolError, check_pool

    if args.nodes < 1:
        raise ValueError(f"a cluster needs at least one node, not {args.nodes}")
    new = 0
    for i in range(args.nodes):
        path = os.path.join(args.pool_dir, f"{args.name}-node{i}.pool")
        try:
            if check_pool(path, args.pool_size) != "open":
                new += args.pool_size
        except PoolError as e:
            raise _Unreachable(str(e)) from None
    if new:
        fs = os.statvfs(args.pool_dir)
        free = fs.f_bavail * fs.f_frsize
        if new > free:
            raise _Unreachable(f"{new // args.pool_size} new pools of {args.pool_size >> 20} MiB do not fit in "
                               f"{args.pool_dir} ({free >> 20} MiB free): a smaller --pool-size or fewer --nodes")


def cmd_stat(args: argparse.Namespace) -> int:
    from rpmp import admin
    from rpmp.client import Client

    if not args.timeout > 0:
        raise ValueError(f"--timeout {args.timeout}: must be seconds > 0")
    with Client(args.nodes, timeout=args.timeout, **_tls_kwargs(args), **_auth_kwargs(args)) as client:
        doc = admin.status(client, lambda call, node=None: _ask(client, args.timeout, call, node=node))
    if args.json:  # the same figures as the tables, keys documented in docs/OPERATIONS.md "Status as JSON"
        admin.print_json(doc)
    else:
        admin.print_status(doc)
    return 0


class _Unreachable(Exception):
    """What the machine refuses (a node that did not answer as an RPMP node, a pool that cannot be): one line,
    exit 1."""


def _ask(client: object, timeout: float, call: Callable[..., T], node: str | None = None) -> T:
    """call(node=...) on the client, its failures as one _Unreachable line naming the node."""
    from rpmp.client import AuthFailedError, ForbiddenError, UnavailableError
    from rpmp.protocol import ProtocolError
    from rpmp.tls import TlsError

    addr = node or ",".join(f"{h}:{p}" for h, p in client.nodes)  # type: ignore[attr-defined]
    try:
        return call(node=node) if node is not None else call()
    except TlsError as e:  # its message names the node and what to do
        raise _Unreachable(str(e)) from None
    except ConnectionRefusedError:
        raise _Unreachable(f"{addr}: connection refused: no RPMP node listens there") from None
    except TimeoutError:
        raise _Unreachable(f"{addr}: no answer within {timeout:g} s: not an RPMP node, or one too busy to answer "
                           f"(--timeout)") from None
    except UnavailableError as e:
        raise _Unreachable(f"{addr}: the node refuses: {e.args[-1]}") from None
    except AuthFailedError as e:  # names the node; without --tenant/--cluster-secret-file, the node needs them
        hint = "" if getattr(client, "tenant", None) else (" (the node requires authentication: "
                                                             "--cluster-secret-file, or --tenant with --secret-file)")
        raise _Unreachable(f"{addr}: {e.message}{hint}") from None
    except ForbiddenError as e:
        raise _Unreachable(f"{addr}: {e.message} (use --cluster-secret-file)") from None
    except ProtocolError as e:
        raise _Unreachable(f"{addr}: answered, but not as an RPMP node (is another service on that port?): "
                           f"{e.args[-1]}") from None
    except (ConnectionError, EOFError):
        raise _Unreachable(f"{addr}: closed the connection without an answer: not an RPMP node, or one "
                           f"that speaks TLS (--tls)?") from None
    except socket.gaierror as e:
        raise _Unreachable(f"{addr}: cannot resolve the host ({e.strerror})") from None
    except OSError as e:
        raise _Unreachable(f"{addr}: {e.strerror or e}") from None


def cmd_ping(args: argparse.Namespace) -> int:
    """PING one node (a health probe: answered before authentication, so no secret is needed); silent when it
    answers."""
    from rpmp.client import Client

    if not args.timeout > 0:
        raise ValueError(f"--timeout {args.timeout}: must be seconds > 0")
    with Client(args.node, timeout=args.timeout, **_tls_kwargs(args)) as client:
        _ask(client, args.timeout, lambda node: client.ping(node), node=args.node)
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    """DRAIN one node: it takes no new shuffles and exits once it holds none, or after --timeout."""
    from rpmp.client import Client, RpmpError

    if not 0 <= args.timeout <= 0xFFFFFFFF:
        raise ValueError(f"--timeout {args.timeout}: must be 0..4294967295 seconds (0: no limit)")
    with Client(args.node, timeout=30, **_tls_kwargs(args), **_auth_kwargs(args)) as client:
        try:
            _ask(client, 30, lambda node: client.drain(node, timeout=args.timeout), node=args.node)
        except RpmpError as e:
            print(f"rpmp drain: {args.node}: {e}", file=sys.stderr)
            return 1
    print(f"{args.node} is draining: no new shuffles go there; it exits once it holds none"
          + (f" or after {args.timeout} s" if args.timeout else ""), flush=True)
    return 0


def _default_cluster_name() -> str:
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = str(os.getuid())
    return "rpmp-" + "".join(c if c.isalnum() or c in "._-" else "_" for c in user)


class _Parser(argparse.ArgumentParser):
    """A usage mistake is one line (with where to read more), not the usage block and then the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="rpmp", description="RPMP: a remote persistent-memory shuffle service.")
    ap.add_argument("--version", action="version", version=f"rpmp {_version()}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("server", help="run one RPMP node", description="Run one RPMP node until SIGINT/SIGTERM.")
    _node_args(p)
    p.add_argument("--parent-fd", type=int, metavar="FD", help="read end of a pipe inherited from the parent, "
                   "which holds the write end: stop when it reads EOF, i.e. when the parent is gone, however it "
                   "ended (rpmp.cluster.LocalNode(exit_with_parent=True) passes it)")
    p.add_argument("--remove-pool-with-parent", action="store_true", help="with --parent-fd: remove the pool "
                   "file after a stop caused by the parent's exit (for a pool only the parent knew of)")
    p.set_defaults(func=cmd_server)

    p = sub.add_parser("cluster", help="run a local node set on loopback (development, tests)",
                       description="Start N nodes on loopback ports; the first is the seed of the others.")
    p.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    p.add_argument("--host", default="127.0.0.1", help="address of every node (default 127.0.0.1)")
    p.add_argument("--base-port", type=_port, default=0, help="first port; the others follow (default: free ports)")
    p.add_argument("--pool-dir", default="/dev/shm", help="directory of the pool files (default /dev/shm)")
    p.add_argument("--name", default=_default_cluster_name(), help="names the pool files, <pool-dir>/<name>-node<i>"
                   ".pool, kept for the next start of the same name (default rpmp-<user>: two users' clusters never "
                   "share a pool)")
    p.add_argument("--pool-size", type=_size, default=512 << 20, help="size of each node's pool (default 512m)")
    _spill_args(p, cluster=True)
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser("stat", help="show nodes, pools, apps, shuffles and bytes",
                       description="Print a table of the cluster's nodes and applications.")
    p.add_argument("--nodes", default=os.environ.get("RPMP_NODES", f"127.0.0.1:{DEFAULT_PORT}"),
                   help="any node(s) of the cluster, host:port[,host:port] (env RPMP_NODES)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long to wait for each node's answer (default 10)")
    p.add_argument("--json", action="store_true", help="print the same figures as one JSON document (keys: "
                   "docs/OPERATIONS.md \"Status as JSON\")")
    _client_tls_args(p)
    _client_auth_args(p)
    p.set_defaults(func=cmd_stat)

    p = sub.add_parser("drain", help="take a node out of service once its shuffles are gone",
                       description="The node stops taking new shuffles (placement skips it; the other nodes learn "
                       "it through membership), keeps serving what it holds, and exits once it holds no shuffles "
                       "(deleted, or expired: --app-ttl) or when --timeout passes.")
    p.add_argument("node", metavar="HOST:PORT", help="the node to drain")
    p.add_argument("--timeout", type=int, default=0, metavar="SECONDS",
                   help="exit after this long even if shuffles remain (logged; default 0: no limit)")
    _client_tls_args(p)
    _client_auth_args(p)
    p.set_defaults(func=cmd_drain)

    p = sub.add_parser("ping", help="check that a node answers (exit 0), e.g. as a readiness probe",
                       description="Send one PING; exit 0 when the node answers, else 1 with one line on stderr. "
                       "PING needs no authentication.")
    here = f"{os.environ.get('RPMP_HOST') or '127.0.0.1'}:{os.environ.get('RPMP_PORT') or DEFAULT_PORT}"
    p.add_argument("node", metavar="HOST:PORT", nargs="?", default=here,
                   help=f"the node (default $RPMP_HOST:$RPMP_PORT, else 127.0.0.1:{DEFAULT_PORT})")
    p.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS", help="how long to wait (default 3)")
    _client_tls_args(p)
    p.set_defaults(func=cmd_ping)

    _admin_parser(sub)
    return ap


def _admin_parser(sub: argparse._SubParsersAction) -> None:
    """`rpmp admin apps|shuffles|delete-app|config` (rpmp/admin.py)."""
    p = sub.add_parser("admin", help="list apps and shuffles, delete an app, show a node's configuration",
                       description="What the nodes hold and how they are set, from their STATS (docs/OPERATIONS.md "
                       "\"Admin commands\"). With authentication, use the cluster secret: a tenant sees its own apps.")
    cmds = p.add_subparsers(dest="admin_command", required=True)

    def common(q: argparse.ArgumentParser, nodes: bool = True) -> None:
        if nodes:
            q.add_argument("--nodes", default=os.environ.get("RPMP_NODES", f"127.0.0.1:{DEFAULT_PORT}"),
                           help="any node(s) of the cluster, host:port[,host:port] (env RPMP_NODES)")
        q.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                       help="how long to wait for each node's answer (default 10)")
        q.add_argument("--json", action="store_true", help="print JSON instead of a table")
        _admin_client_options(q)
        q.set_defaults(func=cmd_admin)

    common(cmds.add_parser("apps", help="apps with their shuffles and bytes in pools and on disk, per node and in "
                                        "total"))
    q = cmds.add_parser("shuffles", help="an app's shuffles: partitions, replicas, segments, bytes")
    q.add_argument("app", metavar="APP", help="the application id")
    common(q)
    q = cmds.add_parser("delete-app", help="delete an app's data on every node (DELETE_APP); prints what was freed")
    q.add_argument("app", metavar="APP", help="the application id")
    q.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    common(q)
    q = cmds.add_parser("config", help="a node's effective configuration (secrets never shown)")
    q.add_argument("node", metavar="HOST:PORT", help="the node")
    common(q, nodes=False)


def _admin_client_options(p: argparse.ArgumentParser) -> None:
    """The connection options of `rpmp admin`: those of `rpmp stat`."""
    _client_tls_args(p)
    _client_auth_args(p)


def _admin_client_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Client(...) arguments from _admin_client_options' flags."""
    return {**_tls_kwargs(args), **_auth_kwargs(args)}


def cmd_admin(args: argparse.Namespace) -> int:
    from rpmp import admin
    from rpmp.client import Client, RpmpError

    if not args.timeout > 0:
        raise ValueError(f"--timeout {args.timeout}: must be seconds > 0")
    nodes = args.node if args.admin_command == "config" else args.nodes
    with Client(nodes, timeout=args.timeout, **_admin_client_kwargs(args)) as client:
        try:
            return admin.COMMANDS[args.admin_command](
                args, client, lambda call, node=None: _ask(client, args.timeout, call, node=node))
        except RpmpError as e:  # an error answer (FORBIDDEN without the cluster secret, ...): one line
            print(f"rpmp admin {args.admin_command}: {e}", file=sys.stderr)
            return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except ValueError as e:
        print(f"rpmp {args.command}: {e}", file=sys.stderr)
        return 2
    except _Unreachable as e:
        print(f"rpmp {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
