"""replay_speed's method: a replay through the scripted victims makes exactly the real replay's moves."""
from __future__ import annotations

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
