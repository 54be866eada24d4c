"""Training evaluator: build the child, warm-start it from the cache, train it, score it, put it back.

The last ``val_fraction`` of the training set is held out for validation (the search score, in percent);
test accuracy is measured too and reported only for the record. Each child's initialisation and batch
order come from ``seed`` and its index, so a serial search is reproducible; a scratch job (see
``Candidate``) with ``scratch_seed`` k > 0 draws both from another seed.
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from tensorcache.evolution import Candidate
from tensorcache.trace import TraceRecord
from tensorcache.transfer import TransferReport

from ..data import SHIPPED, dataset_name, load_dataset, locate
from ..spaces import get_space
from . import Evaluator

if TYPE_CHECKING:
    from tensorcache import TensorCache


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when present, else cpu; anything else as torch spells it ("cpu", "cuda:1").

    ValueError names a device torch does not know or a CUDA device this machine does not have.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device {device!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device!r}: CUDA is not available on this machine (torch "
                             f"{torch.__version__}); use --device cpu or auto")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device {device!r}: this machine has {count} CUDA device(s), cuda:0 to "
                             f"cuda:{count - 1}")
    return resolved


class TrainEvaluator(Evaluator):
    """Real torch training warm-started from the cache's best donor (see module doc)."""

    name = "train"

    def __init__(self, data_dir: str | os.PathLike | None = None, space: str = "attn", dataset: str = "mnist-small",
                 epochs: int = 1, batch_size: int = 128, lr: float = 1e-3, amp: bool = False,
                 train_subset: int | None = None, device: str = "auto", transfer: str = "prefix",
                 namespace: str = "attn", val_fraction: float = 0.1, seed: int = 0,
                 threads: int | None = None) -> None:
        if epochs < 1:
            raise ValueError(f"train: epochs must be >= 1, got {epochs}")
        if batch_size < 1:
            raise ValueError(f"train: batch size must be >= 1, got {batch_size}")
        if lr <= 0:
            raise ValueError(f"train: learning rate must be positive, got {lr}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"train: validation fraction must be in (0, 1), got {val_fraction}")
        if train_subset is not None and train_subset < 2:
            raise ValueError(f"train: train subset must be >= 2 examples, got {train_subset}")
        super().__init__(space, dataset_name(dataset), epochs, transfer, namespace, seed)
        self.data_dir = None if data_dir is None else os.fspath(data_dir)
        self.batch_size = batch_size
        self.lr = lr
        self.amp = amp
        self.train_subset = train_subset
        self.device = device
        self.val_fraction = val_fraction
        self.threads = threads

    def check(self) -> None:
        """Check the space and device, then find (or download) the dataset and pin ``data_dir`` to it."""
        get_space(self.space_name)
        resolve_device(self.device)
        path = locate(self.dataset, self.data_dir)
        if self.dataset not in SHIPPED:
            self.data_dir = os.fspath(path)

    def setup(self) -> None:
        if getattr(self, "_train", None) is not None:
            return
        if self.threads:
            torch.set_num_threads(self.threads)
        self._device = resolve_device(self.device)
        x_train, y_train, x_test, y_test = (torch.as_tensor(a) for a in
                                            load_dataset(self.dataset, self.data_dir, subset=self.train_subset))
        x_train, x_test = _as_images(x_train), _as_images(x_test)
        n_val = max(1, int(len(x_train) * self.val_fraction))
        if n_val >= len(x_train):
            raise ValueError(f"train: {len(x_train)} training examples leave none to train on after validation")
        self.num_classes = int(max(y_train.max(), y_test.max())) + 1
        self.input_shape = tuple(x_train.shape[1:])
        dev = self._device
        self._train = (x_train[:-n_val].to(dev), y_train[:-n_val].long().to(dev))
        self._val = (x_train[-n_val:].to(dev), y_train[-n_val:].long().to(dev))
        self._test = (x_test.to(dev), y_test.long().to(dev))

    def prepare(self, candidate: Candidate, cache: TensorCache | None) -> tuple[nn.Module, TransferReport, float]:
        """A fresh model of the child, warm-started from the cache; returns (model, report, seconds in cache)."""
        self.setup()
        cache = self.cache_for(candidate, cache)
        torch.manual_seed(self._seed(candidate))
        model = self.space.build(candidate.arch, self.num_classes, self.input_shape).to(self._device)
        if cache is None:
            return model, TransferReport(), 0.0
        t0 = time.perf_counter()
        report = cache.warm_start(model, candidate.arch, parent=candidate.parent_id,
                                  layer_map=self.layer_map(candidate.arch))
        return model, report, time.perf_counter() - t0

    def _seed(self, candidate: Candidate) -> int:
        """The seed of a candidate's initialisation and batch order."""
        return (self.seed + 104_729 * candidate.scratch_seed) * 1_000_003 + candidate.index

    def evaluate(self, candidate: Candidate, cache: TensorCache | None) -> TraceRecord:
        t_start = time.time()
        cache = self.cache_for(candidate, cache)
        model, report, cache_s = self.prepare(candidate, cache)
        t0 = time.perf_counter()
        self._fit(model, self._seed(candidate))
        score = _accuracy(model, *self._val, self.batch_size)
        train_s = time.perf_counter() - t0
        test = _accuracy(model, *self._test, self.batch_size)
        lmap = self.layer_map(candidate.arch)
        stored = None
        if cache is not None:
            t0 = time.perf_counter()
            stored = cache.put(candidate.model_id, candidate.arch, model.state_dict(), score=score,
                               parent=candidate.parent_id, layer_map=lmap)
            cache_s += time.perf_counter() - t0
        layer_bytes = self.space.layer_nbytes(candidate.arch, self.transfer, self.num_classes, self.input_shape)
        return self.record(
            candidate, lmap, layer_bytes, stored, score=score, test=test, train_s=train_s, cache_s=cache_s, donor_id=report.donor,
            layers_served=report.layers, bytes_served=report.nbytes, tier=report.tier,
            t_start=t_start, t_end=time.time(),
            epochs=self.epochs, extra={"device": str(self._device), "skipped": len(report.skipped)})

    def _fit(self, model: nn.Module, seed: int) -> None:
        x, y = self._train
        cuda = self._device.type == "cuda"
        amp_dtype = torch.float16 if cuda else torch.bfloat16
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp and cuda)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        loss_fn = nn.CrossEntropyLoss()
        order = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(self.epochs):
            for batch in torch.randperm(len(x), generator=order).split(self.batch_size):
                batch = batch.to(self._device)
                with torch.autocast(self._device.type, dtype=amp_dtype, enabled=self.amp):
                    loss = loss_fn(model(x[batch]), y[batch])
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
        if cuda:
            torch.cuda.synchronize(self._device)

    def describe(self) -> dict[str, Any]:
        return {"evaluator": self.name, "dataset": self.dataset, "data_dir": self.data_dir, "epochs": self.epochs,
                "batch_size": self.batch_size, "lr": self.lr, "amp": self.amp, "train_subset": self.train_subset,
                "device": self.device, "val_fraction": self.val_fraction}


def _as_images(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) float inputs from the loaders' (N, H, W) or (N, H, W, C) arrays; uint8 scaled to [0, 1]."""
    x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
    if x.ndim == 3:
        return x.unsqueeze(1)
    if x.ndim == 4:
        return x.permute(0, 3, 1, 2).contiguous()
    raise ValueError(f"train: expected images shaped (N, H, W) or (N, H, W, C), got {tuple(x.shape)}")


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Top-1 accuracy in percent."""
    model.eval()
    step = max(batch_size, 256)
    correct = sum(int((model(x[i:i + step]).argmax(1) == y[i:i + step]).sum()) for i in range(0, len(x), step))
    return 100.0 * correct / len(x)
