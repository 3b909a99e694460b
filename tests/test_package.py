"""The package as users meet it: what `import rpmp` exports, what the node's import costs, what is declared."""

import ast
import contextlib
import importlib.metadata
import io
import os
import re
import subprocess
import sys
import textwrap

import pytest

import rpmp
import rpmp.client
from rpmp.protocol import ProtocolError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def docstring_example(module) -> str:
    """The indented code block of a module docstring (the lines after the summary, up to the first prose)."""
    lines = module.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("    "))
    end = next((i for i in range(start, len(lines)) if lines[i] and not lines[i].startswith("    ")), len(lines))
    return textwrap.dedent("\n".join(lines[start:end]))


def test_client_docstring_example_runs_as_written(node):
    code = docstring_example(rpmp.client)
    assert "rpmp.Client(" in code and '"127.0.0.1:7177"' in code
    out = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(code.replace('"127.0.0.1:7177"', repr(node.addr)), "rpmp.client docstring", "exec"), namespace)
    assert namespace["buf"].to_pybytes() == b"value"
    assert bytes(namespace["seg"].data) == b"..." and namespace["seg"].last
    assert "Segment(map_index=0, attempt=17, seq=0" in out.getvalue()


def test_readme_client_example_runs_as_written(node):
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    start = readme.index("import rpmp, pyarrow as pa")
    code = readme[start:readme.index("```", start)]
    namespace: dict = {}
    exec(compile(code.replace('"127.0.0.1:7177"', repr(node.addr)), "README.md", "exec"), namespace)
    assert len(namespace["pl"].prefs) == 8
    with rpmp.Client(node.addr) as c:  # what the example stored is there
        assert c.get("k").to_pybytes() == b"value"
        assert c.get_table("t").column("x").to_pylist() == [1, 2]
        assert [bytes(s.data) for s in c.fetch("app-1", 0, 3)] == [b"..."]


def test_rpmp_exports_the_client_and_its_errors():
    for name in rpmp.__all__:
        assert getattr(rpmp, name) is not None, name
    assert rpmp.Client is rpmp.client.Client and rpmp.ProtocolError is ProtocolError
    for name in ("RpmpError", "BadRequestError", "ChecksumMismatchError", "ConflictError", "CorruptError",
                 "IncompleteError", "NotFoundError", "PoolFullError", "QuotaExceededError", "UnavailableError"):
        assert issubclass(getattr(rpmp, name), ProtocolError), name
    errors = {n for n, v in vars(rpmp.client).items() if isinstance(v, type) and issubclass(v, ProtocolError)}
    assert errors - {"ProtocolError"} <= set(rpmp.__all__), "an error class of rpmp.client is not exported"
    with pytest.raises(AttributeError):
        rpmp.no_such_name  # noqa: B018


def test_the_node_does_not_import_the_client_or_pyarrow():
    """The exports are lazy: `import rpmp.server.node` costs what it did before `rpmp` exported the client."""
    code = "import sys, rpmp.server.node; print(sorted(m for m in ('pyarrow', 'rpmp.client') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _imported_modules(paths: list[str]) -> set[str]:
    """Top-level names of every module imported by the Python files under `paths` (at any depth of the code)."""
    names: set[str] = set()
    for base in paths:
        for dirpath, _, files in os.walk(os.path.join(ROOT, base)):
            for fn in files:
                if fn.endswith(".py"):
                    with open(os.path.join(dirpath, fn), encoding="utf-8") as f:
                        tree = ast.parse(f.read())
                    for n in ast.walk(tree):
                        if isinstance(n, ast.Import):
                            names.update(a.name.split(".")[0] for a in n.names)
                        elif isinstance(n, ast.ImportFrom) and n.module and not n.level:
                            names.add(n.module.split(".")[0])
    return names


def _dist(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("-", "_")


def _distributions(modules: set[str]) -> set[str]:
    """The distributions that provide these top-level modules (PyYAML provides `yaml`), as `_dist` names them;
    a module no installed distribution names stands for itself."""
    provided = importlib.metadata.packages_distributions()
    return {_dist(d) for m in modules for d in provided.get(m, [m])}


def test_declared_dependencies_are_used():
    """Each runtime dependency is imported by the installed packages; each test extra by the tests (or by the
    benchmarks they run, or run as a tool by a test)."""
    project = _pyproject()["project"]
    package_imports = _distributions(_imported_modules(["rpmp", "shuffle_plugin"]))
    for req in project["dependencies"]:
        assert _dist(req) in package_imports, f"{req} is declared but rpmp/shuffle_plugin do not import it"
    test_imports = _distributions(_imported_modules(["tests", "bench"]))
    tools = {"pytest_timeout": "timeout = ", "ruff": '"ruff"', "mypy": '"mypy"'}
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        config = f.read()
    with open(os.path.join(ROOT, "tests", "test_lint.py"), encoding="utf-8") as f:
        lint = f.read()
    for req in project["optional-dependencies"]["test"]:
        dist = _dist(req)
        if dist in tools:
            assert tools[dist] in config + lint, f"{req} is declared but nothing runs it"
        else:
            assert dist in test_imports, f"{req} is declared for the tests but neither tests/ nor bench/ import it"


def test_every_package_is_installed():
    """pyproject lists the packages a wheel holds: one left out installs a node that cannot import (an
    editable install, which maps the folders, never shows it)."""
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {os.path.relpath(d, ROOT).replace(os.sep, ".")
             for top in ("rpmp", "shuffle_plugin")
             for d, _, files in os.walk(os.path.join(ROOT, top)) if "__init__.py" in files}
    assert found - listed == set(), f"packages missing from pyproject's [tool.setuptools] packages: {found - listed}"
    assert listed - found == set(), f"pyproject lists packages that do not exist: {listed - found}"
