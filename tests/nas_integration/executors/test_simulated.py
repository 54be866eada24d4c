"""The simulated executor runs any Evaluator through the interface alone: the default start/finish run
the whole evaluation and take its reported duration as the simulated one; each worker's memory tier is
modelled as an LRU over model ids within its budget."""
import time

from nas_integration.evaluators import Evaluator
from nas_integration.executors import SimulatedExecutor
from nas_integration.executors.simulated import ModelledMemory
from tensorcache.evolution import Candidate


class Timed(Evaluator):
    """Scores a candidate by its first position; each evaluation 'takes' 1 + arch[0] seconds of trace time."""

    name = "timed"

    def __init__(self) -> None:
        super().__init__(space="nb201", dataset="none", epochs=1, transfer="prefix", namespace="timed", seed=0)

    def setup(self) -> None:
        pass

    def evaluate(self, candidate, cache):
        lmap = self.layer_map(candidate.arch)
        t0 = time.time()
        return self.record(candidate, lmap, [1] * len(lmap), None, score=float(candidate.arch[0]), train_s=0.0,
                           cache_s=0.0, t_start=t0, t_end=t0 + 1 + candidate.arch[0], donor_id=None,
                           layers_served=0, bytes_served=0, tier=None)


def test_simulated_workers_finish_in_order_of_the_reported_durations():
    executor = SimulatedExecutor(Timed(), None, workers=2)
    executor.submit(Candidate(0, "slow", (3, 0, 0, 0, 0, 0)))
    executor.submit(Candidate(1, "fast", (0, 0, 0, 0, 0, 0)))
    first, second = executor.next_outcome(), executor.next_outcome()
    assert (first.candidate.model_id, first.worker, first.result.t_end) == ("fast", 1, 1.0)
    assert (second.candidate.model_id, second.worker, second.result.t_end) == ("slow", 0, 4.0)
    assert second.result.worker == 0 and executor.now() == 4.0
    assert len(first.result.layer_keys) == len(first.result.layer_bytes) > 0


def test_a_modelled_memory_is_an_lru_within_its_budget():
    mem = ModelledMemory(capacity=10)
    for model, size in [("a", 4), ("b", 4), ("a", 4), ("c", 4)]:
        mem.touch(model, size)
    assert mem.models() == {"a", "c"} and mem.used == 8
    mem.touch("huge", 11)
    assert "huge" not in mem.models()
