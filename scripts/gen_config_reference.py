#!/usr/bin/env python3
"""Write docs/CONFIGURATION.md from the settings' own declarations; `--check` fails if it is stale.

Sources, each the one place a setting is declared:
- the node's settings: the fields of rpmp.server.config.NodeConfig (config key, default; env RPMP_<KEY>) and the
  flags of `rpmp server` (rpmp/cli.py: flag and meaning; UNFLAGGED_HELP for a setting without a flag);
- the Spark plugin's: the `public static final String X = "spark.rpmp..."` constants of RpmpConf.java, each with
  the Javadoc just above it (its meaning) and the default of the `conf.getX(X, default)` that reads it. Read as
  text: no JVM needed.

A setting without a meaning is an error (exit 1, naming it), so a new key cannot reach a release undocumented.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import MISSING, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "CONFIGURATION.md"
RPMP_CONF = ROOT / "shuffle_plugin/jvm/src/main/java/org/rpmp/shuffle/RpmpConf.java"
if str(ROOT) not in sys.path:  # run as a script from anywhere: the source tree's rpmp
    sys.path.insert(0, str(ROOT))


class Undocumented(Exception):
    """Settings with no meaning to show."""


# ---- the node -------------------------------------------------------------------------------------------------

def _size_text(n: int) -> str:
    for suffix, unit in (("t", 1 << 40), ("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def _default_text(name: str, value: object, is_size: bool) -> str:
    if name == "node_id":
        return "host:port"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    if isinstance(value, int) and name.endswith("_mode"):
        return f"0{value:o}"
    if isinstance(value, int) and is_size:
        return _size_text(value)
    if value == "":
        return "none"
    return str(value)


def _flag_text(action: argparse.Action) -> str:
    return " / ".join(f"`{s}`" for s in action.option_strings)


def node_settings() -> list[dict[str, str]]:
    """One row per NodeConfig field: key, flag, env, default, meaning."""
    from rpmp.cli import _size, build_parser
    from rpmp.server.config import ALIASES, UNFLAGGED_HELP, NodeConfig

    server = build_parser()._subparsers._group_actions[0].choices["server"]  # type: ignore[union-attr]
    by_dest = {ALIASES.get(a.dest, a.dest): a for a in server._actions if a.option_strings}
    defaults = NodeConfig(port=7177)  # the defaults, as a node without settings has them
    rows, missing = [], []
    for f in fields(NodeConfig):
        action = by_dest.get(f.name)
        meaning = (action.help if action is not None else None) or UNFLAGGED_HELP.get(f.name, "")
        if not meaning.strip():
            missing.append(f"node setting {f.name}")
            continue
        value = getattr(defaults, f.name) if f.default is not MISSING or f.default_factory is not MISSING else None
        rows.append({"key": f.name, "flag": _flag_text(action) if action is not None else "",
                     "env": f"RPMP_{f.name.upper()}",
                     "default": _default_text(f.name, value, action is not None and action.type is _size),
                     "meaning": meaning})
    if missing:
        raise Undocumented(", ".join(missing))
    return rows


# ---- the Spark plugin -----------------------------------------------------------------------------------------

_KEY = re.compile(r'(?:/\*\*(?P<doc>(?:(?!\*/).)*?)\*/\s*)?public\s+static\s+final\s+String\s+(?P<const>\w+)\s*=\s*'
                  r'"(?P<key>spark\.rpmp\.[^"]+)"\s*;', re.S)
_GET = re.compile(r'conf\.get\w*\(\s*(?P<const>\w+)\s*,\s*(?P<default>"(?:[^"\\]|\\.)*"|[\w.]+)\s*\)')


def spark_settings(source: str | None = None) -> list[dict[str, str]]:
    """One row per spark.rpmp.* key of RpmpConf.java: key, default, meaning."""
    text = RPMP_CONF.read_text() if source is None else source
    defaults: dict[str, str] = {}
    for m in _GET.finditer(text):
        d = m.group("default")
        defaults.setdefault(m.group("const"), d[1:-1] if d.startswith('"') else d)
    rows, missing = [], []
    for m in _KEY.finditer(text):
        doc = " ".join(line.strip().lstrip("*").strip() for line in (m.group("doc") or "").splitlines()).strip()
        if not doc:
            missing.append(f"{m.group('key')} ({m.group('const')} in RpmpConf.java has no Javadoc)")
            continue
        rows.append({"key": m.group("key"), "default": defaults.get(m.group("const"), "") or "none",
                     "meaning": doc})
    if missing:
        raise Undocumented(", ".join(missing))
    return rows


# ---- the document ---------------------------------------------------------------------------------------------

def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    out = ["# Configuration reference", "",
           "Generated by `scripts/gen_config_reference.py` from the settings' declarations (rpmp/server/config.py "
           "and the flags of `rpmp server` in rpmp/cli.py; the `spark.rpmp.*` constants of RpmpConf.java). Do not "
           "edit: change the declaration and run `python scripts/gen_config_reference.py` (CI runs it with "
           "`--check`).", "",
           "## Node (`rpmp server`)", "",
           "A node's setting comes from, lowest to highest: its default, the config file (`--config FILE` or "
           "`RPMP_CONFIG`: `key = value` lines, `#` comments), the environment variable `RPMP_<KEY>`, and the flag. "
           "A bad value is refused with one line naming where it came from. Sizes take `k`, `m`, `g`, `t` "
           "(binary); times are seconds. `rpmp admin config HOST:PORT` shows a running node's effective values.",
           "", "| config key | flag | environment | default | meaning |", "| --- | --- | --- | --- | --- |"]
    for r in node_settings():
        out.append(f"| `{r['key']}` | {r['flag'] or '(none)'} | `{r['env']}` | `{_cell(r['default'])}` | "
                   f"{_cell(r['meaning'])} |")
    out += ["", "## Spark plugin (`spark.rpmp.*`)", "",
            "Set on the Spark application (`--conf`, spark-defaults.conf or the session builder) with "
            "`spark.shuffle.manager=org.rpmp.shuffle.RpmpShuffleManager`. Sizes and times take Spark's units "
            "(`4m`, `500ms`, `30s`).", "", "| key | default | meaning |", "| --- | --- | --- |"]
    for r in spark_settings():
        out.append(f"| `{r['key']}` | `{_cell(r['default'])}` | {_cell(r['meaning'])} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--check", action="store_true", help=f"fail if {DOC.relative_to(ROOT)} is not what would be "
                    "written (stale, or a setting lacks a meaning)")
    args = ap.parse_args(argv)
    try:
        text = render()
    except Undocumented as e:
        print(f"gen_config_reference: settings without a description: {e}", file=sys.stderr)
        return 1
    if args.check:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"{DOC.relative_to(ROOT)} is stale: run python scripts/gen_config_reference.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
