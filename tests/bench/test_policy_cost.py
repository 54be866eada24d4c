"""policy_cost's harness: a policy that names recorded victims makes the search evict exactly those; a revision
git cannot show is named before any search runs; --replay-evals 0 leaves the replay out, as documented."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import policy_cost  # noqa: E402
from nas_integration.data import nb201_table  # noqa: E402
from tensorcache.policies import EvolutionAware  # noqa: E402


def victims_of(calls):
    return [calls[i + 1] for i, call in enumerate(calls) if call is None]


def test_the_search_under_recorded_victims_evicts_the_same(tmp_path):
    table = str(nb201_table())
    heard = policy_cost.policy_calls(table, str(tmp_path), EvolutionAware, 150, "1MB")
    assert len(victims_of(heard)) > 10  # the tier binds
    again = policy_cost.policy_calls(table, str(tmp_path), policy_cost.deciding_as(heard), 150, "1MB")
    assert victims_of(again) == victims_of(heard)


def test_a_revision_git_cannot_show_is_named_before_any_search(tmp_path, monkeypatch):
    monkeypatch.setattr(policy_cost, "live_search", lambda *a: pytest.fail("a search ran before the revision was checked"))
    with pytest.raises(ValueError, match="git revision 'no-such-rev': "):
        policy_cost.main(["--out", str(tmp_path), "--same-as", "no-such-rev", "--live-evals", "5", "--repeats", "1"])


def test_replay_evals_0_leaves_the_replay_out_and_a_negative_count_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(policy_cost, "live_search", lambda *a: (lambda: None))  # the searches are not the point here
    monkeypatch.setattr(policy_cost, "record_trace", lambda *a: pytest.fail("a trace was recorded for a replay"))
    assert policy_cost.main(["--out", str(tmp_path), "--live-evals", "5", "--repeats", "1", "--replay-evals", "0"]) == 0
    with pytest.raises(SystemExit):
        policy_cost.main(["--out", str(tmp_path), "--replay-evals", "-3"])
    assert "expected an integer >= 1, got '-3'" in capsys.readouterr().err
