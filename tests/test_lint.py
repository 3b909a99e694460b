"""The code base stays ruff-clean and type-checks (pyproject.toml holds the rules of both)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Cython adds these to every extension and cdef class; they are not part of the modules' interface.
STUBTEST_ALLOWLIST = r"""
rpmp\._\w+\.__reduce_cython__
rpmp\._\w+\.__setstate_cython__
rpmp\._\w+\.__test__
rpmp\._\w+\.\w+\.__reduce_cython__
rpmp\._\w+\.\w+\.__setstate_cython__
# the C-level buffer protocol: Python 3.12 shows it as __buffer__, 3.10/3.11 do not
rpmp\._pool\.BlockView\.__buffer__
"""


def test_ruff_clean():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "rpmp", "shuffle_plugin", "tests", "bench"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_clean():
    """mypy over rpmp and shuffle_plugin ([tool.mypy] in pyproject.toml names them and the rules)."""
    pytest.importorskip("mypy")
    out = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_extension_stubs_match_the_built_modules(tmp_path):
    """The .pyi stubs of the Cython extensions name what the built modules have (mypy's stubtest)."""
    pytest.importorskip("mypy")
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text(STUBTEST_ALLOWLIST)
    # not the project's config (it warns about per-module sections stubtest does not read); the modules the stubs
    # import are test_mypy_clean's business
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nfollow_imports = silent\nignore_missing_imports = True\n")
    out = subprocess.run([sys.executable, "-m", "mypy.stubtest", "rpmp._pool", "rpmp._splice", "rpmp._wire",
                          "--mypy-config-file", str(config), "--allowlist", str(allowlist)],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
