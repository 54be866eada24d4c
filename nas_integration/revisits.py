"""Which children of a search repeat an architecture issued before, and the earlier score to reuse for one."""
from __future__ import annotations

from tensorcache.evolution import Candidate
from tensorcache.trace import TraceRecord

__all__ = ["Revisits"]


class Revisits:
    """Which children repeat an architecture issued before, and (``reuse``) the earlier score to return
    for one instead of training it again; every trace record says whether it was a revisit."""

    def __init__(self, reuse: bool) -> None:
        self.reuse = reuse
        self.issued: set[tuple[int, ...]] = set()
        self.again: dict[int, bool] = {}  # candidate index -> revisit
        self.scores: dict[tuple[int, ...], tuple[float, float | None]] = {}  # arch -> (score, test) when finished

    def issue(self, cand: Candidate) -> None:
        self.again[cand.index] = cand.arch in self.issued
        self.issued.add(cand.arch)

    def finished(self, cand: Candidate, score: float, test: float | None) -> None:
        self.scores.setdefault(cand.arch, (score, test))

    def reused(self, cand: Candidate, now: float) -> TraceRecord | None:
        """The record of ``cand`` answered with the earlier score (no training), or None to train it."""
        if not self.reuse or cand.arch not in self.scores:
            return None
        score, test = self.scores[cand.arch]
        return TraceRecord(model_id=cand.model_id, parent_id=cand.parent_id, donor_id=None, worker="reused",
                           t_start=now, t_end=now, arch=list(cand.arch), mutation_pos=cand.mutation_pos,
                           score=score, test=test, layers_served=0, bytes_served=0, tier=None, cache_s=0.0,
                           train_s=0.0, layer_bytes=[], layer_keys=[], layer_deps=[], revisit=True, epochs=0.0,
                           extra={"reused": True})
