"""The embedded default of ``wsq compress``: a small CNN on scikit-learn's bundled digits.

Offline and quick: the 1,797 8x8 images ship with scikit-learn; the CNN (151k parameters: two
conv + BatchNorm blocks and two linear layers) trains in a few seconds on two CPU cores and is
cached as a safetensors file (no pickle) in the user's cache directory
(``$XDG_CACHE_HOME/wsq`` or ``~/.cache/wsq``). The train/validation/test split (60/20/20) is fixed
by the seed; the training is seeded and single-threaded, so a run is reproducible.
"""

from __future__ import annotations

import hashlib
import os

import torch
from torch import nn

from wsq.examples.cache import cache_dir, cached

__all__ = ["DigitsCNN", "splits", "train", "load_or_train", "cache_dir"]

_VERSION = 1  # bump when the architecture, split or training recipe changes (new cache file)
_EPOCHS = 12


class DigitsCNN(nn.Module):
    """(batch, 1, 8, 8) images in [0, 1] -> (batch, 10) logits; 151,306 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def splits(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"train", "val", "test"} -> (x float32 (n, 1, 8, 8) in [0, 1], y int64 (n,)).

    A permutation drawn from ``seed`` splits the 1,797 images 60/20/20 (1077/360/360).
    """
    try:
        from sklearn.datasets import load_digits
    except ModuleNotFoundError as e:
        from wsq.errors import missing_extra

        raise missing_extra("demo", "scikit-learn", "the digits example") from e

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    n = len(y)
    a, b = int(0.6 * n), int(0.8 * n)
    return {"train": (x[:a], y[:a]), "val": (x[a:b], y[a:b]), "test": (x[b:], y[b:])}


def train(seed: int = 0, data: dict | None = None) -> DigitsCNN:
    """A freshly trained DigitsCNN (Adam, 12 epochs of batches of 64; eval mode), deterministic."""
    import torch.nn.functional as F

    data = splits(seed) if data is None else data
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # reductions in another thread count would change the last bits
    try:
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DigitsCNN()
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        x, y = data["train"]
        model.train()
        for _ in range(_EPOCHS):
            perm = torch.randperm(len(y), generator=g)
            for i in range(0, len(y), 64):
                b = perm[i : i + 64]
                opt.zero_grad()
                F.cross_entropy(model(x[b]), y[b]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def _cache_path(seed: int, directory: str) -> str:
    import torch as _t

    tag = hashlib.sha256(f"v{_VERSION}:seed{seed}:torch{_t.__version__}".encode()).hexdigest()[:12]
    return os.path.join(directory, f"digits_cnn_s{seed}_{tag}.safetensors")


def load_or_train(seed: int = 0, *, directory: str | None = None) -> tuple[DigitsCNN, str | None]:
    """The trained model for `seed`, from the cache when present, else trained and cached.

    Returns (model in eval mode, cache path or None when the cache directory is not writable).
    A cache file that does not load cleanly (truncated, other keys) is retrained and replaced.
    """
    directory = cache_dir() if directory is None else directory
    return cached(_cache_path(seed, directory), DigitsCNN, lambda: train(seed))
