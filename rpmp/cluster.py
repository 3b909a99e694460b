"""RPMP node processes on this machine: the one way the tests, the benchmarks, `rpmp cluster` and the
embedded Spark node start, wait for, restart and stop a node.

    with LocalNode(pool_size="256m") as node:          # `rpmp server` child on loopback, pool on /dev/shm
        Client(node.address).put("k", b"v")
    with LocalCluster(3) as cluster:                  # node 0 seeds the others; returns once all see all
        Client(cluster.addresses).members()

A node is a real `rpmp server` child (`python -m rpmp.cli server`, found through the installed package,
never through a path into a source tree), so what is tested is what is deployed. Shaped after asyncpg's
cluster.py: start waits for readiness with a bound, stop escalates to SIGKILL, so no caller can leave a
node behind; a node that fails to start raises with its stderr in the message.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from types import TracebackType
from typing import IO, Any, Literal

from rpmp.server.config import check_spill_dirs, check_spill_values, parse_size, prepare_spill_dirs

READY = "RPMP node listening on "
StderrMode = Literal["capture", "pipe", "inherit"]

__all__ = ["LocalCluster", "LocalNode", "NodeError", "default_pool_dir", "new_pool_path"]


class NodeError(RuntimeError):
    """A local node did not start in time, or exited instead; the message carries its stderr."""


def default_pool_dir() -> str:
    """/dev/shm when writable (tmpfs is the PMem stand-in: the pool is then shared memory), else the temp dir."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()


def new_pool_path(prefix: str = "rpmp-node", directory: str | None = None) -> str:
    """A fresh, unused pool file name (the node creates the file)."""
    return os.path.join(directory or default_pool_dir(), f"{prefix}-{uuid.uuid4().hex[:12]}.pool")


@dataclass(frozen=True)
class SpillOptions:
    """The disk-tier flags a LocalNode passes to `rpmp server`, parsed and checked (None: not given, so the
    node's default, or its config file's or RPMP_* variable's, applies)."""

    spill_size: int | None = None
    spill_high: float | None = None
    spill_low: float | None = None
    full_wait: float | None = None
    app_quota: int | None = None

    @classmethod
    def parse(cls, spill_size: str | int | None, spill_high: float | None, spill_low: float | None,
              full_wait: float | None, app_quota: str | int | None) -> SpillOptions:
        """From sizes ("100g") and numbers; a bad value is a ValueError here, before anything is created."""
        opts = cls(None if spill_size is None else parse_size(spill_size),
                   None if spill_high is None else float(spill_high),
                   None if spill_low is None else float(spill_low),
                   None if full_wait is None else float(full_wait),
                   None if app_quota is None else parse_size(app_quota))
        check_spill_values(*astuple(opts))
        return opts

    def flags(self) -> list[str]:
        """The `rpmp server` flags of the values given."""
        out: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out += ["--" + f.name.replace("_", "-"), repr(value) if isinstance(value, float) else str(value)]
        return out


def _dir_list(dirs: str | Sequence[str] | None) -> list[str]:
    """Directories as absolute paths (the node may not run where this process does) from a path, a comma list
    or a sequence of either."""
    if dirs is None:
        return []
    items = [dirs] if isinstance(dirs, str) else list(dirs)
    return [os.path.abspath(d.strip()) for item in items for d in str(item).split(",") if d.strip()]


def remove_spill_dirs(dirs: Sequence[str]) -> None:
    """For directories a LocalNode or LocalCluster created (parents first): remove the spill files (`*.spill`,
    regular files directly inside, no symlink followed) and then each directory, deepest first, when nothing else
    is in it. Anything else anyone put there stays, and so does its directory."""
    for d in reversed(dirs):
        try:
            with os.scandir(d) as entries:
                spill = [e.path for e in entries if e.name.endswith(".spill") and e.is_file(follow_symlinks=False)]
        except OSError:
            continue
        for path in spill:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        try:
            os.rmdir(d)
        except OSError:
            pass  # not empty: someone else's files


def _shared_spill_dir(others: list[list[str]], mine: list[str]) -> None:
    """ValueError if a node with spill dirs `mine` would share one with an earlier node (`others`, by index):
    the same directory, or one inside the other. Else `mine` joins `others`."""
    for i, theirs in enumerate(others):
        for d in mine:
            for t in theirs:
                a, b = os.path.realpath(d), os.path.realpath(t)
                if os.path.commonpath([a, b]) in (a, b):
                    raise ValueError(f"nodes {i} and {len(others)} would share spill dir {d!r} (node {i} has {t!r})")
    others.append(list(mine))


def _tls_files(cert: str | None, key: str | None, ca: str | None) -> tuple[str, str, str]:
    """(cert, key, ca) of a local node's TLS, checked before anything starts (ValueError: one line)."""
    from rpmp.tls import check_node_files

    cert, key, ca = (os.path.abspath(f) if f else "" for f in (cert, key, ca))
    check_node_files(cert, key, ca)
    return cert, key, ca


class AuthFiles:
    """The auth files of local nodes: paths given by the caller, or written here from a {tenant: secret} dict
    (and a random cluster secret when asked) into a private temporary directory that close() removes."""

    def __init__(self, auth_file: str | Mapping[str, str] | None, cluster_secret_file: str | None,
                 make_cluster_secret: bool = False):
        from rpmp.auth import write_private

        self._dir: str | None = None
        self.auth_file = ""
        self.cluster_secret_file = cluster_secret_file or ""
        if isinstance(auth_file, Mapping):
            self.auth_file = os.path.join(self._tmp(), "auth")
            write_private(self.auth_file, "".join(f"{t} {s}\n" for t, s in auth_file.items()))
        elif auth_file:
            self.auth_file = auth_file
        if make_cluster_secret and not self.cluster_secret_file:
            import secrets

            self.cluster_secret_file = os.path.join(self._tmp(), "cluster-secret")
            write_private(self.cluster_secret_file, secrets.token_hex(32) + "\n")

    def _tmp(self) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="rpmp-auth-")  # mode 0700
        return self._dir

    def flags(self) -> list[str]:
        return ((["--auth-file", self.auth_file] if self.auth_file else [])
                + (["--cluster-secret-file", self.cluster_secret_file] if self.cluster_secret_file else []))

    def cluster_client(self) -> dict[str, Any]:
        if not (self.auth_file and self.cluster_secret_file):
            return {}
        return {"tenant": "@cluster", "secret_file": self.cluster_secret_file}

    def close(self) -> None:
        if self._dir is not None:
            import shutil

            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class LocalNode:
    """One `rpmp server` child process on `host`, its pool a file (on /dev/shm unless named).

    pool: the pool file; None makes a fresh one that `close()` removes (a named pool is the caller's and
      stays, unless remove_pool=True). stop() never removes the pool: restart() and a later node on the same
      pool must find the data.
    port: 0 picks a free one; restart() reuses whatever port the node got, so clients see the same address.
    args: further `rpmp server` flags, passed through as they are.
    stderr: "capture" (default) to an anonymous file read by stderr_text() and quoted when the start fails
      (a file, not a pipe: nobody has to drain it for the node to keep logging); "pipe" hands
      proc.stderr (text) to the caller, who must drain it; "inherit" passes it through; or an open file / fd.
    spill_dir / spill_dirs: the disk tier's directories (a path, a list, or a comma list; one of the two
      arguments), `rpmp server --spill-dir`; spill_subdir: use <dir>/<spill_subdir> of each instead (what
      LocalCluster and the embedded node do, so that nodes never share spill files). A missing directory whose
      parent exists is created (mode 0700) at the first start; close() removes, when it removes the pool, the
      spill files (*.spill) of the directories it created and then those directories if nothing else is in
      them. A directory that existed is never emptied: its spill files belong to the pool that stays, or to
      the caller. spill_size, spill_high, spill_low, full_wait, app_quota: the `rpmp server` flags of the same
      names (None: the node's default, or its config file's or RPMP_* variable's); bad values are a ValueError
      here, before anything is created.
    tls_cert / tls_key / tls_ca: `rpmp server --tls-cert/--tls-key/--tls-ca` (checked here); `client_tls` gives the
      Client arguments that reach the node.
    auth_file: `--auth-file`, a path or a {tenant: secret} dict written to a 0600 file in a private temporary
      directory that close() removes; cluster_secret_file: `--cluster-secret-file`. `cluster_auth` are the
      Client(...) arguments that act as @cluster on the node.
    exit_with_parent: the node stops by itself when this process ends, however it ends (SIGKILL included), and
      then removes its pool if close() would have (remove_pool). It watches a pipe whose only write end this
      process holds (`rpmp server --parent-fd`): the kernel closes it when the process is gone, whichever
      thread started the node. The node then also runs in its own session, so a Ctrl-C (SIGINT to the
      terminal's or a notebook kernel's process group) reaches this process and not the node behind it.
    """

    def __init__(self, pool: str | None = None, *, pool_size: str | int = "256m", host: str = "127.0.0.1",
                 port: int = 0, seeds: str | Sequence[str] | None = None, args: Sequence[str] = (),
                 stderr: StderrMode | int | IO[Any] = "capture", remove_pool: bool | None = None,
                 timeout: float = 60.0, env: Mapping[str, str] | None = None, exit_with_parent: bool = False,
                 spill_dir: str | Sequence[str] | None = None, spill_dirs: str | Sequence[str] | None = None,
                 spill_subdir: str | None = None, spill_size: str | int | None = None,
                 spill_high: float | None = None, spill_low: float | None = None, full_wait: float | None = None,
                 app_quota: str | int | None = None, tls_cert: str | None = None, tls_key: str | None = None,
                 tls_ca: str | None = None, auth_file: str | Mapping[str, str] | None = None,
                 cluster_secret_file: str | None = None):
        if spill_dir is not None and spill_dirs is not None:
            raise ValueError("give spill_dir or spill_dirs, not both")
        self.tls = _tls_files(tls_cert, tls_key, tls_ca)
        # --auth-file (a path, or {tenant: secret} written to a 0600 file that close() removes), --cluster-secret-file
        self.auth = AuthFiles(auth_file, cluster_secret_file)
        self.spill_base_dirs = _dir_list(spill_dir if spill_dir is not None else spill_dirs)
        if spill_subdir is not None and (not spill_subdir or os.sep in spill_subdir or spill_subdir in (".", "..")):
            raise ValueError(f"spill_subdir={spill_subdir!r}: must be one directory name")
        self.spill_subdir = spill_subdir
        self.spill_dirs = [os.path.join(d, spill_subdir) if spill_subdir else d for d in self.spill_base_dirs]
        self.spill = SpillOptions.parse(spill_size, spill_high, spill_low, full_wait, app_quota)
        check_spill_dirs(self.spill_base_dirs)  # a subdirectory of a usable one is usable
        self._made_spill_dirs: list[str] = []  # created by this node (parents first): close() may empty them
        self.pool = pool or new_pool_path()
        self.remove_pool = pool is None if remove_pool is None else remove_pool
        self.pool_size = str(pool_size)
        self.host = host
        self.port = port
        self.seeds = [seeds] if isinstance(seeds, str) else list(seeds or ())
        self.args = list(args)
        self.stderr_mode = stderr
        self.timeout = timeout
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[str] | None = None
        self._log: int | None = None  # fd of the captured stderr (O_APPEND: the node's writes never overwrite)
        self._log_start = 0  # where this incarnation's stderr begins in it
        self.exit_with_parent = exit_with_parent
        self._parent_pipe: int | None = None  # write end of the running incarnation's --parent-fd pipe

    # ---- what callers read -----------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        """host:port, the node's default id and what clients connect to."""
        return f"{self.host}:{self.port}"

    @property
    def addr(self) -> str:
        """Short for `address` (the tests' spelling)."""
        return self.address

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def command(self) -> list[str]:
        """The `rpmp server` command line of the next start."""
        cmd = [sys.executable, "-m", "rpmp.cli", "server", "--host", self.host, "--port", str(self.port),
               "--pool", self.pool, "--pool-size", self.pool_size]
        if self.seeds:
            cmd += ["--seeds", ",".join(self.seeds)]
        for d in self.spill_dirs:
            cmd += ["--spill-dir", d]
        for flag, path in zip(("--tls-cert", "--tls-key", "--tls-ca"), self.tls, strict=True):
            cmd += [flag, path] if path else []
        return cmd + self.auth.flags() + self.spill.flags() + self.args

    @property
    def cluster_auth(self) -> dict[str, Any]:
        """Client(...) arguments that act as @cluster on this node (with its cluster secret); {} when it runs open."""
        return self.auth.cluster_client()

    @property
    def client_tls(self) -> dict[str, Any]:
        """Client(...) arguments that reach this node: none for a plaintext node; with TLS its CA (the certificate
        itself when no CA was given: a self-signed one) and, when it requires client certificates (tls_ca), its own
        certificate and key as the client's."""
        cert, key, ca = self.tls
        if not cert:
            return {}
        return {"tls": True, "ca": ca or cert, **({"cert": cert, "key": key} if ca else {})}

    def stderr_text(self, incarnation: bool = False) -> str:
        """What the node wrote to stderr since it was created (with `incarnation`: since its last start), when
        captured ("" otherwise)."""
        if self._log is None:
            return ""
        start = self._log_start if incarnation else 0
        return os.pread(self._log, os.fstat(self._log).st_size - start, start).decode(errors="replace")

    # ---- life cycle ------------------------------------------------------------------------------------------
    def start(self, timeout: float | None = None) -> LocalNode:
        """Start the node and return once it listens; NodeError (with its stderr) if it exits or takes longer.

        A fixed port still held (a client's ephemeral port, a previous incarnation's socket) is retried
        until the timeout instead of failing at once: that is what a restart on the same address meets.
        """
        if self.running:
            raise NodeError(f"node {self.address} is already running (pid {self.pid})")
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        self._make_spill_dirs()
        while True:
            proc = self.proc = self._spawn()
            line = self._first_line(proc, deadline)
            if line is not None and line.startswith(READY):
                host, _, port = line[len(READY):].strip().rpartition(":")
                self.host, self.port = host, int(port)
                return self
            err = self._abandon(proc, grace=2.0 if line is not None else 0.0)
            if "Address already in use" in err and self.port and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            what = (f"exited with status {proc.returncode}" if line is not None
                    else f"did not listen within {limit:g} s")
            raise NodeError(f"rpmp node (pool {self.pool}, port {self.port or 'any'}) {what}; "
                            f"stdout {line or ''!r}; stderr:\n{err[-8000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Signal the node and wait; SIGKILL if it has not exited within `timeout`. Returns its exit status
        (None if it never started). Safe to call again, and after kill(); the pool stays."""
        self.signal(sig)
        return self.reap(timeout)

    def signal(self, sig: int) -> None:
        """Send `sig` if the node runs (SIGCONT after it: a node a test SIGSTOPped must run to act on it)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(sig)
                if sig not in (signal.SIGKILL, signal.SIGSTOP):
                    proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass

    def reap(self, timeout: float = 20.0) -> int | None:
        """Wait for the node to exit, SIGKILL after `timeout`; close our ends of its pipes."""
        proc = self.proc
        if proc is None:
            return None
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        self._close_parent_pipe()
        return proc.returncode

    def kill(self) -> int | None:
        """SIGKILL: a crash, as far as the pool can tell."""
        return self.stop(signal.SIGKILL)

    def restart(self, timeout: float | None = None) -> LocalNode:
        """Stop the node if it runs (SIGTERM) and start it again on the same pool and port."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop the node; remove the pool if this node made it (or was told to), and with it the spill files of
        the spill directories this node created (and those directories, when nothing else is in them)."""
        self.stop()
        if self.remove_pool:
            try:
                os.unlink(self.pool)
            except FileNotFoundError:
                pass
            remove_spill_dirs(self._made_spill_dirs)
            self._made_spill_dirs = []
        if self._log is not None:
            os.close(self._log)
            self._log = None
        self.auth.close()

    def __enter__(self) -> LocalNode:
        return self if self.running else self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else f"exit {self.returncode}" if self.proc else "not started"
        return f"<LocalNode {self.address} pool={self.pool} {state}>"

    # ---- inside ----------------------------------------------------------------------------------------------
    def _make_spill_dirs(self) -> None:
        """Create the missing spill directories (and a missing base of a spill_subdir), remembering which."""
        if self.spill_subdir:
            self._made_spill_dirs += prepare_spill_dirs(self.spill_base_dirs)
        self._made_spill_dirs += prepare_spill_dirs(self.spill_dirs)

    def _stderr_target(self) -> int | IO[Any] | None:
        mode = self.stderr_mode
        if mode == "capture":
            if self._log is None:
                fd, path = tempfile.mkstemp(prefix="rpmp-node-", suffix=".log")
                os.unlink(path)
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
                self._log = fd
            self._log_start = os.fstat(self._log).st_size
            return self._log
        if mode == "pipe":
            return subprocess.PIPE
        if mode == "inherit":
            return None
        return mode

    def _spawn(self) -> subprocess.Popen[str]:
        # text: a "pipe" stderr reads as lines of str; stdout is read below through its descriptor
        if not self.exit_with_parent:
            return subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=self._stderr_target(),
                                    env=self.env, text=True, errors="replace")
        self._close_parent_pipe()
        # os.pipe() is close-on-exec: no other child (a Spark JVM, another node) inherits the write end and
        # keeps the pipe open after this process is gone; only the node gets the read end (pass_fds).
        r, w = os.pipe()
        cmd = [*self.command(), "--parent-fd", str(r)]
        if self.remove_pool:
            cmd.append("--remove-pool-with-parent")
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr_target(), env=self.env,
                                    text=True, errors="replace", pass_fds=(r,), start_new_session=True)
        except BaseException:
            os.close(w)
            raise
        finally:
            os.close(r)
        self._parent_pipe = w
        return proc

    def _close_parent_pipe(self) -> None:
        """Close our end of the parent pipe (after the node exited: closing it earlier tells a running node
        that its parent is gone, and it would remove its pool)."""
        if self._parent_pipe is not None:
            os.close(self._parent_pipe)
            self._parent_pipe = None

    @staticmethod
    def _first_line(proc: subprocess.Popen[str], deadline: float) -> str | None:
        """The node's first stdout line ("" if it closed stdout first), None if none came before the deadline."""
        assert proc.stdout is not None
        fd, buf = proc.stdout.fileno(), b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:  # exited (or closed stdout) without a word
                break
            buf += chunk
        return buf.decode(errors="replace")

    def _abandon(self, proc: subprocess.Popen[str], grace: float) -> str:
        """Kill a node that failed to start (after `grace` s to exit on its own: its status says why); what it
        wrote to stderr in this incarnation."""
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._close_parent_pipe()
        if proc.stdout is not None:
            proc.stdout.close()
        if self._log is not None:  # captured
            return self.stderr_text(incarnation=True)
        if proc.stderr is not None:
            err = proc.stderr.read()
            proc.stderr.close()
            return err
        return "(not captured: see the stderr it was given)"


class LocalCluster:
    """`n` LocalNodes on one host; node 0 is every other node's seed. start() returns once every node
    lists every node alive, so a caller's first registration sees the whole cluster.

    pool_prefix: pools are <pool_dir>/<prefix><i>.pool and kept (the caller's, e.g. `rpmp cluster`, which
      finds its data again); without it they are fresh names starting with `name`, removed by close().
    base_port: node i listens on base_port + i (0: any free ports). node_args: passed to every node's
      `rpmp server`.
    spill_dir / spill_dirs: the disk tier's directories; node i spills into <dir>/<its pool's name without
      .pool> of each (rpmp-node0, ... with pool_prefix "rpmp-node"), so no two nodes share a directory, and a
      node kept with its pool finds its spill files again. A missing dir whose parent exists is created (0700);
      close() removes what LocalNode.close() does, then the dirs this cluster created if they are empty.
      spill_size, spill_high, spill_low, full_wait, app_quota: every node's `rpmp server` flags. Bad values
      and unusable directories are a ValueError here, before any node, pool or directory is made.
    auth_file / cluster_secret_file: as LocalNode's, for every node; with an auth file and no cluster secret,
      a random one is made (the nodes must authenticate to each other). `cluster_auth` are the Client(...)
      arguments that act as @cluster.
    """

    def __init__(self, n: int = 3, *, pool_size: str | int = "256m", pool_dir: str | None = None,
                 pool_prefix: str | None = None, name: str = "rpmp-cluster", host: str = "127.0.0.1",
                 base_port: int = 0,
                 node_args: Sequence[str] = (), stderr: StderrMode | int | IO[Any] = "capture",
                 timeout: float = 60.0, spill_dir: str | Sequence[str] | None = None,
                 spill_dirs: str | Sequence[str] | None = None, spill_size: str | int | None = None,
                 spill_high: float | None = None, spill_low: float | None = None, full_wait: float | None = None,
                 app_quota: str | int | None = None, tls_cert: str | None = None, tls_key: str | None = None,
                 tls_ca: str | None = None, auth_file: str | Mapping[str, str] | None = None,
                 cluster_secret_file: str | None = None):
        if n < 1:
            raise ValueError(f"a cluster needs at least one node, not {n}")
        if spill_dir is not None and spill_dirs is not None:
            raise ValueError("give spill_dir or spill_dirs, not both")
        self.spill_dirs = _dir_list(spill_dir if spill_dir is not None else spill_dirs)
        self.spill = SpillOptions.parse(spill_size, spill_high, spill_low, full_wait, app_quota)
        self.tls = _tls_files(tls_cert, tls_key, tls_ca)
        # with authentication the nodes need a cluster secret to admit each other: a random one unless given
        self.auth = AuthFiles(auth_file, cluster_secret_file, make_cluster_secret=auth_file is not None)
        check_spill_dirs(self.spill_dirs)
        if pool_prefix is not None and self.spill_dirs:  # the nodes' names are known: check them all now
            planned: list[list[str]] = []
            for i in range(n):
                _shared_spill_dir(planned, [os.path.join(d, f"{pool_prefix}{i}") for d in self.spill_dirs])
        self._made_spill_dirs: list[str] = []  # the given spill dirs this cluster created (close() removes if empty)
        self.n = n
        self.pool_size = pool_size
        self.pool_dir = pool_dir or default_pool_dir()
        self.pool_prefix = pool_prefix
        self.name = name
        self.host = host
        self.base_port = base_port
        self.node_args = list(node_args)
        self.stderr = stderr
        self.timeout = timeout
        self.nodes: list[LocalNode] = []
        self._made = 0  # nodes made so far: the next one's index (pool name, port offset)

    @property
    def addresses(self) -> list[str]:
        return [node.address for node in self.nodes]

    @property
    def seed(self) -> LocalNode:
        return self.nodes[0]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[LocalNode]:
        return iter(self.nodes)

    def __getitem__(self, i: int) -> LocalNode:
        return self.nodes[i]

    def start(self, timeout: float | None = None) -> LocalCluster:
        """Start the nodes one by one, then wait until they agree on the membership; on any failure the
        nodes already started are stopped (and their fresh pools removed) before the error propagates."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        try:
            for _ in range(self.n - len(self.nodes)):
                self._start_node(max(deadline - time.monotonic(), 1.0))
            self.wait_converged(max(deadline - time.monotonic(), 1.0))
        except BaseException:
            self.close()
            raise
        return self

    def add_node(self, timeout: float | None = None) -> LocalNode:
        """One more node, seeded by node 0; returns once every node lists it."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        node = self._start_node(timeout)
        self.wait_converged(max(deadline - time.monotonic(), 1.0))
        return node

    def remove_node(self, node: LocalNode, sig: int = signal.SIGTERM) -> int | None:
        """Stop `node` and forget it (its fresh pool removed); the others declare it dead in their own time."""
        self.nodes.remove(node)
        rc = node.stop(sig)
        node.close()
        return rc

    def wait_converged(self, timeout: float | None = None) -> None:
        """Until every running node lists exactly the running nodes as alive; NodeError after `timeout`."""
        from rpmp.client import Client
        from rpmp.protocol import NodeState

        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        want = {(node.host, node.port) for node in self.nodes}
        seen: dict[str, object] = {}
        for node in self.nodes:
            with Client(node.address, timeout=max(timeout, 1.0), **node.client_tls, **node.cluster_auth) as client:
                while True:
                    if not node.running:
                        raise NodeError(f"node {node.address} exited ({node.returncode}) while the cluster "
                                        f"formed; stderr:\n{node.stderr_text()[-8000:]}")
                    _, members = client.members()
                    alive = {(m.host, m.port) for m in members if m.state == NodeState.ALIVE}
                    if alive == want:
                        break
                    seen[node.address] = sorted(f"{h}:{p}" for h, p in alive)
                    if time.monotonic() > deadline:
                        raise NodeError(f"the cluster did not converge within {timeout:g} s: want "
                                        f"{sorted(f'{h}:{p}' for h, p in want)}, alive as seen by each node "
                                        f"{seen}")
                    time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop every node (pools kept); safe after nodes were killed."""
        for node in self.nodes:
            node.signal(sig)  # all first: they shut down in parallel
        for node in self.nodes:
            node.reap()

    def close(self) -> None:
        """Stop every node and remove the pools this cluster made (and their spill files, LocalNode.close())."""
        self.stop()
        for node in self.nodes:
            node.close()
        remove_spill_dirs(self._made_spill_dirs)  # only the empty ones go: kept nodes keep their subdirectories
        self._made_spill_dirs = []
        self.auth.close()

    @property
    def cluster_auth(self) -> dict[str, Any]:
        """Client(...) arguments that act as @cluster on these nodes; {} when they run open."""
        return self.auth.cluster_client()

    def __enter__(self) -> LocalCluster:
        return self.start() if len(self.nodes) < self.n else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _start_node(self, timeout: float) -> LocalNode:
        i = self._made
        self._made += 1
        if self.pool_prefix is not None:
            pool, remove = os.path.join(self.pool_dir, f"{self.pool_prefix}{i}.pool"), False
        else:
            pool, remove = new_pool_path(f"{self.name}-node{i}", self.pool_dir), True
        subdir = os.path.basename(pool).removesuffix(".pool") if self.spill_dirs else None
        node = LocalNode(pool, pool_size=self.pool_size, host=self.host,
                         port=self.base_port + i if self.base_port else 0,
                         seeds=self.nodes[0].address if self.nodes else None, args=self.node_args,
                         stderr=self.stderr, remove_pool=remove, timeout=timeout, spill_dirs=self.spill_dirs,
                         spill_subdir=subdir, **vars(self.spill), tls_cert=self.tls[0], tls_key=self.tls[1],
                         tls_ca=self.tls[2], auth_file=self.auth.auth_file or None,
                         cluster_secret_file=self.auth.cluster_secret_file or None)
        _shared_spill_dir([other.spill_dirs for other in self.nodes], node.spill_dirs)
        self._made_spill_dirs += prepare_spill_dirs([d for d in self.spill_dirs if d not in self._made_spill_dirs])
        self.nodes.append(node)  # before start: a failed start is still cleaned up by close()
        node.start()
        return node
