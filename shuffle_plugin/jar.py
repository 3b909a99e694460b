"""Build and locate the RPMP Spark plugin jar (Maven: shuffle_plugin/jvm/pom.xml).

The plugin is a Maven project, one shaded jar per Spark line, named for the line and its Scala version
(rpmp-spark-4.3_2.13-<version>.jar). Spark and Scala are `provided`; the one library Spark lacks, OpenHFT's
zero-allocation-hashing (XXH3, the segment checksum), is shaded into the jar and relocated to
org.rpmp.shaded.hashing, so `spark.jars` stays a single jar. Maven's local repository is the download
cache: a build runs offline (`-o`) first and goes online only when something is missing from it.

Each line has a profile in the pom (-P spark-3.5 ... spark-4.3) that compiles the common sources and that
line's shims against its Spark from Maven Central. Spark 4.3.0 is not on Maven Central, so for that line the
installed pyspark's jars/ are first laid into the local repository as org.rpmp.pyspark:<jar>:<pyspark
version> (symbolic links) with one aggregating pom, org.rpmp.pyspark:pyspark-jars, that the spark-4.3
profile depends on (`provided`).

    python shuffle_plugin/jar.py [--line 3.5] [--out-dir DIR] [--quiet]

setup.py runs this at install time; there it must never fail the install, so a missing JDK, Maven or pyspark
only prints a warning and exits 0 (a build error exits 1, which setup.py ignores too). Called from Python
(build_jar / locate_jar), the same problems raise a JarBuildError that says what to install.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
JVM_DIR = HERE / "jvm"
POM = JVM_DIR / "pom.xml"
SRC_DIR = JVM_DIR / "src" / "main"
SHIMS_DIR = JVM_DIR / "src" / "shims"
DEFAULT_OUT_DIR = HERE / "jars"
# The Spark lines the pom has a profile for: line -> Scala binary version.
SPARK_LINES = {"3.5": "2.12", "4.0": "2.13", "4.1": "2.13", "4.2": "2.13", "4.3": "2.13"}
DEFAULT_LINE = "4.3"
# Lines whose Spark is not on Maven Central: the profile compiles against the installed pyspark's jars.
SEEDED_LINES = {"4.3"}
SEED_GROUP = "org.rpmp.pyspark"


class JarBuildError(RuntimeError):
    """The plugin jar cannot be built (no JDK, no Maven, no pyspark, or a build error)."""


class ToolMissingError(JarBuildError):
    """java, mvn or pyspark is not installed: building the jar is impossible here, not broken."""


def version() -> str:
    """The package version, without importing rpmp (no native build needed): from rpmp/__init__.py beside this
    package (a source tree, setup.py's build, or the installed pair), else from the installed distribution."""
    init = ROOT / "rpmp" / "__init__.py"
    if not init.exists():
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        try:
            return dist_version("rpmp")
        except PackageNotFoundError:
            raise JarBuildError(f"neither {init} nor an installed rpmp distribution says the version") from None
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', init.read_text(encoding="utf-8"), re.M)
    if not match:
        raise JarBuildError(f"no __version__ in {init}")
    return match.group(1)


def jar_name(line: str = DEFAULT_LINE) -> str:
    return f"rpmp-spark-{line}_{SPARK_LINES[line]}-{version()}.jar"


def sources() -> list[Path]:
    """What the shipped jars are built from: the main sources and resources, the shims, and the pom."""
    return (sorted(p for d in (SRC_DIR, SHIMS_DIR) if d.is_dir() for p in d.rglob("*") if p.is_file())
            + ([POM] if POM.exists() else []))


def _pyspark_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise ToolMissingError("pyspark is not installed: `pip install pyspark` (the plugin compiles against its jars)")
    return Path(next(iter(spec.submodule_search_locations)))


def spark_jars_dir() -> Path:
    """The jars/ folder of the installed pyspark (found without importing pyspark, which is slow)."""
    jars = _pyspark_dir() / "jars"
    if not jars.is_dir() or not any(jars.glob("spark-core_*.jar")):
        raise ToolMissingError(f"pyspark at {jars.parent} has no jars/ with spark-core; reinstall pyspark")
    return jars


def pyspark_version() -> str:
    text = (_pyspark_dir() / "version.py").read_text(encoding="utf-8")
    match = re.search(r'__version__(?::\s*str)?\s*=\s*["\']([^"\']+)["\']', text)
    if not match:
        raise ToolMissingError(f"cannot read the pyspark version from {_pyspark_dir() / 'version.py'}")
    return match.group(1)


def spark_line() -> str:
    """The Spark line of the installed pyspark, if the pom builds for it."""
    ver = pyspark_version()
    line = ".".join(ver.split(".")[:2])
    if line not in SPARK_LINES:
        raise JarBuildError(f"pyspark {ver} is Spark {line}; the plugin builds for Spark "
                            f"{', '.join(sorted(SPARK_LINES))} only")
    return line


def find_javac() -> str:
    """The JDK's javac (Maven needs a JDK; tests compile small jobs with it too)."""
    javac = shutil.which("javac")
    if javac is None and os.environ.get("JAVA_HOME"):
        candidate = Path(os.environ["JAVA_HOME"]) / "bin" / "javac"
        if candidate.exists():
            javac = str(candidate)
    if javac is None:
        raise ToolMissingError("javac not found: install a JDK 17+ (e.g. `apt-get install openjdk-17-jdk-headless`) "
                               "or set JAVA_HOME")
    return javac


def find_mvn() -> str:
    find_javac()
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ToolMissingError("mvn not found: install Maven 3.8+ (e.g. `apt-get install maven`; "
                               "scripts/setup-machine.sh does)")
    return mvn


def maven_repo() -> Path:
    """Maven's local repository (RPMP_MAVEN_REPO_LOCAL, else settings.xml's localRepository, else ~/.m2/repository)."""
    if os.environ.get("RPMP_MAVEN_REPO_LOCAL"):
        return Path(os.environ["RPMP_MAVEN_REPO_LOCAL"])
    settings = Path.home() / ".m2" / "settings.xml"
    if settings.exists():
        match = re.search(r"<localRepository>\s*([^<]+?)\s*</localRepository>", settings.read_text(encoding="utf-8"))
        if match:
            return Path(match.group(1).replace("${user.home}", str(Path.home())))
    return Path.home() / ".m2" / "repository"


def _artifact_id(jar: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", jar.name[:-len(".jar")])


def seed_pyspark(repo: Path | None = None) -> str:
    """Lay the installed pyspark's jars into the local repository as org.rpmp.pyspark artifacts (links, no copies)
    with an aggregating pom, pyspark-jars; a no-op when the same jars are already there. Returns the version."""
    repo = repo or maven_repo()
    jars = sorted(spark_jars_dir().glob("*.jar"))
    ver = pyspark_version()
    group = repo.joinpath(*SEED_GROUP.split("."))
    agg_dir = group / "pyspark-jars" / ver
    stamp = "\n".join(f"{j.resolve()} {j.stat().st_size}" for j in jars)
    stamp_file = agg_dir / "seed.stamp"
    if stamp_file.exists() and stamp_file.read_text(encoding="utf-8") == stamp:
        return ver
    deps = []
    for jar in jars:
        aid = _artifact_id(jar)
        d = group / aid / ver
        d.mkdir(parents=True, exist_ok=True)
        link = d / f"{aid}-{ver}.jar"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(jar.resolve())
        (d / f"{aid}-{ver}.pom").write_text(_pom(aid, ver, "jar", ""), encoding="utf-8")
        deps.append(f"    <dependency><groupId>{SEED_GROUP}</groupId><artifactId>{aid}</artifactId>"
                    f"<version>{ver}</version></dependency>\n")
    agg_dir.mkdir(parents=True, exist_ok=True)
    (agg_dir / f"pyspark-jars-{ver}.pom").write_text(
        _pom("pyspark-jars", ver, "pom", "  <dependencies>\n" + "".join(deps) + "  </dependencies>\n"),
        encoding="utf-8")
    stamp_file.write_text(stamp, encoding="utf-8")
    return ver


def _pom(aid: str, ver: str, packaging: str, body: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
            f"  <modelVersion>4.0.0</modelVersion>\n  <groupId>{SEED_GROUP}</groupId>\n"
            f"  <artifactId>{aid}</artifactId>\n  <version>{ver}</version>\n  <packaging>{packaging}</packaging>\n"
            "  <description>from the installed pyspark's jars (shuffle_plugin/jar.py)</description>\n"
            f"{body}</project>\n")


def maven_args(line: str, spark_version: str | None = None) -> list[str]:
    """The -P/-D arguments that pick the Spark line (and, for a seeded line, the pyspark version whose jars
    were laid out) and this package's version."""
    args = ["-B", "-ntp", "-f", str(POM), f"-Pspark-{line}", f"-Drevision={version()}"]
    if spark_version is not None:
        args.append(f"-Dspark.version={spark_version}")
    if os.environ.get("RPMP_MAVEN_REPO_LOCAL"):
        args.append(f"-Dmaven.repo.local={os.environ['RPMP_MAVEN_REPO_LOCAL']}")
    return args


_OFFLINE_MISS = re.compile(r"offline|has not been downloaded|Cannot access|Could not resolve|could not be resolved"
                           r"|Plugin .* or one of its dependencies could not", re.I)


def run_maven(goals: list[str], extra: list[str] | None = None, quiet: bool = True,
              timeout: float | None = None, env: dict[str, str] | None = None,
              line: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run Maven on the plugin's pom for `line` (default: the installed pyspark's), output captured with stderr
    into stdout: offline first, since the local repository is the download cache, and online only when it
    lacks something. Seeds pyspark's jars first where the line needs them. quiet adds -q (errors only).
    Hold build_lock() around it."""
    mvn = find_mvn()
    line = line or spark_line()
    spark_version = seed_pyspark() if line in SEEDED_LINES else None
    args = [*maven_args(line, spark_version), *(["-q"] if quiet else []), *(extra or []), *goals]

    def run(offline: bool) -> subprocess.CompletedProcess[str]:
        return subprocess.run([mvn, *(["-o"] if offline else []), *args], cwd=str(ROOT), text=True, timeout=timeout,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    if maven_repo().is_dir():
        proc = run(offline=True)
        if proc.returncode == 0 or not _OFFLINE_MISS.search(proc.stdout or ""):
            return proc
    return run(offline=False)


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """One Maven run at a time on this tree (its target/ is shared): hold this around run_maven."""
    with open(Path(tempfile.gettempdir()) / f"rpmp-jar-{os.getuid()}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _needs_build(jar: Path, srcs: list[Path]) -> bool:
    if not jar.exists():
        return True
    built = jar.stat().st_mtime
    return any(src.stat().st_mtime > built for src in srcs + [Path(__file__)])


def target_dir(line: str) -> Path:
    """Where Maven builds `line` (the pom's build directory: one per line)."""
    return JVM_DIR / "target" / f"spark-{line}"


def build_jar(out_dir: str | os.PathLike[str] | None = None, quiet: bool = False, line: str | None = None) -> Path:
    """Build the plugin for `line` (default: the installed pyspark's) with Maven into
    out_dir/rpmp-spark-<line>_<scala>-<version>.jar; a no-op when the jar is newer than every source."""
    out = Path(out_dir) if out_dir is not None else DEFAULT_OUT_DIR
    srcs = sources()
    if not POM.exists() or not any(p.suffix == ".java" for p in srcs):
        raise JarBuildError(f"no pom.xml or Java sources under {JVM_DIR}")
    if line is not None and line not in SPARK_LINES:
        raise JarBuildError(f"no Spark line {line}: the plugin builds for Spark {', '.join(SPARK_LINES)}")
    line = line or spark_line()
    jar = out / jar_name(line)
    if not _needs_build(jar, srcs):
        return jar
    out.mkdir(parents=True, exist_ok=True)
    with build_lock():
        if not _needs_build(jar, srcs):
            return jar
        if not quiet:
            print(f"mvn package -P spark-{line} -> {jar}", file=sys.stderr)
        proc = run_maven(["package"], ["-Dmaven.test.skip=true"], quiet=True, line=line)
        if proc.returncode != 0:
            raise JarBuildError(f"mvn package failed (exit {proc.returncode}):\n{proc.stdout}")
        built = target_dir(line) / jar.name
        if not built.exists():
            raise JarBuildError(f"mvn package made no {built}")
        # Copy to a temporary name and rename, so a concurrent reader never sees half a jar.
        partial = jar.with_suffix(f".jar.{os.getpid()}.tmp")
        shutil.copyfile(built, partial)
        os.replace(partial, jar)
    return jar


def locate_jar() -> Path:
    """The plugin jar for the installed pyspark's Spark line: the one next to this file, rebuilt from the sources
    when they are newer. A Spark line the pom has no profile for is a JarBuildError naming the supported ones
    (before anything starts), not a jar of another line failing inside Spark."""
    jar = DEFAULT_OUT_DIR / jar_name(spark_line())
    if jar.exists() and (not SRC_DIR.is_dir() or not _needs_build(jar, sources())):
        return jar
    return build_jar(quiet=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the RPMP Spark shuffle plugin jar (with Maven).")
    parser.add_argument("--out-dir", default=None, help=f"where to put the jar (default {DEFAULT_OUT_DIR})")
    parser.add_argument("--quiet", action="store_true", help="print only warnings and errors")
    parser.add_argument("--line", choices=sorted(SPARK_LINES), default=None,
                        help="the Spark line to build for (default: the installed pyspark's)")
    args = parser.parse_args(argv)
    try:
        jar = build_jar(args.out_dir, quiet=args.quiet, line=args.line)
    except ToolMissingError as exc:
        # Installing RPMP without a JDK, Maven or pyspark is legitimate (the node and Python client need none).
        print(f"warning: RPMP Spark plugin jar not built: {exc}", file=sys.stderr)
        return 0
    except JarBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(jar)
    return 0


if __name__ == "__main__":
    sys.exit(main())
