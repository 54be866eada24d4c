"""Tiny Ray Tune trainables over mnist-small, warm-started by tensorcache (imported by the Ray Tune tests).

``mlp_trainable``: an MLP whose hidden width is a config value (what PBT mutates); every report carries
the warm start's fields and digests of each tensor right after the start (``init``) and at the put
(``final``), kept by ``log``. ``nas_trainable``: the attn space's model of the config's architecture,
one put at the end.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from ray import tune
from torch import nn

import tiny_job as tiny
from tensorcache.integrations.ray_tune import TuneCache

STEPS = 3


def mlp(width: int, seed: int) -> nn.Module:
    """784 -> 32 -> width -> 10: a width change keeps the first layer's shapes."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, width), nn.ReLU(), nn.Linear(width, 10))


def mlp_trainable(config: dict[str, Any], helper: TuneCache) -> None:
    """PBT's trainable: resume through the cache, report a pointer checkpoint every step."""
    model = mlp(int(config["width"]), seed=hash(tune.get_context().get_trial_id()) % 2**31)
    trial = helper.start(model, config)
    init = tiny.digests(model)
    for step in range(int(trial.state.get("step", 0)), STEPS):
        acc = tiny.train_steps(model, float(config["lr"]), step * 3)
        checkpoint = trial.checkpoint(model, score=acc, step=step + 1)
        metrics = {"acc": acc, "step": step + 1, "init": init, "final": tiny.digests(model),
                   "width": int(config["width"]), **trial.metrics()}
        log(config, metrics)
        tune.report(metrics, checkpoint=checkpoint)
        init = "-"   # only the first report of a run carries the start's digests


def log(config: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Keep every report in the config's ``log`` folder (Tune rewrites a restored trial's result files)."""
    with open(Path(config["log"]) / f"{metrics['tc_last']}.json", "w") as f:
        json.dump(metrics, f)


def reports(folder: Path) -> list[dict[str, Any]]:
    """The reports ``log`` kept."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def nas_trainable(config: dict[str, Any], helper: TuneCache) -> None:
    """An evolution searcher's trainable: warm-start from the recorded parent, train, put once."""
    arch = helper.arch(config)
    model = tiny.build(arch, seed=int(config["tc_id"].rsplit("-", 1)[-1]))
    trial = helper.start(model, config)
    init = tiny.digests(model)
    acc = tiny.fit(model)
    trial.put(model, score=acc)
    tune.report({"acc": acc, "init": init, "final": tiny.digests(model), **trial.metrics()})
