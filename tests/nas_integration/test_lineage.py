"""Each trace record says how much training its warm start inherited along its lineage."""
import pytest

from nas_integration.search import SearchSettings, run_search
from tensorcache.trace import read_records


def test_each_record_carries_the_training_it_inherited_along_its_lineage(tmp_path):
    summary = run_search(SearchSettings(out=str(tmp_path / "s"), evaluator="tabular", evals=120, population=10,
                                        sample=3, epochs=4, run_id="l"))
    records = read_records(summary["trace"])
    by_id = {r.model_id: r for r in records}
    warm = [r for r in records if r.donor_id is not None]
    assert warm and all(r.epochs == 4.0 for r in records)
    for r in records:
        if r.donor_id is None:
            assert r.inherited_epochs == 0.0 and r.inherited_seconds == 0.0
        else:  # the donor's own training plus what the donor inherited
            donor = by_id[r.donor_id]
            assert r.inherited_epochs == donor.epochs + donor.inherited_epochs
            assert r.inherited_seconds == pytest.approx(donor.train_s + donor.inherited_seconds)
    assert max(r.inherited_epochs for r in warm) > 4  # lineages accumulate beyond one donor's training
    assert summary["best"]["inherited_epochs"] == by_id[summary["best"]["model_id"]].inherited_epochs
