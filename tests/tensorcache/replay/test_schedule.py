"""The event schedule: what a replayed policy hears and when (news at the child's finish, as a live search)."""
from evolution_sim import simulate
from tensorcache.events import ClockMoved, EvaluationDone, ModelDescribed, Mutated, PopulationChanged
from tensorcache.replay import Workload, build_schedule


def test_news_of_a_finished_child_come_after_its_insert():
    records = simulate(n=40, population=8, sample=3, seed=11)
    work = Workload(records)
    steps = work.steps(8, 3)
    assert len(steps) == len(work.events) == 80
    finished = []
    for i, step in enumerate(steps):
        e = step.model.evaluation
        assert step.before[0] == ClockMoved(work.clock[i], work.clock[i + 1])
        if not step.insert:
            assert step.before == (step.before[0],) and step.after == ()
            continue
        finished.append((e.model_id, e.score))
        assert step.before[1] == ModelDescribed(e.model_id, e.arch, "prefix", len(e.keys), e.score)
        kinds = [type(ev) for ev in step.after]
        if e.mutation_pos is None:
            assert kinds == [EvaluationDone, PopulationChanged]
        else:
            assert kinds == [EvaluationDone, Mutated, PopulationChanged] and step.after[1].position == e.mutation_pos
        assert step.after[-1] == PopulationChanged(tuple(finished[-8:]), 8, 3)  # the last P, oldest first
    assert any(step.insert and step.model.evaluation.mutation_pos is not None for step in steps)


def test_inflight_children_are_described_at_their_lookup():
    work = Workload(simulate(n=20, seed=12))
    plain, inflight = work.steps(8, 3), work.steps(8, 3, inflight=True)
    assert work.steps(8, 3) is plain  # made once per setting
    for a, b in zip(plain, inflight):
        e = a.model.evaluation
        if a.insert:
            assert a == b
        else:
            assert b.before == a.before + (ModelDescribed(e.model_id, e.arch, "prefix", len(e.keys), None),)


def test_without_news_a_step_carries_no_policy_event():
    work = Workload(simulate(n=20, seed=13))
    steps = build_schedule(work, news=False)
    assert [s.insert for s in steps] == [ev.insert for ev in work.events]
    assert all(s.before == s.after == () for s in steps)
