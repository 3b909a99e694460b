"""docs/CONFIGURATION.md is what scripts/gen_config_reference.py writes from the settings' declarations, and every
node setting and every spark.rpmp.* key has a meaning there."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from rpmp.server.config import NodeConfig

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen_config_reference.py"


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_config_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_is_fresh():
    out = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (f"{out.stderr.strip()}: a setting, a flag's help or a spark.rpmp.* key changed; "
                                 f"run python scripts/gen_config_reference.py and commit docs/CONFIGURATION.md")


def test_every_node_setting_has_a_row_with_a_meaning(gen):
    rows = {r["key"]: r for r in gen.node_settings()}
    assert list(rows) == [f.name for f in fields(NodeConfig)]
    for key, r in rows.items():
        assert len(r["meaning"]) > 10 and r["env"] == f"RPMP_{key.upper()}"
    assert rows["pool_size"]["default"] == "1g" and rows["pool_size"]["flag"] == "`--pool-size`"
    assert rows["log_format"]["default"] == "text" and rows["verify_push"]["flag"] == "`--no-verify-push`"
    doc = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    assert "| `port` | `--port` | `RPMP_PORT` | `7177` |" in doc


def test_every_spark_key_has_a_row_with_its_default_and_meaning(gen):
    source = gen.RPMP_CONF.read_text()
    declared = re.findall(r'public\s+static\s+final\s+String\s+\w+\s*=\s*"(spark\.rpmp\.[^"]+)"', source)
    rows = {r["key"]: r for r in gen.spark_settings()}
    assert sorted(rows) == sorted(declared) and "spark.rpmp.nodes" in rows
    assert rows["spark.rpmp.push.size"]["default"] == "4m" and rows["spark.rpmp.fallback"]["default"] == "auto"
    assert rows["spark.rpmp.fetch.local"]["default"] == "true"
    assert all(len(r["meaning"]) > 10 for r in rows.values())


def test_a_key_without_a_description_fails(gen, tmp_path):
    source = gen.RPMP_CONF.read_text().replace(
        '    public static final String NODES = "spark.rpmp.nodes";',
        '    public static final String NODES = "spark.rpmp.nodes";\n'
        '    public static final String NEW_KEY = "spark.rpmp.brand.new";\n', 1)
    with pytest.raises(gen.Undocumented, match=r"spark\.rpmp\.brand\.new \(NEW_KEY in RpmpConf.java has no Javadoc\)"):
        gen.spark_settings(source)


def test_check_fails_on_a_stale_document(gen, tmp_path, monkeypatch, capsys):
    stale = tmp_path / "CONFIGURATION.md"
    stale.write_text(gen.render().replace("`7177`", "`7077`"))
    monkeypatch.setattr(gen, "DOC", stale)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    assert gen.main(["--check"]) == 1
    assert "is stale: run python scripts/gen_config_reference.py" in capsys.readouterr().err
    assert gen.main([]) == 0 and gen.main(["--check"]) == 0


def test_the_reference_is_linked():
    for doc in ("README.md", "docs/OPERATIONS.md"):
        assert "CONFIGURATION.md" in (ROOT / doc).read_text(), f"{doc} does not link docs/CONFIGURATION.md"
