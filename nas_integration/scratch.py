"""From-scratch retrainings a search runs for itself: a control set and re-evaluated leaders.

*Control* (``--control F``): each warm-started child is, with probability F (its own seeded draw, so the
search's path does not change), also trained from scratch twice: with its own initialisation and with
another one. The pairs measure the warm scores' bias and rank agreement, the second seed the noise ceiling
(``tensorcache.analyze.fidelity``). *Re-evaluation* (``--reeval-leaders N``): every N finished children,
the population's leader, if its score came from a warm start, is retrained from scratch and that score
replaces its warm one in the population, so tournaments compare leaders at the same training.

Every scratch training is a job like a child's (it runs on a worker, never touches the cache), costs compute
the summary counts, and is written to ``controls.jsonl`` beside the trace, not to the trace itself.
"""
from __future__ import annotations

import random
from collections import deque
from typing import TYPE_CHECKING, Any

from tensorcache.evolution import Candidate, RegularizedEvolution
from tensorcache.fidelity import describe, fidelity
from tensorcache.trace import TraceRecord, TraceWriter

if TYPE_CHECKING:
    from .resume import SkipWritten

__all__ = ["Scratch"]


class Scratch:
    """Decides, queues and books a search's scratch jobs (see the module doc)."""

    def __init__(self, control: float, reeval_every: int, seed: int,
                 writer: TraceWriter | SkipWritten | None) -> None:
        self.control = control
        self.reeval_every = reeval_every
        self.rng = random.Random(f"control-{seed}")
        self.writer = writer
        self.pending: deque[Candidate] = deque()
        self.purpose: dict[str, str] = {}  # scratch job id -> "control" or "reeval"
        self.warm: dict[str, tuple[Candidate, float]] = {}  # warm-started model id -> (candidate, its score)
        self.rescored: set[str] = set()  # models whose population score is a scratch score now (or queued)
        self.records: list[dict[str, Any]] = []
        self.finished = 0
        self.epochs = self.seconds = 0.0

    def child_done(self, record: TraceRecord, cand: Candidate, evo: RegularizedEvolution) -> None:
        """A child finished: draw it into the control set, and every N children re-evaluate the leader."""
        self.finished += 1
        if record.donor_id is not None and record.score is not None:
            self.warm[cand.model_id] = (cand, record.score)
            if self.control and self.rng.random() < self.control:
                self._queue(cand, "control", 0)
                self._queue(cand, "control", 1)
        if self.reeval_every and self.finished % self.reeval_every == 0:
            leader = evo.leader()
            if leader is not None and leader.model_id in self.warm and leader.model_id not in self.rescored:
                self.rescored.add(leader.model_id)
                self._queue(self.warm[leader.model_id][0], "reeval", 0)

    def _queue(self, cand: Candidate, purpose: str, seed: int) -> None:
        job = cand.scratch(seed, purpose)
        self.purpose[job.model_id] = purpose
        self.pending.append(job)

    def job_done(self, record: TraceRecord, cand: Candidate, evo: RegularizedEvolution) -> None:
        """A scratch job finished: write it down; a leader's re-evaluation replaces its population score."""
        purpose = self.purpose.pop(cand.model_id)
        used = purpose == "reeval" and evo.rescore(cand.scratch_of, record.score)
        record.revisit = True
        record.extra.update(scratch_of=cand.scratch_of, scratch_seed=cand.scratch_seed, purpose=purpose,
                            warm_score=self.warm[cand.scratch_of][1], used=used)
        self.epochs += record.epochs or 0.0
        self.seconds += record.train_s
        self.records.append(record.to_dict())
        if self.writer is not None:
            self.writer.write(record)

    def line(self) -> str | None:
        """The control set's bias and taus in one line (None without ``--control``)."""
        return describe(fidelity(self.records)) if self.control else None

    def summary(self) -> dict[str, Any]:
        """What the summary reports: the control set's figures, the re-evaluations and their compute."""
        return {"control": fidelity(self.records) if self.control else None,
                "reevaluated": sum(r["purpose"] == "reeval" for r in self.records),
                "rescored": sum(bool(r["used"]) for r in self.records),
                "epochs": self.epochs, "train_s": self.seconds}
