"""What a finished library ships: a licence, a changelog, type markers, versions on the commands, docs of the
cache's arguments."""
import inspect
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

import tensorcache
from tensorcache import TensorCache
from tensorcache.config import CacheConfig

ROOT = Path(__file__).resolve().parents[1]


def test_licence_changelog_and_type_markers_ship():
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["tensorcache"]
    assert (ROOT / "tensorcache" / "py.typed").exists() and (ROOT / "nas_integration" / "py.typed").exists()
    assert "License :: OSI Approved :: MIT License" in project["project"]["classifiers"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "tensorcache.__version__"}


def test_both_commands_print_the_version():
    for module in ("tensorcache", "nas_integration"):
        done = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True,
                              timeout=300, check=True)
        assert tensorcache.__version__ in done.stdout


def test_the_class_docstring_describes_every_constructor_argument():
    doc = inspect.getdoc(TensorCache)
    for name in [f.name for f in fields(CacheConfig)]:  # TensorCache(**settings) takes the config's fields
        assert f"``{name}``" in doc, name


def test_a_device_tier_needs_no_thought_on_a_cpu_only_machine():
    cache = TensorCache(memory=0, device_memory="1MB")  # device="auto": the GPU if torch sees one, else the CPU
    try:
        import torch

        assert cache.tiers[0].device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    finally:
        cache.close()
