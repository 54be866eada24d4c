"""Every ```python block of the README and the user docs runs as written: on the CPU, in a fresh folder,
with the test Redis as ``$TC_REDIS``, and under ``mpirun -n 2`` when it imports mpi4py.

A block right after a ``<!-- not run: REASON -->`` line is skipped with that reason.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "usage.md", ROOT / "docs" / "integrations.md"]
BLOCK = re.compile(r"^(?:<!-- not run: (?P<skip>.+?) -->\n)?```python\n(?P<code>.*?)^```", re.MULTILINE | re.DOTALL)
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}


def blocks() -> list:
    """One pytest param per python block: (code, skip reason or None), id ``file:line``."""
    found = []
    for doc in DOCS:
        if not doc.is_file():
            continue
        text = doc.read_text()
        for m in BLOCK.finditer(text):
            line = text.count("\n", 0, m.start("code"))
            found.append(pytest.param(m.group("code"), m.group("skip"), id=f"{doc.relative_to(ROOT)}:{line}"))
    return found


def test_the_docs_have_python_blocks():
    ids = [p.id for p in blocks()]
    assert any(i.startswith("README.md") for i in ids) and any(i.startswith("docs/usage.md") for i in ids)


@pytest.mark.parametrize("code, skip", blocks())
def test_python_block_runs_as_written(code: str, skip: str | None, tmp_path: Path, redis_url: str) -> None:
    if skip:
        pytest.skip(skip)
    script = tmp_path / "example.py"
    script.write_text(code)
    cmd = [sys.executable, str(script)]
    if re.search(r"^\s*(from|import) mpi4py", code, re.MULTILINE):
        if shutil.which("mpirun") is None:
            pytest.skip("mpirun is not installed (apt-get install openmpi-bin)")
        cmd = ["mpirun", "-n", "2", *cmd]
    env = {**os.environ, **MPI_ENV, "TC_REDIS": redis_url, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def test_the_readme_lists_every_document():
    index = (ROOT / "README.md").read_text().split("## Documentation", 1)[1].split("\n## ", 1)[0]
    for doc in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md", ROOT / "CHANGELOG.md"]:
        assert f"]({doc.relative_to(ROOT)})" in index, f"{doc.relative_to(ROOT)} is not in the README's index"


def test_each_results_page_leads_with_its_figures_and_command():
    for page in sorted((ROOT / "docs").glob("results*.md")):
        lead = page.read_text().split("\n\n")[1]
        assert lead.startswith("**In short") and ("Command" in lead or "`run_search" in lead), page.name


@pytest.mark.parametrize("code, skip", blocks())
def test_python_blocks_write_only_below_their_folder(code: str, skip: str | None) -> None:
    for outside in ("/local/", "gettempdir(", "mkdtemp("):  # the tests run each block in a fresh temporary folder
        assert outside not in code, f"a doc example writes outside its folder ({outside})"


def test_every_test_the_docs_name_exists():
    """A test named as ``tests/...py::name`` in the README or docs/ is defined in that file (renames break it)."""
    named = re.compile(r"(tests/[\w/]+\.py)::(\w+)")
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for path, name in set(named.findall(doc.read_text())):
            source = ROOT / path
            assert source.is_file() and re.search(rf"^def {name}\(", source.read_text(), re.MULTILINE), \
                f"{doc.relative_to(ROOT)} names {path}::{name}, which does not exist"
