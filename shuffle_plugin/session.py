"""PySpark on RPMP in one call.

    from shuffle_plugin import rpmp_session, metrics
    spark = rpmp_session("my-job", master="local-cluster[2,1,2048]")   # embedded RPMP node
    spark = rpmp_session("my-job", nodes="10.0.0.5:7177,10.0.0.6:7177")  # an existing RPMP cluster
    spark = rpmp_session("my-job", secret=my_secret, tls=True)  # embedded node: authenticated, over TLS
    ...
    metrics(spark)      # bytes pushed / fetched per shuffle, push and fetch times (from the driver JVM)
    spark.stop()        # also stops the embedded node and removes its pool (EmbeddedNode.close())

The executors' JVMs talk to the RPMP nodes directly (org.rpmp.shuffle.RpmpShuffleManager); Python
only configures the session, runs the embedded node, and reads metrics from the driver through py4j.

What a notebook user can rely on:
- the embedded node dies with this Python process, however it ends (kill -9 included), and takes its pool
  with it (LocalNode's exit_with_parent);
- the session's RPMP settings stay with that session: a later plain SparkSession in the same process does
  not shuffle through RPMP (nor through a node that is gone);
- Spark fixes the shuffle manager when its SparkContext starts, so rpmp_session() cannot put a running
  session on RPMP: with one running it raises, unless asked to stop it (stop_existing=True);
- a misspelt option, an empty `nodes`, or more replicas than nodes is a ValueError before Spark starts;
- a secret given to rpmp_session() is never printed: it reaches the embedded node through a 0600 auth file and
  the JVMs through a 0600 secret file (spark.rpmp.auth.secretFile), never a command line; both are removed when
  the session stops.
"""

from __future__ import annotations

import atexit
import difflib
import getpass
import json
import os
import shutil
import tempfile
import warnings
from typing import Any

from rpmp import tls as _tls
from rpmp.cluster import LocalNode, new_pool_path
from shuffle_plugin import jar as plugin_jar

MANAGER = "org.rpmp.shuffle.RpmpShuffleManager"
# Spark's shuffle data IO plugin: claims reliable storage (map output is on the RPMP nodes), so dynamic allocation
# works without the external shuffle service or shuffle tracking.
DATA_IO_KEY = "spark.shuffle.sort.io.plugin.class"
DATA_IO = "org.rpmp.shuffle.RpmpShuffleDataIO"

# The spark.rpmp.* settings (RpmpConf.java) as keyword options of rpmp_session() and configure(); nodes and
# replicas are arguments of their own. The Spark name with its dots as underscores is accepted too
# (push_offHeap), as it always was.
OPTIONS: dict[str, str] = {
    "push_size": "spark.rpmp.push.size",
    "push_memory": "spark.rpmp.push.memory",
    "push_off_heap": "spark.rpmp.push.offHeap",
    "push_inflight": "spark.rpmp.push.inflight",
    "push_retries": "spark.rpmp.push.retries",
    "push_retry_wait": "spark.rpmp.push.retryWait",
    "fetch_timeout": "spark.rpmp.fetch.timeout",
    "fetch_buffer": "spark.rpmp.fetch.buffer",
    "fetch_local": "spark.rpmp.fetch.local",
    "connect_timeout": "spark.rpmp.connect.timeout",
    "register_timeout": "spark.rpmp.register.timeout",
    "fallback": "spark.rpmp.fallback",
    # Security: tenant=, secret= and tls= cover the common cases; these are the plugin's settings as they are.
    "auth_tenant": "spark.rpmp.auth.tenant",
    "auth_secret": "spark.rpmp.auth.secret",
    "auth_secret_file": "spark.rpmp.auth.secretFile",
    "tls_enabled": "spark.rpmp.tls.enabled",
    "tls_trust_store": "spark.rpmp.tls.trustStore",
    "tls_trust_store_password": "spark.rpmp.tls.trustStorePassword",
    "tls_ca_pem": "spark.rpmp.tls.caPem",
    "tls_key_store": "spark.rpmp.tls.keyStore",
    "tls_key_store_password": "spark.rpmp.tls.keyStorePassword",
    "tls_verify_hostname": "spark.rpmp.tls.verifyHostname",
}
_SPARK_SPELLING = {key.removeprefix("spark.rpmp.").replace(".", "_"): key for key in OPTIONS.values()}


class EmbeddedNode(LocalNode):
    """The session's own RPMP node: a LocalNode, started at once, that logs warnings and errors to this
    process's stderr. close() (what the session's stop() calls, and atexit if nobody did) stops it and
    removes the pool it made: the session's shuffle data dies with the session. If this process ends without
    either (kill -9, a crash, a notebook kernel killed), the node notices (exit_with_parent), stops by itself
    and removes the pool it made.

    spill_dir: a directory (or a comma list, or a list) for the node's disk tier: when the pool fills, blocks
    move to spill files in a subdirectory of its own, <spill_dir>/<the pool's name without .pool>, which the
    node creates and close() removes with its spill files (nothing else in spill_dir is touched). None: no disk
    tier, a full pool fails the push. spill_size: bytes those files may hold ("100g"; None or 0: what the file
    system has)."""

    def __init__(self, pool_size: str = "1g", pool: str | None = None, host: str = "127.0.0.1",
                 extra_args: list[str] | None = None, *, spill_dir: str | list[str] | None = None,
                 spill_size: str | int | None = None, auth: dict[str, str] | None = None,
                 tls: tuple[str, str] | None = None):
        path = pool or new_pool_path(f"rpmp-embedded-{os.getpid()}")
        super().__init__(path, pool_size=pool_size, host=host,
                         args=["--log-level", "WARNING", *(extra_args or [])], stderr="inherit",
                         remove_pool=pool is None, exit_with_parent=True, spill_dir=spill_dir,
                         spill_subdir=os.path.basename(path).removesuffix(".pool") if spill_dir else None,
                         spill_size=spill_size, auth_file=auth, tls_cert=tls[0] if tls else None,
                         tls_key=tls[1] if tls else None)
        self.start()
        atexit.register(self.close)


class SessionSecurity:
    """What a session's tenant, secret and TLS need on disk: the secret for the JVMs (spark.rpmp.auth.secretFile, a
    0600 file, so the secret is on no command line and in no Spark setting the UI lists) and, for an embedded node
    with tls=True, a self-signed certificate for 127.0.0.1 (made by `openssl`) that the JVMs trust as the CA.
    Everything lives in one private temporary directory that close() removes."""

    def __init__(self, tenant: str | None, secret: str | None, tls: bool | str, embedded: bool):
        self._dir: str | None = None
        self.tenant = tenant
        self.secret_file: str | None = None
        self.node_auth: dict[str, str] | None = None
        self.node_tls: tuple[str, str] | None = None
        self.ca_pem: str | None = tls if isinstance(tls, str) else None
        self.tls = bool(tls)
        try:
            if secret is not None:
                self.tenant = tenant or default_tenant()
                self.secret_file = self._write("secret", secret + "\n")
                if embedded:
                    self.node_auth = {self.tenant: secret}
            if tls is True and embedded:
                self.node_tls = self_signed_cert(self._tmp())
                self.ca_pem = self.node_tls[0]
        except BaseException:
            self.close()
            raise

    def _tmp(self) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="rpmp-session-")  # mode 0700
        return self._dir

    def _write(self, name: str, text: str) -> str:
        path = os.path.join(self._tmp(), name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def spark_conf(self) -> dict[str, str]:
        conf: dict[str, str] = {}
        if self.secret_file:
            conf["spark.rpmp.auth.tenant"] = str(self.tenant)
            conf["spark.rpmp.auth.secretFile"] = self.secret_file
        if self.tls:
            conf["spark.rpmp.tls.enabled"] = "true"
            if self.ca_pem:
                conf["spark.rpmp.tls.caPem"] = os.path.abspath(self.ca_pem)
        return conf

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def default_tenant() -> str:
    """The tenant a session authenticates as by default: the Spark user (SPARK_USER, else the login user), as the
    plugin's default is; ValueError when that is no tenant name."""
    from rpmp.auth import valid_tenant

    user = os.environ.get("SPARK_USER") or getpass.getuser()
    if not valid_tenant(user):
        raise ValueError(f"the Spark user {user!r} is not a valid RPMP tenant name (1..32 of A-Z a-z 0-9 . _ -): "
                         f"pass tenant='...'")
    return user


def self_signed_cert(directory: str, ip: str = "127.0.0.1") -> tuple[str, str]:
    """(cert.pem, key.pem): a fresh self-signed EC certificate for `ip` (its IP SAN, so hostname verification
    passes), valid 7 days, made with the `openssl` command; the key file is 0600."""
    if shutil.which("openssl") is None:
        raise RuntimeError("tls=True for the embedded node needs the `openssl` command to make its certificate "
                           "(install openssl), or run nodes with your own certificate and pass tls='ca.pem'")
    return _tls.self_signed_cert(directory, ip, name="rpmp-embedded")


def _option_key(name: str, accepted: tuple[str, ...] = ()) -> str:
    """The Spark setting of keyword option `name`; ValueError naming the options if there is none."""
    key = OPTIONS.get(name) or _SPARK_SPELLING.get(name)
    if key is None:
        known = sorted({*OPTIONS, *accepted})
        close = difflib.get_close_matches(name, [*known, *_SPARK_SPELLING], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"unknown RPMP option {name!r}{hint}; the options are: {', '.join(known)}")
    return key


def _option_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _check_nodes(nodes: str) -> list[str]:
    """The addresses of `nodes` ("host:port,..."); ValueError if it names none or a malformed one."""
    from rpmp.server.config import parse_hostport

    parts = [p.strip() for p in str(nodes).split(",")]
    if not any(parts):
        raise ValueError(f"nodes={nodes!r} names no RPMP node: give them as 'host:port[,host:port...]', or leave "
                         f"nodes out (None) for an embedded node")
    for part in parts:
        try:
            parse_hostport(part)
        except ValueError:
            raise ValueError(f"nodes={nodes!r}: {part!r} is not host:port (give the RPMP nodes as "
                             f"'host:port[,host:port...]')") from None
    return parts


def _check_replicas(replicas: Any) -> int:
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= 255:
        raise ValueError(f"replicas={replicas!r}: copies of each shuffle segment, an int from 1 to 255")
    return replicas


def _alive_nodes(nodes: str, timeout: float = 5.0, client_kw: dict[str, Any] | None = None) -> int | None:
    """How many nodes the RPMP cluster reached through `nodes` (seeds) lists alive; None (with a warning) if
    none of them answers: the nodes may come up later, the plugin then reports what it meets. client_kw: the
    session's tenant, secret and TLS, as rpmp.client.Client takes them."""
    from rpmp.client import Client
    from rpmp.protocol import NodeState, ProtocolError

    try:
        with Client(nodes, timeout=timeout, **(client_kw or {})) as client:
            _, members = client.members()
    except (OSError, ProtocolError) as e:
        warnings.warn(f"RPMP nodes {nodes} did not answer ({e}); the session is configured for them anyway",
                      stacklevel=3)
        return None
    return sum(1 for m in members if m.state == NodeState.ALIVE)


def _client_kw(tenant: str | None, secret: str | None, tls: bool | str) -> dict[str, Any]:
    """How this process's own Client reaches the session's nodes (the replica count check)."""
    kw: dict[str, Any] = {}
    if secret is not None:
        kw.update(tenant=tenant or default_tenant(), secret=secret)
    if tls:
        kw.update(tls=True, ca=tls if isinstance(tls, str) else None)
    return kw


def _check_security(tenant: str | None, secret: str | None, tls: bool | str) -> None:
    """ValueError for a bad tenant, an empty secret, a tenant without a secret, or a tls that is neither a bool
    nor a CA file. The secret is never part of a message."""
    from rpmp.auth import valid_tenant

    if secret is not None and (not isinstance(secret, str) or not secret.strip() or "\n" in secret):
        raise ValueError("secret= must be a non-empty string on one line (the secret is not shown)")
    if tenant is not None:
        if not isinstance(tenant, str) or not valid_tenant(tenant):
            raise ValueError(f"tenant={tenant!r} is not a tenant name: 1..32 of A-Z a-z 0-9 . _ -")
        if secret is None:
            raise ValueError(f"tenant={tenant!r} without secret=: the nodes need the tenant's secret too")
    if not isinstance(tls, (bool, str)):
        raise ValueError(f"tls={tls!r}: True, False, or the path of the nodes' CA certificate (PEM)")
    if isinstance(tls, str) and not os.path.isfile(tls):
        raise ValueError(f"tls={tls!r}: no such CA file (the PEM certificate of the CA that signed the nodes')")


def _check_embedded(nodes: str | None, pool_size: str, spill_dir: str | list[str] | None,
                    spill_size: str | int | None) -> None:
    """ValueError for the embedded node's settings: a bad size, an unusable spill_dir, or spill settings with
    `nodes` (they configure the embedded node only; nodes of a cluster have their own)."""
    from rpmp.server.config import check_spill_dirs, check_spill_values, parse_size

    if nodes is not None:
        given = [name for name, v in (("spill_dir", spill_dir), ("spill_size", spill_size)) if v is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} {'configure' if len(given) > 1 else 'configures'} the "
                             f"embedded RPMP node, but nodes={nodes!r} are given: set the disk tier on those nodes "
                             f"(rpmp server --spill-dir), or leave nodes out")
        return
    parse_size(pool_size)
    if spill_size is not None:
        check_spill_values(spill_size=parse_size(spill_size))
    if spill_dir is not None:
        dirs = [spill_dir] if isinstance(spill_dir, str) else list(spill_dir)
        dirs = [d.strip() for item in dirs for d in str(item).split(",") if d.strip()]
        if not dirs:
            raise ValueError(f"spill_dir={spill_dir!r} names no directory")
        check_spill_dirs(dirs)


def check_settings(nodes: str | None, replicas: int, options: dict[str, Any],
                   accepted: tuple[str, ...] = (), client_kw: dict[str, Any] | None = None) -> dict[str, str]:
    """Validate a session's RPMP settings before anything starts: the spark.rpmp.* settings of `options`, or
    ValueError for an unknown option, `nodes` that name no node, or more `replicas` than nodes (the embedded
    node is one; for named nodes, the cluster's alive members when it answers). nodes=None: embedded node.
    A pyspark of a Spark line the plugin is not built for is a JarBuildError naming the supported lines."""
    plugin_jar.spark_line()
    settings = {_option_key(name, accepted): _option_value(v) for name, v in options.items()}
    _check_replicas(replicas)
    if nodes is None:
        if replicas > 1:
            raise ValueError(f"replicas={replicas} but the embedded RPMP node is a single node: keep replicas=1, or "
                             f"pass nodes='host:port,...' of a cluster with at least {replicas} nodes")
    else:
        _check_nodes(nodes)
        if replicas > 1:
            alive = _alive_nodes(nodes, client_kw=client_kw)
            if alive is not None and replicas > alive:
                raise ValueError(f"replicas={replicas} but the RPMP cluster at {nodes} has {alive} alive "
                                 f"node{'s' if alive != 1 else ''}: replicas can be at most the node count")
    return settings


EXECUTOR_CLASSPATH = "spark.executor.extraClassPath"


def jar_conf(jar: str, existing_jars: str | None = None, existing_classpath: str | None = None) -> dict[str, str]:
    """The settings that put the plugin jar on the driver and the executors. spark.jars does on Spark 4; Spark
    3.5's executors create their shuffle manager before they fetch spark.jars (SPARK-45762 changed that in
    4.0), so there the jar must also be on their classpath from the start (same path on every host)."""
    conf = {"spark.jars": ",".join(j for j in (existing_jars, jar) if j)}
    if plugin_jar.spark_line() < "4.0":
        conf[EXECUTOR_CLASSPATH] = os.pathsep.join(p for p in (existing_classpath, jar) if p)
    return conf


def rpmp_conf(nodes: str, *, replicas: int = 1, push_size: str | None = None, push_memory: str | None = None,
              existing_jars: str | None = None, existing_classpath: str | None = None) -> dict[str, str]:
    """The Spark settings that put a session on RPMP (what spark-conf/spark-defaults.conf shows)."""
    _check_nodes(nodes)
    _check_replicas(replicas)
    jar = str(plugin_jar.locate_jar())
    conf = {
        "spark.shuffle.manager": MANAGER,
        DATA_IO_KEY: DATA_IO,
        **jar_conf(jar, existing_jars, existing_classpath),
        "spark.rpmp.nodes": nodes,
        "spark.rpmp.replicas": str(replicas),
    }
    if push_size:
        conf["spark.rpmp.push.size"] = push_size
    if push_memory:
        conf["spark.rpmp.push.memory"] = push_memory
    return conf


# Arguments of configure() and rpmp_session() that are not spark.rpmp.* options.
EMBEDDED_ARGS = ("nodes", "pool_size", "replicas", "spill_dir", "spill_size", "tenant", "secret", "tls")


def configure(builder: Any, nodes: str | None = None, *, pool_size: str = "1g", replicas: int = 1,
              spill_dir: str | list[str] | None = None, spill_size: str | int | None = None,
              tenant: str | None = None, secret: str | None = None, tls: bool | str = False,
              **options: Any) -> tuple[Any, EmbeddedNode | None]:
    """Put a SparkSession.Builder on RPMP; with no `nodes` (None), start an embedded node (returned, to stop
    later) with a pool of `pool_size` and, with `spill_dir`, a disk tier (EmbeddedNode). tenant, secret and tls
    as rpmp_session's (the files they need are removed when the returned node is closed; with `nodes` and a
    secret or tls, nothing is returned to close them: they are removed when this process exits).

    `options` are spark.rpmp.* settings (OPTIONS: push_size="4m" -> spark.rpmp.push.size); an unknown one, an
    empty `nodes`, more `replicas` than nodes, or spill settings with `nodes` is a ValueError, raised before the
    node starts.
    """
    _check_security(tenant, secret, tls)
    settings = check_settings(nodes, replicas, options, EMBEDDED_ARGS, _client_kw(tenant, secret, tls))
    _check_embedded(nodes, pool_size, spill_dir, spill_size)
    security = SessionSecurity(tenant, secret, tls, embedded=nodes is None)
    builder, node = _configure(builder, nodes, pool_size, replicas, settings, spill_dir, spill_size, security)
    if node is None:
        atexit.register(security.close)
    return builder, node


def _configure(builder: Any, nodes: str | None, pool_size: str, replicas: int, settings: dict[str, str],
               spill_dir: str | list[str] | None = None, spill_size: str | int | None = None,
               security: SessionSecurity | None = None) -> tuple[Any, EmbeddedNode | None]:
    """Start the embedded node if need be and put the builder on RPMP with the checked `settings`. The embedded
    node's close() also removes `security`'s files."""
    node = None
    try:
        if nodes is None:
            node = EmbeddedNode(pool_size, spill_dir=spill_dir, spill_size=spill_size,
                                auth=security.node_auth if security else None,
                                tls=security.node_tls if security else None)
            nodes = node.address
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # everything of this session is on this host
            if security is not None:
                _close_with(node, security)
        options = builder._options if hasattr(builder, "_options") else {}
        conf = rpmp_conf(nodes, replicas=replicas, existing_jars=options.get("spark.jars"),
                         existing_classpath=options.get(EXECUTOR_CLASSPATH))
        for k, v in {**conf, **(security.spark_conf() if security else {}), **settings}.items():
            builder = builder.config(k, v)
    except BaseException:
        if node is not None:
            node.close()
        elif security is not None:
            security.close()
        raise
    return builder, node


def _close_with(node: EmbeddedNode, security: SessionSecurity) -> None:
    """node.close() also removes the session's secret and certificate files."""
    close = node.close

    def close_both() -> None:
        try:
            close()
        finally:
            security.close()

    node.close = close_both  # type: ignore[method-assign]


def rpmp_session(app_name: str = "rpmp", master: str | None = None, nodes: str | None = None, *,
                 pool_size: str = "1g", replicas: int = 1, conf: dict[str, str] | None = None,
                 stop_existing: bool = False, spill_dir: str | list[str] | None = None,
                 spill_size: str | int | None = None, tenant: str | None = None, secret: str | None = None,
                 tls: bool | str = False, **options: Any) -> Any:
    """A new SparkSession whose shuffles go through RPMP.

    nodes: RPMP nodes as "host:port,..."; None starts an embedded single node that stops with the session, or
    with this process. conf: any other Spark settings.
    The embedded node's storage (not with `nodes`: a ValueError):
      pool_size: its memory pool on /dev/shm ("1g"), where shuffle data is pushed and merged.
      spill_dir: a directory (or several, a list or "a,b") on local disks for its disk tier: when the pool
        fills, idle blocks move to spill files there (in a subdirectory of the node's own, removed with the
        session; nothing else in the directory is touched), so a shuffle larger than the pool still completes.
        A missing directory is created if its parent exists. None (default): no disk tier; a push into a full
        pool fails.
      spill_size: bytes the spill files may take ("200g"; None or 0: what the directories' file systems have).
    Security (README "Security"; nodes run with --auth-file / --tls-cert):
      secret: the tenant's secret; the JVMs authenticate every connection with it (read from a 0600 file the
        session writes, spark.rpmp.auth.secretFile: the file must be at that path on every executor host, so
        with executors on other hosts set spark.rpmp.auth.secret in `conf` instead). With the embedded node,
        the node is started with an auth file holding this tenant and secret. Never printed.
      tenant: the tenant of `secret` (default: the Spark user, SPARK_USER or the login user).
      tls: True speaks TLS to the nodes (the embedded node gets a fresh self-signed certificate for 127.0.0.1,
        made by `openssl`, which the session trusts; named nodes must have certificates the JVM's default CAs
        trust); a path: the PEM CA certificate that signed the nodes' certificates. One-sided local reads of
        the pool file are not affected by TLS (they do not cross the network).
    options: spark.rpmp.* settings (see OPTIONS), e.g. push_size="8m".
    stop_existing: a SparkSession (or SparkContext) already running in this process, e.g. a pyspark shell's
    or a notebook's, cannot be put on RPMP (Spark picks the shuffle manager when its context starts), so by
    default that is a RuntimeError; True stops it and builds the RPMP session in its place.

    The RPMP settings are this session's only: a SparkSession built after its stop() does not inherit them.
    """
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    accepted = ("app_name", "master", "conf", "stop_existing", *EMBEDDED_ARGS)
    _check_security(tenant, secret, tls)
    # before anything is stopped or started
    settings = check_settings(nodes, replicas, options, accepted, _client_kw(tenant, secret, tls))
    _check_embedded(nodes, pool_size, spill_dir, spill_size)
    running = SparkContext._active_spark_context
    if running is not None:
        if not stop_existing:
            raise RuntimeError(
                f"a SparkSession is already running in this process (app {running.appName!r}, master "
                f"{running.master!r}), and Spark fixes the shuffle manager when a session's SparkContext starts: "
                f"rpmp_session() cannot put it on RPMP. Stop it first (spark.stop()), or call "
                f"rpmp_session(..., stop_existing=True) to stop it and start an RPMP session in its place.")
        session = SparkSession.getActiveSession() or SparkSession._instantiatedSession
        if session is not None:
            session.stop()  # an earlier rpmp_session's stop() also stops its embedded node
        if SparkContext._active_spark_context is not None:
            SparkContext._active_spark_context.stop()

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    for k, v in (conf or {}).items():
        builder = builder.config(k, v)
    jvm_launched_here = not _jvm_running()
    security = SessionSecurity(tenant, secret, tls, embedded=nodes is None)
    builder, node = _configure(builder, nodes, pool_size, replicas, settings, spill_dir, spill_size, security)
    ours = {k: str(v) for k, v in builder._options.items()
            if k.startswith("spark.rpmp.")
            or k in ("spark.shuffle.manager", DATA_IO_KEY, "spark.jars", EXECUTOR_CLASSPATH)}
    try:
        spark = builder.getOrCreate()
    except Exception:
        if node is not None:
            node.close()
        security.close()
        raise
    finally:
        if jvm_launched_here:
            _forget_in_jvm(ours)
    if node is not None or security.secret_file or security.ca_pem:
        original_stop = spark.stop

        def stop() -> None:
            try:
                original_stop()
            finally:
                if node is not None:
                    node.close()
                security.close()

        spark.stop = stop
        spark._rpmp_node = node
        atexit.register(security.close)
    return spark


def _jvm_running() -> bool:
    from pyspark import SparkContext

    return SparkContext._jvm is not None


def _forget_in_jvm(ours: dict[str, str]) -> None:
    """Take this session's RPMP settings out of the driver JVM's system properties.

    The JVM that pyspark launches for a process's first session gets that session's settings as `--conf` of
    spark-submit, which makes them JVM system properties, and every later SparkConf() of the process loads
    them: a plain session built after this one's stop() would shuffle through RPMP, to a node that is gone.
    Called only when this session launched the JVM (a JVM already running got them through SparkConf only);
    the SparkContext has its own copy of them by now.
    """
    from pyspark import SparkContext

    jvm = SparkContext._jvm
    if jvm is None:
        return
    props = jvm.System.getProperties()
    our_jar = os.path.basename(ours["spark.jars"].split(",")[-1])  # rpmp_conf appends the plugin's jar
    for key in (*ours, "spark.repl.local.jars"):
        current = props.getProperty(key)
        if current is None:
            continue
        if key in ("spark.jars", "spark.repl.local.jars", EXECUTOR_CLASSPATH):  # the user's jars stay
            sep = os.pathsep if key == EXECUTOR_CLASSPATH else ","  # (spark.jars' maybe as file: URIs)
            rest = sep.join(j for j in str(current).split(sep) if j and os.path.basename(j) != our_jar)
            if rest:
                props.setProperty(key, rest)
                continue
        elif str(current) != ours[key]:
            continue
        props.remove(key)


def metrics(spark: Any) -> dict[str, Any]:
    """The plugin's counters from the driver JVM: per shuffle and totals (bytes pushed and fetched,
    segments, records, push and fetch time in ns). ValueError if `spark` does not shuffle through RPMP."""
    sc = spark.sparkContext
    manager = sc.getConf().get("spark.shuffle.manager")
    if manager != MANAGER:
        raise ValueError(f"this SparkSession does not shuffle through RPMP (spark.shuffle.manager is "
                         f"{manager or 'Spark default (sort)'}), so it has no RPMP metrics: start it with "
                         f"rpmp_session() (or configure() on its builder)")
    raw = sc._jvm.org.rpmp.shuffle.RpmpMetrics.snapshotJson()
    return json.loads(raw)
