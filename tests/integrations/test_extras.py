"""The integrations stay optional: the core never imports the frameworks, and a missing one is named."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_importing_the_core_imports_no_framework():
    done = _python("import sys, tensorcache, tensorcache.integrations, tensorcache.integrations.worker\n"
                   "tensorcache.TensorCache\n"
                   "print(sorted(m for m in ('deephyper', 'optuna', 'ray') if m in sys.modules))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("module, framework, extra", [("deephyper", "deephyper.hpo", "integrations"),
                                                      ("optuna", "optuna", "integrations"),
                                                      ("ray_tune", "ray.tune", "ray")])
def test_a_missing_framework_is_an_import_error_naming_the_extra(module, framework, extra):
    done = _python(f"import sys\nsys.modules[{framework!r}] = None\n"
                   f"try:\n    import tensorcache.integrations.{module}\n"
                   f"except ImportError as exc:\n    print(exc)\n")
    assert done.returncode == 0, done.stderr
    assert f"pip install 'tensorcache[{extra}]'" in done.stdout and repr(framework) in done.stdout


def test_bad_cache_options_are_named():
    from tensorcache.integrations.worker import cache_settings

    with pytest.raises(TypeError, match="memry"):
        cache_settings({"memry": "1GB"})
