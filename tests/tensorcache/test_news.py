"""Evaluation news: one value for what a cache's policies hear about the search, in one order, whether told
at once or collected for a remote worker's next job."""
from tensorcache import TensorCache
from tensorcache.events import EvaluationDone, ModelDescribed, Mutated, PopulationChanged
from tensorcache.news import EvaluationNews
from tensorcache.policies import LRU


class _Heard(LRU):
    """An LRU that also keeps what it heard, in order (one list for every tier's copy)."""

    heard: list = []

    def on_evaluation(self):
        self.heard.append("evaluation")

    def on_mutation(self, position):
        self.heard.append(("mutation", position))

    def on_population(self, members, population_size, sample_size):
        self.heard.append(("population", [m for m, _ in members]))

    def on_model(self, model_id, arch, mode, layers, score):
        self.heard.append(("described", model_id, tuple(arch), layers))


def test_news_tells_the_finished_evaluations_then_the_children_issued_since():
    news = EvaluationNews()
    news.add(None, [("a", 1.0)], 4, 2)
    news.describe(ModelDescribed("c", (1, 2), "prefix", 3, None))
    news.add(2, [("a", 1.0), ("b", 2.0)], 4, 2)
    assert news.evaluations == 2 and news.mutations == [2] and news.population == [("a", 1.0), ("b", 2.0)]
    _Heard.heard = []
    cache = TensorCache(memory="1MB", policy=_Heard)
    news.tell(cache)
    cache.close()
    assert _Heard.heard == ["evaluation", "evaluation", ("mutation", 2), ("population", ["a", "b"]),
                            ("described", "c", (1, 2), 3)]


def test_the_news_of_one_evaluation_is_done_its_mutation_and_the_population():
    assert EvaluationNews.of(1, [("m", 0.5)], 4, 2).events() == [EvaluationDone(), Mutated(1),
                                                                 PopulationChanged((("m", 0.5),), 4, 2)]
    assert EvaluationNews.of(None, None, 4, 2).events() == [EvaluationDone()]


def test_news_extended_by_later_news_is_the_news_of_both_the_later_population_kept():
    news = EvaluationNews.of(1, [("a", 1.0)], 4, 2)
    news.extend(EvaluationNews.of(3, None, 0, 0))
    assert news.events() == [EvaluationDone(), EvaluationDone(), Mutated(1), Mutated(3),
                             PopulationChanged((("a", 1.0),), 4, 2)]
    news.extend(EvaluationNews(population=[("b", 2.0)], population_size=5, sample_size=3))
    assert news.evaluations == 2 and news.events()[-1] == PopulationChanged((("b", 2.0),), 5, 3)
