"""`rpmp stat --json` and `rpmp admin`: what a node set holds, asked with STATS and MEMBERS, as tables or JSON.

The admin commands are to RPMP what Celeborn's admin CLI is to Celeborn, for a node without a REST endpoint:
list the apps and their shuffles with their sizes, delete an app, show a node's effective configuration. Every
figure comes from the nodes' STATS (docs/PROTOCOL.md); one collection (`status`) feeds both the table and the
JSON, so they cannot disagree.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from rpmp.protocol import NodeState

T = TypeVar("T")
Ask = Callable[..., Any]  # cli._ask bound to a client and timeout: (call, node=None) -> the call's answer

#: Counters `rpmp stat --json` carries per node (STATS `counters`), under these names.
NODE_COUNTERS = {"pushed_bytes": "push_bytes", "pushed_segments": "pushes", "fetched_bytes": "fetch_bytes",
                 "fetched_records": "fetch_records", "checksum_errors": "checksum_errors"}


def status(client: Any, ask: Ask) -> dict[str, Any]:
    """The cluster as `rpmp stat` shows it: {"epoch", "nodes": [...], "apps": [...]} (docs/OPERATIONS.md
    "Status as JSON"). Nodes that are not alive or draining have no figures (`stats` null), nor do those that
    did not answer (`error` says why)."""
    epoch, members = ask(client.members)
    nodes: list[dict[str, Any]] = []
    apps: dict[str, dict[str, Any]] = {}
    for n in members:
        state = n.state.name.lower() if isinstance(n.state, NodeState) else str(n.state)
        entry: dict[str, Any] = {"node": n.node_id, "address": f"{n.host}:{n.port}", "state": state}
        nodes.append(entry)
        if n.state not in (NodeState.ALIVE, NodeState.DRAINING):  # a draining node still holds data
            entry["stats"] = None
            continue
        try:
            st = ask(client.stats, node=f"{n.host}:{n.port}")
        except Exception as e:  # a member the others still think alive, gone: shown, not fatal
            entry["stats"], entry["error"] = None, str(e)
            continue
        entry["stats"] = node_figures(st)
        for app, a in st["apps"].items():
            agg = apps.setdefault(app, {"app": app, "shuffles": 0, "records": 0, "bytes": 0, "spilled_bytes": 0,
                                        "nodes": {}})
            for k in ("shuffles", "records", "bytes", "spilled_bytes"):
                agg[k] += a.get(k, 0)
            agg["nodes"][n.node_id] = {k: a.get(k, 0) for k in ("shuffles", "records", "bytes", "spilled_bytes")}
    return {"epoch": epoch, "nodes": nodes, "apps": [apps[a] for a in sorted(apps)]}


def node_figures(st: dict[str, Any]) -> dict[str, Any]:
    """One node's STATS as the stable subset `rpmp stat` shows."""
    pool, ctr, disk = st["pool"], st.get("counters", {}), st.get("spill")
    return {
        "pool": {"path": pool["path"], "capacity": pool["capacity"], "allocated": pool.get("allocated", 0),
                 "used": pool["used"], "free": pool["free"], "blocks": pool["blocks"]},
        "disk": None if disk is None else {"used": disk["used"], "capacity": disk["capacity"],
                                           "blocks": disk.get("blocks", 0), "spilled_bytes": disk["spilled_bytes"]},
        "apps": len(st["apps"]), "shuffles": sum(a["shuffles"] for a in st["apps"].values()),
        **{name: ctr.get(key, 0) for name, key in NODE_COUNTERS.items()},
        "uptime_s": st.get("uptime_s"),
    }


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def print_status(doc: dict[str, Any]) -> None:
    """`rpmp stat`'s tables, from status()."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    nt = Table(title=f"RPMP nodes (epoch {doc['epoch']})")
    cols = ("node", "state", "pool", "used", "free", "blocks", "on disk", "spilled", "apps", "shuffles", "pushed",
            "fetched")
    for col in cols:
        nt.add_column(col, justify="right" if col not in ("node", "state", "pool") else "left")
    for n in doc["nodes"]:
        f = n["stats"]
        if f is None:
            nt.add_row(n["node"], n["state"], n.get("error", ""), *[""] * (len(cols) - 3))
            continue
        pool, disk = f["pool"], f["disk"]
        # The disk tier: bytes its files hold (of --spill-size, when set) and bytes moved there since start.
        on_disk = "-" if disk is None else human(disk["used"]) + (
            f" / {human(disk['capacity'])}" if disk["capacity"] else "")
        nt.add_row(n["node"], n["state"], pool["path"], human(pool["used"]), human(pool["free"]), str(pool["blocks"]),
                   on_disk, "-" if disk is None else human(disk["spilled_bytes"]), str(f["apps"]), str(f["shuffles"]),
                   human(f["pushed_bytes"]), human(f["fetched_bytes"]))
    console.print(nt)
    if doc["apps"]:
        at = Table(title="applications (all nodes)")
        for col in ("app", "shuffles", "records", "bytes", "on disk"):
            at.add_column(col, justify="left" if col == "app" else "right")
        for a in doc["apps"]:
            at.add_row(a["app"], str(a["shuffles"]), str(a["records"]), human(a["bytes"]), human(a["spilled_bytes"]))
        console.print(at)


def print_json(doc: object) -> None:
    json.dump(doc, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


# ---- rpmp admin ----------------------------------------------------------------------------------------------

def _node_stats(client: Any, ask: Ask) -> list[tuple[str, dict[str, Any]]]:
    """(node id, STATS) of every node that holds data (alive or draining); one that does not answer is named on
    stderr and left out."""
    _, members = ask(client.members)
    out = []
    for n in members:
        if n.state in (NodeState.ALIVE, NodeState.DRAINING):
            try:
                out.append((n.node_id, ask(client.stats, node=f"{n.host}:{n.port}")))
            except Exception as e:
                print(f"rpmp admin: {e}; what it holds is not shown", file=sys.stderr)
    return out


def apps_doc(per_node: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """`rpmp admin apps`: each app's shuffles and bytes in the pool and on disk, per node and in total."""
    apps: dict[str, dict[str, Any]] = {}
    for node, st in per_node:
        for app, a in st["apps"].items():
            disk = a.get("spilled_bytes", 0)
            row = {"shuffles": a["shuffles"], "pool_bytes": a["bytes"] - disk, "disk_bytes": disk,
                   "segments": a.get("records", 0)}
            agg = apps.setdefault(app, {"app": app, "shuffles": set(), "pool_bytes": 0, "disk_bytes": 0,
                                        "segments": 0, "nodes": {}})
            agg["nodes"][node] = row
            agg["shuffles"] |= set(a.get("by_shuffle", {}))
            for k in ("pool_bytes", "disk_bytes", "segments"):
                agg[k] += row[k]
    out = []
    for app in sorted(apps):
        a = apps[app]
        # A shuffle's partitions spread over nodes: count it once (by id) when the node lists them
        a["shuffles"] = len(a["shuffles"]) or max((r["shuffles"] for r in a["nodes"].values()), default=0)
        out.append(a)
    return {"nodes": [node for node, _ in per_node], "apps": out}


def shuffles_doc(per_node: list[tuple[str, dict[str, Any]]], app: str) -> dict[str, Any]:
    """`rpmp admin shuffles APP`: each shuffle's partitions, replicas, bytes and segments, summed over nodes."""
    shuffles: dict[int, dict[str, Any]] = {}
    for node, st in per_node:
        for sid, s in st["apps"].get(app, {}).get("by_shuffle", {}).items():
            agg = shuffles.setdefault(int(sid), {"shuffle": int(sid), "partitions": s["partitions"],
                                                 "replicas": s["replicas"], "bytes": 0, "pool_bytes": 0,
                                                 "disk_bytes": 0, "segments": 0, "nodes": {}})
            agg["nodes"][node] = {"partitions_held": s["partitions_held"], "bytes": s["bytes"],
                                  "spilled_bytes": s["spilled_bytes"], "segments": s["segments"]}
            agg["bytes"] += s["bytes"]
            agg["disk_bytes"] += s["spilled_bytes"]
            agg["pool_bytes"] += s["bytes"] - s["spilled_bytes"]
            agg["segments"] += s["segments"]
    return {"app": app, "shuffles": [shuffles[k] for k in sorted(shuffles)]}


def shown_name(args: argparse.Namespace, app: str) -> str:
    """APP as STATS names it: a tenant's own app `a` is `tenant/a` there (docs/PROTOCOL.md "Authentication and
    tenants"); open nodes and @cluster see names as they are."""
    tenant = getattr(args, "tenant", None)
    return f"{tenant}/{app}" if tenant and not app.startswith(f"{tenant}/") else app


def request_name(args: argparse.Namespace, app: str) -> str:
    """APP as a request names it: a tenant names its own apps bare (the node qualifies them); @cluster names a
    tenant's app by the node's own name, `tenant` U+001F `app`, which STATS prints as `tenant/app`."""
    tenant = getattr(args, "tenant", None)
    if tenant:
        return app.removeprefix(f"{tenant}/")
    if getattr(args, "cluster_secret_file", None) and "/" in app:
        from rpmp.auth import SEP

        return app.replace("/", SEP, 1)
    return app


def _table(title: str, cols: tuple[str, ...], rows: Sequence[tuple[str, ...]], numbers: bool = True) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for i, col in enumerate(cols):
        t.add_column(col, justify="right" if i and numbers else "left")
    for r in rows:
        t.add_row(*r)
    Console().print(t)


def cmd_apps(args: argparse.Namespace, client: Any, ask: Ask) -> int:
    doc = apps_doc(_node_stats(client, ask))
    if args.json:
        print_json(doc)
        return 0
    rows = []
    for a in doc["apps"]:
        rows.append((a["app"], str(a["shuffles"]), human(a["pool_bytes"]), human(a["disk_bytes"]),
                     human(a["pool_bytes"] + a["disk_bytes"])))
        for node, r in sorted(a["nodes"].items()):
            rows.append((f"  {node}", str(r["shuffles"]), human(r["pool_bytes"]), human(r["disk_bytes"]),
                         human(r["pool_bytes"] + r["disk_bytes"])))
    if not rows:
        print(f"no apps on {', '.join(doc['nodes'])}")
        return 0
    _table("apps (total, then per node)", ("app / node", "shuffles", "pool", "disk", "total"), rows)
    return 0


def cmd_shuffles(args: argparse.Namespace, client: Any, ask: Ask) -> int:
    doc = shuffles_doc(_node_stats(client, ask), shown_name(args, args.app))
    if args.json:
        print_json(doc)
        return 0
    if not doc["shuffles"]:
        print(f"app {args.app!r} holds no shuffles on these nodes", file=sys.stderr)
        return 1
    _table(f"shuffles of {args.app}", ("shuffle", "partitions", "replicas", "segments", "pool", "disk", "nodes"),
           [(str(s["shuffle"]), str(s["partitions"]), str(s["replicas"]), str(s["segments"]), human(s["pool_bytes"]),
             human(s["disk_bytes"]), str(len(s["nodes"]))) for s in doc["shuffles"]])
    return 0


def cmd_delete_app(args: argparse.Namespace, client: Any, ask: Ask) -> int:
    """DELETE_APP through one node (it forwards to the others); what the app held is read from STATS first."""
    held = apps_doc(_node_stats(client, ask))
    app = next((a for a in held["apps"] if a["app"] == shown_name(args, args.app)), None)
    if app is None:
        print(f"app {args.app!r} holds nothing on {', '.join(held['nodes'])}: nothing to delete", file=sys.stderr)
        return 1
    total = app["pool_bytes"] + app["disk_bytes"]
    what = (f"app {args.app!r}: {app['shuffles']} shuffles, {human(total)} ({human(app['pool_bytes'])} in pools, "
            f"{human(app['disk_bytes'])} on disk) on {len(app['nodes'])} nodes")
    if not args.yes:
        if not sys.stdin.isatty():
            print(f"rpmp admin delete-app: would delete {what}; not asked on a terminal: pass --yes", file=sys.stderr)
            return 1
        if input(f"delete {what}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    blocks = ask(lambda: client.delete_app(request_name(args, args.app)))
    doc = {"app": args.app, "freed_blocks": blocks, "freed_bytes": total, "pool_bytes": app["pool_bytes"],
           "disk_bytes": app["disk_bytes"], "shuffles": app["shuffles"], "nodes": sorted(app["nodes"])}
    if args.json:
        print_json(doc)
    else:
        print(f"deleted {what}: {blocks} blocks freed")
    return 0


def cmd_config(args: argparse.Namespace, client: Any, ask: Ask) -> int:
    st = ask(client.stats, node=args.node)
    config = st.get("config")
    if config is None:
        print(f"rpmp admin config: {args.node} does not report its configuration (an older node)", file=sys.stderr)
        return 1
    if args.json:
        print_json({"node": st.get("node"), "config": config})
        return 0
    _table(f"configuration of {st.get('node')}", ("setting", "value"),
           [(k, _value(k, v)) for k, v in sorted(config.items())], numbers=False)
    return 0


def _value(key: str, v: object) -> str:
    if key.endswith("_mode") and isinstance(v, int):
        return f"0{v:o}"  # a file mode
    if isinstance(v, list):
        return ",".join(map(str, v)) or "-"
    if v is None or v == "":
        return "-"
    return str(v).lower() if isinstance(v, bool) else str(v)


COMMANDS: dict[str, Callable[[argparse.Namespace, Any, Ask], int]] = {
    "apps": cmd_apps, "shuffles": cmd_shuffles, "delete-app": cmd_delete_app, "config": cmd_config}
