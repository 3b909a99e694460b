"""Run the Spark tests on the other maintained Spark lines, each in its own cached virtual environment.

The machine's Python has one pyspark (the newest line; the main `pytest` run covers it). Issue 13 wants RPMP
to work on every maintained line, so for each other line this makes (once) a venv,
~/.cache/rpmp/spark-lines/pyspark-<version>, with `--system-site-packages` and that line's pyspark installed
into it: the venv's pyspark and py4j shadow the system's, while the editable rpmp install of this checkout and
the test dependencies stay visible, so nothing is built twice. shuffle_plugin/jar.py then builds the plugin
jar for the line of the pyspark it finds (the venv's).

    python3 scripts/spark_lines.py [--lines 3.5,4.0] [-- pytest args]

The plan keeps CI under 40 minutes on 2 cores: on 3.5, the oldest line and the one most unlike the newest
(Scala 2.12), the whole Spark end-to-end suite and the JUnit suite; on 4.0-4.2 the smoke set
(tests/test_spark_smoke.py). pytest args after `--` replace a line's selection. A line the machine's own
pyspark is on (4.3) runs on the machine's Python, no venv. Exits 1 when any line fails, including a run that
collected no tests (pytest's exit 5) or passed none.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("RPMP_SPARK_LINES_CACHE", Path.home() / ".cache" / "rpmp" / "spark-lines"))
# The newest release of each line on PyPI: the version a line's venv installs.
PYSPARK = {"3.5": "3.5.9", "4.0": "4.0.5", "4.1": "4.1.4", "4.2": "4.2.1"}
FULL = ["-m", "spark or java"]    # every Spark end-to-end module (tests/conftest.py MODULE_MARKERS) and the JUnit run
SMOKE = ["-m", "smoke"]           # tests/test_spark_smoke.py: one DataFrame query and one RDD job
PLAN = {"3.5": FULL, "4.0": SMOKE, "4.1": SMOKE, "4.2": SMOKE, "4.3": SMOKE}
DEFAULT_LINES = ["3.5", "4.0", "4.1", "4.2"]   # 4.3: the machine's own pyspark, which the main run covers
# Run by a line's Python from outside the checkout, so that `rpmp` is the installed one, not ./rpmp.
PYSPARK_VERSION = "import pyspark; print(pyspark.__version__)"
RPMP_DIR = "import os, rpmp; print(os.path.dirname(os.path.realpath(rpmp.__file__)))"


class LineError(RuntimeError):
    """A line's interpreter cannot be made or is not what the run needs."""


@dataclass
class Result:
    line: str
    pyspark: str = "?"
    exit_code: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    report: str = ""    # pytest's own counts ("2 failed, 40 passed, 3 deselected")
    setup_s: float = 0.0
    run_s: float = 0.0
    error: str = ""

    @property
    def ok(self) -> bool:
        # exit 5 (nothing collected), and a run where everything was skipped, prove nothing about the line
        return self.exit_code == 0 and self.counts.get("passed", 0) > 0 and not self.error

    @property
    def why(self) -> str:
        if self.error:
            return self.error
        return "" if self.exit_code in (0, None) else f"pytest exit {self.exit_code}"

    def summary(self) -> str:
        counts = self.report or "no counts"
        status = "ok" if self.ok else "FAILED" + (f" ({self.why})" if self.why else "")
        return (f"Spark {self.line} (pyspark {self.pyspark}): {status}: {counts}; "
                f"set-up {self.setup_s:.0f} s, run {self.run_s:.0f} s")


def table(results: list[Result]) -> str:
    """The final table: one row per line."""
    head = ("line", "pyspark", "result", "passed", "failed", "errors", "skipped", "set-up s", "run s")
    rows = [head] + [(r.line, r.pyspark, "ok" if r.ok else "FAILED", *(str(r.counts.get(k, 0)) for k in
                      ("passed", "failed", "error", "skipped")), f"{r.setup_s:.0f}", f"{r.run_s:.0f}")
                     for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines += [f"Spark {r.line}: {r.why}" for r in results if not r.ok and r.why]
    return "\n".join(lines)


def probe(python: Path, code: str) -> str | None:
    """What `python -c code` prints, or None when it fails (an import error: the code imports and prints)."""
    try:
        out = subprocess.run([str(python), "-c", code], cwd="/", capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    return out.stdout.strip()


def system_pyspark() -> str | None:
    return probe(Path(sys.executable), PYSPARK_VERSION)


def line_of(version: str) -> str:
    return ".".join(version.split(".")[:2])


def venv_python(line: str) -> Path:
    """The interpreter of a line's venv, made (or remade, when its pyspark does not import or is another
    version) under a lock, so two runs on this machine never build the same venv at once."""
    version = PYSPARK[line]
    venv = CACHE / f"pyspark-{version}"
    python = venv / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".pyspark-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = probe(python, PYSPARK_VERSION) if python.exists() else None
        if found != version:
            if venv.exists():
                print(f"spark-lines: {venv} has {'pyspark ' + found if found else 'no working pyspark'}: "
                      "making it again", flush=True)
                shutil.rmtree(venv)
            print(f"spark-lines: making {venv} (pyspark {version}; pip's cache makes this fast after the first time)",
                  flush=True)
            subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
            # pyspark only: its py4j pin comes with it; everything else (rpmp, pytest, pyarrow) is the system's.
            proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                   f"pyspark=={version}"])
            if proc.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)   # a half-made venv is not left for the next run to trust
                raise LineError(f"pip install pyspark=={version} failed (exit {proc.returncode})")
            found = probe(python, PYSPARK_VERSION)
            if found != version:
                raise LineError(f"{venv}: pyspark {version} installed but it imports "
                                f"{'pyspark ' + found if found else 'none'}")
    return python


def interpreter(line: str, system_version: str | None) -> tuple[Path, str]:
    """The Python to run a line's tests with, and its pyspark version. It must import this checkout's rpmp:
    the venvs see the system's editable install, which `./dev setup` makes."""
    if system_version is not None and line_of(system_version) == line:
        python, version = Path(sys.executable), system_version
    elif line in PYSPARK:
        python, version = venv_python(line), PYSPARK[line]
    else:
        raise LineError(f"no pyspark version known for Spark {line} (known: {', '.join(sorted(PYSPARK))})")
    found = probe(python, PYSPARK_VERSION)
    if found != version:
        raise LineError(f"{python} imports {'pyspark ' + found if found else 'no pyspark'}, not pyspark {version}")
    rpmp_dir = probe(python, RPMP_DIR)
    if rpmp_dir is None or Path(rpmp_dir) != (ROOT / "rpmp").resolve():
        raise LineError(f"{python} imports {'rpmp from ' + rpmp_dir if rpmp_dir else 'no rpmp'}, not this "
                        f"checkout's: run ./dev setup")
    return python, version


_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)\b")


def parse_counts(tail: list[str]) -> tuple[str, dict[str, int]]:
    """pytest's last summary line ("2 failed, 40 passed, 3 deselected in 250.1s") without its time, and its
    counts by singular name (passed, failed, error, skipped, ...)."""
    for text in reversed(tail):
        found = re.search(r"(\d+ \w+(?:, \d+ \w+)*) in [\d.]+s\b", text)
        if found and _COUNT.search(found.group(1)):
            counts = {what.rstrip("s") if what in ("errors", "warnings") else what: int(n)
                      for n, what in _COUNT.findall(found.group(1))}
            return found.group(1), counts
    return "", {}


def run_line(python: Path, args: list[str]) -> tuple[int, str, dict[str, int]]:
    """pytest on the checkout with `python`, its output streamed as it comes. The venv's bin/ goes first on
    PATH and PYSPARK_PYTHON names it, so Spark's Python workers and any `python3` a test starts are the
    line's too, not the system's (whose pyspark is another version)."""
    env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYSPARK_PYTHON": str(python), "PYSPARK_DRIVER_PYTHON": str(python)}
    for key in ("SPARK_HOME", "PYTHONPATH"):   # either would point Spark or Python at another pyspark
        env.pop(key, None)
    cmd = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    print(f"spark-lines: {shlex.join(cmd)}", flush=True)
    tail = b""
    # Chunks, not lines: pytest -q's progress dots come without a newline until a row is full.
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 65536):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            tail = (tail + chunk)[-16384:]
        code = proc.wait()
    return (code, *parse_counts(tail.decode(errors="replace").splitlines()))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] | None = None
    if "--" in argv:
        cut = argv.index("--")
        argv, pytest_args = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description="Run the Spark tests on each maintained Spark line, in cached venvs.",
                                     epilog="pytest args after `--` replace each line's selection")
    parser.add_argument("--lines", default=",".join(DEFAULT_LINES),
                        help=f"comma-separated Spark lines (default {','.join(DEFAULT_LINES)}; "
                             f"known {', '.join(sorted(PLAN))})")
    opts = parser.parse_args(argv)
    lines = [x.strip() for x in opts.lines.split(",") if x.strip()]
    unknown = [x for x in lines if x not in PLAN]
    if unknown or not lines:
        parser.error(f"unknown Spark line(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(sorted(PLAN))}")

    system_version = system_pyspark()
    results: list[Result] = []
    for line in lines:
        result = Result(line)
        results.append(result)
        print(f"\nspark-lines: ==== Spark {line} ====", flush=True)
        t0 = time.monotonic()
        try:
            python, result.pyspark = interpreter(line, system_version)
        except (LineError, OSError, subprocess.CalledProcessError) as exc:
            result.error = str(exc)
            result.setup_s = time.monotonic() - t0
            print(f"spark-lines: {result.summary()}", flush=True)
            continue
        result.setup_s = time.monotonic() - t0
        t0 = time.monotonic()
        selection = PLAN[line] if pytest_args is None else pytest_args
        result.exit_code, result.report, result.counts = run_line(python, selection)
        result.run_s = time.monotonic() - t0
        if result.exit_code == 5:
            result.error = "pytest collected no tests (exit 5)"
        elif result.exit_code == 0 and not result.counts.get("passed"):
            result.error = "no test passed"
        print(f"spark-lines: {result.summary()}", flush=True)

    print(f"\nspark-lines: summary\n{table(results)}", flush=True)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
