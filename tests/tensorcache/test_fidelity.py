"""The control set's one-line description (tensorcache.fidelity; the figures are checked in
tests/nas_integration/test_scratch.py, beside the search that makes them)."""
from tensorcache.fidelity import describe, fidelity


def test_one_control_has_no_tau_and_says_n_a_not_nan():
    line = describe(fidelity([{"purpose": "control", "scratch_of": "a", "scratch_seed": 0, "score": 80.0,
                               "warm_score": 90.0}]))
    assert line.startswith("1 controls: warm - scratch +10.00") and "tau n/a (ceiling n/a, 0 with" in line
    assert "nan" not in line
