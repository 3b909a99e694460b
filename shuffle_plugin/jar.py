"""Build and locate the RPMP Spark plugin jar.

The Java sources under shuffle_plugin/jvm/src are compiled with plain javac against the jars of the
installed pyspark (no Maven): compiling against exactly the Spark the user runs catches API drift at build
time. The one library Spark lacks, OpenHFT's zero-allocation-hashing (XXH3, the segment checksum), is
downloaded once from Maven Central (pinned by SHA-256, cached under ~/.cache/rpmp) and its classes are
bundled into the plugin jar, so `spark.jars` stays a single jar.

    python shuffle_plugin/jar.py [--out-dir DIR] [--quiet]

setup.py runs this at install time; there it must never fail the install, so a missing javac or pyspark
only prints a warning and exits 0 (a compile error exits 1, which setup.py ignores too). Called from
Python (build_jar / locate_jar), the same problems raise a JarBuildError that says what to install.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SRC_DIR = HERE / "jvm" / "src"
DEFAULT_OUT_DIR = HERE / "jars"
# Classes bundled into the plugin jar: (group, artifact, version, SHA-256 of the jar, licence).
BUNDLED = [("net.openhft", "zero-allocation-hashing", "2026.0",
            "22b4328b4cd751790ba3222320c7aae3f7927e6cdd064cd8a60d2a179be4ada3", "Apache-2.0")]
MAVEN_REPO = os.environ.get("RPMP_MAVEN_REPO", "https://repo1.maven.org/maven2")
CACHE_DIR = Path(os.environ.get("RPMP_JAR_CACHE", Path.home() / ".cache" / "rpmp" / "jars"))


class JarBuildError(RuntimeError):
    """The plugin jar cannot be built (no JDK, no pyspark, or a compile error)."""


class ToolMissingError(JarBuildError):
    """javac or pyspark is not installed: building the jar is impossible here, not broken."""


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


def jar_name() -> str:
    return f"rpmp-shuffle-{version()}.jar"


def sources() -> list[Path]:
    return sorted(SRC_DIR.rglob("*.java"))


def spark_jars_dir() -> Path:
    """The jars/ folder of the installed pyspark (found without importing pyspark, which is slow)."""
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise ToolMissingError("pyspark is not installed: `pip install pyspark` (the plugin compiles against its jars)")
    jars = Path(next(iter(spec.submodule_search_locations))) / "jars"
    if not jars.is_dir() or not any(jars.glob("spark-core_*.jar")):
        raise ToolMissingError(f"pyspark at {jars.parent} has no jars/ with spark-core; reinstall pyspark")
    return jars


def find_javac() -> str:
    javac = shutil.which("javac")
    if javac is None and os.environ.get("JAVA_HOME"):
        candidate = Path(os.environ["JAVA_HOME"]) / "bin" / "javac"
        if candidate.exists():
            javac = str(candidate)
    if javac is None:
        raise ToolMissingError("javac not found: install a JDK 17+ (e.g. `apt-get install openjdk-17-jdk-headless`) "
                            "or set JAVA_HOME")
    return javac


def bundled_jars() -> list[Path]:
    """The jars in BUNDLED, downloaded into CACHE_DIR when missing; each checked against its SHA-256."""
    paths = []
    for group, artifact, ver, sha256, _ in BUNDLED:
        path = CACHE_DIR / f"{artifact}-{ver}.jar"
        if not path.exists() or _sha256(path) != sha256:
            url = f"{MAVEN_REPO}/{group.replace('.', '/')}/{artifact}/{ver}/{artifact}-{ver}.jar"
            try:
                with urllib.request.urlopen(url, timeout=60) as resp:
                    body = resp.read()
            except OSError as exc:
                raise JarBuildError(f"cannot download {url} ({exc}); put {path.name} into {CACHE_DIR} by hand or "
                                    "set RPMP_MAVEN_REPO to a reachable mirror") from exc
            got = hashlib.sha256(body).hexdigest()
            if got != sha256:
                raise JarBuildError(f"{url} has SHA-256 {got}, expected {sha256}")
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(body)
            os.replace(partial, path)
        paths.append(path)
    return paths


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bundle(zf: zipfile.ZipFile, jar: Path) -> None:
    """Copy a library's classes and resources into the plugin jar (not its manifest or signatures)."""
    with zipfile.ZipFile(jar) as lib:
        for info in lib.infolist():
            name = info.filename
            upper = name.upper()
            if info.is_dir() or upper == "META-INF/MANIFEST.MF" or name.endswith("module-info.class") \
                    or (upper.startswith("META-INF/") and upper.endswith((".SF", ".RSA", ".DSA"))):
                continue
            zf.writestr(info, lib.read(name))


def _needs_build(jar: Path, srcs: list[Path]) -> bool:
    if not jar.exists():
        return True
    built = jar.stat().st_mtime
    return any(src.stat().st_mtime > built for src in srcs + [Path(__file__)])


def build_jar(out_dir: str | os.PathLike[str] | None = None, quiet: bool = False) -> Path:
    """Compile the plugin into out_dir/rpmp-shuffle-<version>.jar; a no-op when the jar is newer than every source."""
    out = Path(out_dir) if out_dir is not None else DEFAULT_OUT_DIR
    jar = out / jar_name()
    srcs = sources()
    if not srcs:
        raise JarBuildError(f"no Java sources under {SRC_DIR}")
    if not _needs_build(jar, srcs):
        return jar
    javac = find_javac()
    libs = bundled_jars()
    classpath = os.pathsep.join(str(p) for p in [*sorted(spark_jars_dir().glob("*.jar")), *libs])
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rpmp-javac-") as tmp:
        classes = Path(tmp) / "classes"
        classes.mkdir()
        # An argument file keeps the command line short whatever the number of sources and jars.
        argfile = Path(tmp) / "javac.args"
        args = ["--release", "17", "-encoding", "UTF-8", "-Xlint:-options", "-nowarn",
                "-cp", classpath, "-d", str(classes)] + [str(s) for s in srcs]
        argfile.write_text("\n".join(_quote(a) for a in args), encoding="utf-8")
        if not quiet:
            print(f"javac: {len(srcs)} sources -> {jar}", file=sys.stderr)
        proc = subprocess.run([javac, f"@{argfile}"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise JarBuildError(f"javac failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
        if proc.stderr.strip() and not quiet:
            print(proc.stderr, file=sys.stderr, end="")
        # Write to a temporary name and rename, so a concurrent reader never sees half a jar.
        partial = jar.with_suffix(".jar.tmp")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("META-INF/MANIFEST.MF",
                        f"Manifest-Version: 1.0\nImplementation-Title: rpmp-shuffle\n"
                        f"Implementation-Version: {version()}\nCreated-By: shuffle_plugin/jar.py\n\n")
            zf.writestr("META-INF/THIRD-PARTY.txt", "".join(
                f"{g}:{a}:{v} ({lic}), classes bundled unmodified\n" for g, a, v, _, lic in BUNDLED))
            for path in sorted(classes.rglob("*.class")):
                zf.write(path, path.relative_to(classes).as_posix())
            for lib in libs:
                _bundle(zf, lib)
        os.replace(partial, jar)
    return jar


def _quote(arg: str) -> str:
    """Quote one javac @argfile argument (paths may hold spaces or backslashes)."""
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def locate_jar() -> Path:
    """The plugin jar: the one installed next to this file, rebuilt from the sources when they are newer."""
    jar = DEFAULT_OUT_DIR / jar_name()
    if jar.exists() and (not SRC_DIR.is_dir() or not _needs_build(jar, sources())):
        return jar
    return build_jar(quiet=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the RPMP Spark shuffle plugin jar.")
    parser.add_argument("--out-dir", default=None, help=f"where to put the jar (default {DEFAULT_OUT_DIR})")
    parser.add_argument("--quiet", action="store_true", help="print only warnings and errors")
    args = parser.parse_args(argv)
    try:
        jar = build_jar(args.out_dir, quiet=args.quiet)
    except ToolMissingError as exc:
        # Installing RPMP without a JDK or pyspark is legitimate (the node and Python client need neither).
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
