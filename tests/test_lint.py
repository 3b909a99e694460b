"""The code base stays ruff-clean (pyproject.toml holds the rules)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_clean():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "rpmp", "shuffle_plugin", "tests", "bench"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
