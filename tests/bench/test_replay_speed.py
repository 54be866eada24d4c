"""replay_speed's method: a replay through the scripted victims makes exactly the real replay's moves; a given
trace is replayed as its search ran; policies it cannot time are refused."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tensorcache" / "replay"))

import replay_speed as rs  # noqa: E402
from evolution_sim import simulate  # noqa: E402
from tensorcache.policies import make_policy  # noqa: E402
from tensorcache.replay import PolicyStore, Workload, run  # noqa: E402


@pytest.mark.parametrize("name", ["lfu", "donor-window", "evolution-aware"])
def test_scripted_victims_make_the_same_moves(name):
    work = Workload(simulate(n=80, seed=3))
    cap = int(work.total_bytes * 0.1)
    real = run(work, PolicyStore(make_policy(name), cap), name, cap, 8, 3)
    recorder = rs.Recorder(make_policy(name))
    run(work, PolicyStore(recorder, cap), name, cap, 8, 3)
    scripted = run(work, PolicyStore(rs.Scripted(name, recorder.victims), cap), name, cap, 8, 3)
    assert scripted.served == real.served and scripted.evictions == real.evictions == len(recorder.victims) > 0


def test_a_given_trace_is_replayed_with_its_own_population_and_sample(tmp_path, monkeypatch):
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps(r) + "\n" for r in simulate(n=40, seed=3)))
    (tmp_path / "summary.json").write_text(json.dumps({"settings": {"population": 6, "sample": 2}}))
    seen = []
    monkeypatch.setattr(rs, "measure", lambda work, name, cap, P, S: seen.append((name, P, S)) or (1.0, 0.5))
    assert rs.main(["--out", str(tmp_path / "out"), "--trace", str(trace), "--policies", "lru"]) == 0
    assert seen == [("lfu", 6, 2), ("lru", 6, 2)]


def test_belady_and_unknown_names_are_refused_before_anything_runs(capsys):
    for name in ("belady", "lur"):
        with pytest.raises(SystemExit):
            rs.main(["--out", "unused", "--policies", f"lru,{name}"])
        assert f"argument --policies: '{name}' cannot be timed here" in capsys.readouterr().err
