"""A tiny CNN on scikit-learn's bundled digits, for the wsq.search tests (seconds to train).

Kept importable (module-level classes) so process-pool and Dask workers can unpickle the evaluators.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import torch
from torch import nn


def digits(split: str = "val") -> tuple[torch.Tensor, torch.Tensor]:
    """(x float32 (n, 1, 8, 8) in [0, 1], y int64 (n,)); a fixed shuffled split ("train"/"val")."""
    from sklearn.datasets import load_digits

    d = load_digits()
    perm = np.random.default_rng(0).permutation(len(d.target))
    x = torch.tensor(d.images[perm] / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target[perm], dtype=torch.int64)
    cut = 1300
    return (x[:cut], y[:cut]) if split == "train" else (x[cut:], y[cut:])


def small_cnn() -> nn.Module:
    """~5k parameters: conv 1->8, pool, linear 128->32->10."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


_TRAINED: dict[int, nn.Module] = {}


def trained_cnn(epochs: int = 60) -> nn.Module:
    """small_cnn trained full-batch with Adam (about a second, once per process); eval mode.
    Each call returns a fresh copy."""
    if epochs not in _TRAINED:
        _TRAINED[epochs] = _train(epochs)
    return copy.deepcopy(_TRAINED[epochs])


def _train(epochs: int) -> nn.Module:
    torch.manual_seed(0)
    model = small_cnn()
    x, y = digits("train")
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


class Accuracy:
    """evaluate(model) -> accuracy on the validation split (deterministic, picklable)."""

    def __init__(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> None:
        self.x, self.y = digits("val") if x is None else (x, y)

    def __call__(self, model: nn.Module) -> float:
        return float((model(self.x).argmax(1) == self.y).float().mean())


class Logged:
    """Wraps an evaluate: appends one line to `log` per FINISHED call (any process)."""

    def __init__(self, inner, log: str) -> None:
        self.inner, self.log = inner, log

    def __call__(self, model: nn.Module) -> float:
        v = self.inner(model)
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return v


def count_lines(path: str) -> int:
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for line in f if line.strip())


class ExitOnce:
    """Wraps an evaluate: the first call made after `after` finished calls (counted in `log`)
    kills its process with os._exit, once ever (a marker file makes it one-shot)."""

    def __init__(self, inner, log: str, marker: str, after: int) -> None:
        self.inner, self.log, self.marker, self.after = inner, log, marker, after

    def __call__(self, model: nn.Module) -> float:
        if count_lines(self.log) >= self.after:
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.close(fd)
                os._exit(3)
        v = self.inner(model)
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return v
