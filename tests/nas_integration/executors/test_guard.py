"""A cache error inside an evaluation never fails the search: a search whose puts all fail on a real shared store
(another search put the same model ids with other tensors) completes every evaluation, warns once per kind of
failure and counts each in the summary's ``cache errors`` row; a put the cache does take is still kept."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from nas_integration.cli import main
from nas_integration.search import SearchSettings, run_search
from tensorcache.config import CacheConfig

EVALS = 12


def _search(out: Path, disk: Path, seed: int, executor: str = "serial") -> dict:
    """A tabular search under run id ``same`` on the shared LMDB file ``disk``."""
    return run_search(SearchSettings(out=str(out), evaluator="tabular", evals=EVALS, population=6, sample=2,
                                     seed=seed, run_id="same", executor=executor, workers=2 if executor == "process" else 1,
                                     cache_config=CacheConfig(memory="8MB", disk=str(disk), namespace="guard")))


@pytest.mark.parametrize("executor", ["serial", "process"])
def test_a_search_whose_puts_all_fail_completes_and_counts_them(tmp_path, executor):
    disk = tmp_path / "shared.lmdb"
    first = _search(tmp_path / "first", disk, seed=0, executor=executor)
    assert first["evaluations"] == EVALS and not first["cache"].get("errors")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = _search(tmp_path / "second", disk, seed=1, executor=executor)   # same model ids, other tensors
    assert second["evaluations"] == EVALS and second["dropped"] == 0 and not second["failures"]
    assert second["cache"]["errors"] == {"put": EVALS}
    if executor == "serial":   # worker processes warn on their own stderr
        logged = [str(w.message) for w in caught if "put of model" in str(w.message)]
        assert len(logged) == 1 and "same-000000" in logged[0] and "unique within a namespace" in logged[0]


def test_the_summary_table_has_a_cache_errors_row(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")   # one line per row
    disk = tmp_path / "shared.lmdb"
    common = ["--evaluator", "tabular", "--evals", str(EVALS), "--population", "6", "--sample", "2", "--run-id",
              "same", "--disk", str(disk)]
    assert main(["--out", str(tmp_path / "a"), "--seed", "0", *common]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "cache errors" not in printed
    page_cpu = json.loads((tmp_path / "a" / "summary.json").read_text())["cache"]["background_cpu_s"]
    assert (f"(+{page_cpu:.2f} s CPU on the LMDB page thread)" in printed) == (page_cpu > 0)
    with pytest.warns(RuntimeWarning, match="put of model same-"):
        assert main(["--out", str(tmp_path / "b"), "--seed", "1", *common]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert f"cache errors │ {EVALS} (put {EVALS}): each a miss or a skipped put" in printed
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["cache"]["errors"] == {"put": EVALS}
