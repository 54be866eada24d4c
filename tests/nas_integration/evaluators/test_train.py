"""Training evaluator: a child really starts from its donor's trained tensors, then trains and is put back."""
import random

import pytest
import torch

from nas_integration.evaluators.train import TrainEvaluator
from nas_integration.spaces import get_space
from tensorcache import TensorCache
from tensorcache.evolution import Candidate

@pytest.fixture(scope="module")
def evaluator():
    ev = TrainEvaluator(space="attn", dataset="mnist-small", train_subset=600, batch_size=64, device="cpu",
                        namespace="test-train", seed=3)
    ev.setup()
    return ev


def test_warm_start_copies_the_donors_trained_tensors(evaluator, tmp_path):
    space = get_space("attn")
    cache = TensorCache(memory="256MB", disk=tmp_path / "c.lmdb", namespace="test-train")
    parent_arch = space.sample(random.Random(0))
    parent = Candidate(0, "parent", parent_arch)
    result = evaluator.evaluate(parent, cache)
    assert 0 <= result.score <= 100 and result.test is not None and result.layers_served == 0
    # a child mutated at the last position shares every earlier layer with its parent
    child_arch = parent_arch[:-1] + ((parent_arch[-1] + 1) % space.choices[-1],)
    child = Candidate(1, "child", child_arch, parent_id="parent", mutation_pos=len(child_arch) - 1)
    warm, report, _ = evaluator.prepare(child, cache)
    cold, _, _ = evaluator.prepare(child, None)  # same seed, same initialisation, no transfer
    assert report.donor == "parent" and report.layers > 0 and report.nbytes > 0
    donor = cache.lookup(parent_arch, parent="parent", layer_map=space.layer_map(parent_arch))
    donor_tensors = {n: a for layer in donor.layers for n, a in layer.items()}
    served = [p for spec in space.layer_map(child_arch).layers[:report.layers] for p in spec.params]
    warm_state, cold_state = warm.state_dict(), cold.state_dict()
    for name in served:
        assert torch.equal(warm_state[name], donor_tensors[name])  # torch was put: torch is served
        assert not torch.equal(warm_state[name], cold_state[name])  # trained values, not a fresh init
    untouched = set(warm_state) - set(served)
    assert untouched and all(torch.equal(warm_state[n], cold_state[n]) for n in untouched)
    child_result = evaluator.evaluate(child, cache)
    assert child_result.donor_id == "parent" and child_result.bytes_served == report.nbytes
    assert child_result.bytes_served == sum(child_result.layer_bytes[:child_result.layers_served])
    assert child_result.cache_s > 0 and child_result.train_s > 0 and child_result.tier == "memory"
    cache.close()


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="takes no data directory"):
        TrainEvaluator(tmp_path / "mnist").check()  # the shipped set is read from the package only
    with pytest.raises(ValueError, match="unknown dataset 'svhn'; expected one of mnist-small, mnist"):
        TrainEvaluator(dataset="svhn")
    with pytest.raises(ValueError, match="epochs"):
        TrainEvaluator(epochs=0)
    with pytest.raises(ValueError, match="'gpu' is not a torch device"):
        TrainEvaluator(device="gpu").check()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="'cuda': CUDA is not available on this machine"):
        TrainEvaluator(device="cuda").check()


def test_a_scratch_job_neither_warm_starts_nor_puts_and_seed_one_starts_elsewhere(evaluator, tmp_path):
    space = get_space("attn")
    cache = TensorCache(memory="256MB", namespace="test-train")
    arch = space.sample(random.Random(1))
    evaluator.evaluate(Candidate(0, "parent", arch), cache)
    child = Candidate(1, "child", arch, parent_id="parent")
    warm = evaluator.evaluate(child, cache)
    own, other = (evaluator.evaluate(child.scratch(k), cache) for k in (0, 1))
    assert warm.donor_id == "parent" and own.donor_id is None and own.layers_served == 0
    assert cache.stats()["puts"] == 2 and own.model_id == "child-scratch0"  # the parent and the warm child
    cold, _, _ = evaluator.prepare(child, None)
    again, _, _ = evaluator.prepare(child.scratch(0), cache)  # seed 0: the child's own initialisation
    assert all(torch.equal(a, b) for a, b in zip(cold.state_dict().values(), again.state_dict().values()))
    moved, _, _ = evaluator.prepare(child.scratch(1), cache)
    assert not all(torch.equal(a, b) for a, b in zip(cold.state_dict().values(), moved.state_dict().values()))
    assert own.score != other.score or own.test != other.test
    cache.close()
