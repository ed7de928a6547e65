"""A LLaMA-shaped causal language model trained here on the Python standard library's own source.

Every Python installation has the text offline: a fixed list of standard-library modules (each
read as ``<name>.py`` or ``<name>/__init__.py`` under ``sysconfig``'s stdlib path), split BY FILE
into training files, decision files (``val``: what a tune or merge decides on) and held-out files
(``test``: only reported). The model is transformers' ``LlamaForCausalLM`` over bytes (vocabulary
256, no tokenizer); the default :class:`Recipe` has 10.8M parameters and trains in a few minutes on
two CPU cores. Training is seeded and runs at a fixed thread count, so it is deterministic on a
machine; the weights are cached as a safetensors file in ``wsq.examples.cache.cache_dir()``,
keyed by a hash of the recipe, the corpus bytes and the torch/transformers versions (a stdlib of
another Python version is another corpus, hence another cache file).

The metric is perplexity per byte on fixed windows of a split; ``spec()`` returns evaluates of
``-log(perplexity)`` (the mean cross-entropy in nats per byte, negated: higher is better), so a
tolerance of 0.01 allows about 1% more perplexity.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import sysconfig
from dataclasses import dataclass

import torch

__all__ = [
    "Recipe",
    "TINY",
    "FILES",
    "corpus",
    "windows",
    "build",
    "train",
    "load_or_train",
    "log_perplexity",
    "perplexity",
    "spec",
]

_VERSION = 1  # bump when the corpus, split, architecture or training loop changes

# Standard-library modules present (as a module or a package) in Python 3.10 to 3.13, by split.
FILES = {
    "train": (
        "argparse", "ast", "calendar", "codecs", "configparser", "contextlib", "dataclasses",
        "datetime", "difflib", "enum", "fractions", "functools", "inspect", "ipaddress",
        "locale", "optparse", "pickle", "platform", "random", "shutil", "socket", "statistics",
        "subprocess", "tarfile", "tempfile", "textwrap", "threading", "tokenize", "traceback",
        "typing",
    ),
    "val": ("heapq", "shlex", "string", "bisect", "queue"),
    "test": ("csv", "copy", "glob", "fnmatch", "numbers"),
}  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    """Architecture, training and evaluation settings; every field is part of the cache key.

    hidden/layers/heads/intermediate: the LlamaConfig (head size hidden/heads, vocabulary 256);
    seq: bytes per training and evaluation window; batch, steps, lr: AdamW with a linear warm-up
    over the first tenth of the steps then cosine decay to a tenth of lr; seed: initialisation and
    window sampling; threads: torch threads while training (fixed, so results repeat on a machine);
    eval_windows: windows per evaluation split (evenly spaced over the split's bytes).
    """

    hidden: int = 384
    layers: int = 6
    heads: int = 6
    intermediate: int = 1024
    seq: int = 128
    batch: int = 16
    steps: int = 150
    lr: float = 3e-3
    seed: int = 0
    threads: int = 2
    eval_windows: int = 64

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            ok = isinstance(v, float) and v > 0 if f.name == "lr" else isinstance(v, int)
            if isinstance(v, bool) or not ok or (f.name != "seed" and v <= 0):
                raise ValueError(f"Recipe.{f.name} must be a positive {f.type}, got {v!r}")
        if self.hidden % self.heads:
            raise ValueError(
                f"Recipe.hidden ({self.hidden}) must be a multiple of Recipe.heads ({self.heads})"
            )


# A configuration small enough for the test suite (seconds).
TINY = Recipe(
    hidden=32, layers=2, heads=2, intermediate=64, seq=32, batch=8, steps=20, eval_windows=8
)


def _require_transformers(what: str) -> None:
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        from wsq.errors import missing_extra

        raise missing_extra("hf", "transformers", what)


def _source(name: str, stdlib: str) -> str:
    for rel in (name + ".py", os.path.join(name, "__init__.py")):
        path = os.path.join(stdlib, rel)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"standard-library module {name!r} has no source under {stdlib!r} (this Python "
        "installation ships without .py files?)"
    )


def corpus(stdlib: str | None = None) -> dict[str, bytes]:
    """{"train", "val", "test"} -> the bytes of that split's files (:data:`FILES`), concatenated
    in the listed order, each file followed by a newline. `stdlib` defaults to this Python's."""
    stdlib = sysconfig.get_paths()["stdlib"] if stdlib is None else stdlib
    out = {}
    for split, names in FILES.items():
        parts = []
        for name in names:
            with open(_source(name, stdlib), "rb") as f:
                parts.append(f.read() + b"\n")
        out[split] = b"".join(parts)
    return out


def windows(data: bytes, n: int, seq: int) -> torch.Tensor:
    """int64 (n, seq + 1): `n` windows of ``seq + 1`` bytes evenly spaced over `data`."""
    if len(data) < seq + 1:
        raise ValueError(f"data has {len(data)} bytes, fewer than one window of {seq + 1}")
    t = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    starts = torch.linspace(0, len(data) - seq - 1, n).round().long()
    return torch.stack([t[s : s + seq + 1] for s in starts.tolist()]).long()


def build(recipe: Recipe = Recipe()):
    """A freshly initialised LlamaForCausalLM for `recipe` (seeded by recipe.seed)."""
    _require_transformers("wsq.examples.pylm")
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=256, hidden_size=recipe.hidden, intermediate_size=recipe.intermediate,
        num_hidden_layers=recipe.layers, num_attention_heads=recipe.heads,
        num_key_value_heads=recipe.heads, max_position_embeddings=recipe.seq,
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        return transformers.LlamaForCausalLM(cfg)


def _loss(model, w: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=w[:, :-1]).logits
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), w[:, 1:].reshape(-1)
    )


def train(recipe: Recipe = Recipe(), data: dict[str, bytes] | None = None):
    """Train :func:`build`'s model on the training files; returns it in eval mode."""
    data = corpus() if data is None else data
    model = build(recipe)
    src = torch.frombuffer(bytearray(data["train"]), dtype=torch.uint8)
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        g = torch.Generator().manual_seed(recipe.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.95))
        warm = max(1, recipe.steps // 10)
        model.train()
        for step in range(recipe.steps):
            if step < warm:
                f = (step + 1) / warm
            else:
                f = 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warm) / (recipe.steps - warm)))
            for group in opt.param_groups:
                group["lr"] = recipe.lr * f
            starts = torch.randint(0, src.numel() - recipe.seq - 1, (recipe.batch,), generator=g)
            w = torch.stack([src[s : s + recipe.seq + 1] for s in starts.tolist()]).long()
            opt.zero_grad(set_to_none=True)
            _loss(model, w).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def log_perplexity(model, w: torch.Tensor, *, batch: int = 16) -> float:
    """Mean cross-entropy in nats per byte of `model` on windows `w` (:func:`windows`)."""
    total = 0.0
    with torch.no_grad():
        for i in range(0, w.shape[0], batch):
            chunk = w[i : i + batch]
            total += float(_loss(model, chunk)) * chunk.shape[0]
    return total / w.shape[0]


def perplexity(model, w: torch.Tensor) -> float:
    """Perplexity per byte: exp(:func:`log_perplexity`)."""
    return math.exp(log_perplexity(model, w))


def _cache_path(recipe: Recipe, data: dict[str, bytes], directory: str) -> str:
    import transformers

    h = hashlib.sha256(f"v{_VERSION}:{dataclasses.astuple(recipe)}".encode())
    h.update(f":torch{torch.__version__}:transformers{transformers.__version__}".encode())
    for split in ("train", "val", "test"):
        h.update(hashlib.sha256(data[split]).digest())
    return os.path.join(directory, f"pylm_{h.hexdigest()[:16]}.safetensors")


def load_or_train(recipe: Recipe = Recipe(), *, directory: str | None = None):
    """(model in eval mode, cache path or None when the cache is not writable): from the cache
    when a file for this recipe, corpus and torch/transformers versions exists, else trained and
    cached. A cache file that does not load cleanly is retrained and replaced."""
    from wsq.examples.cache import cache_dir, cached

    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a wsq.examples.pylm.Recipe, got {type(recipe).__name__}")
    data = corpus()
    directory = cache_dir() if directory is None else directory
    path = _cache_path(recipe, data, directory)
    return cached(path, lambda: build(recipe), lambda: train(recipe, data))


def spec(recipe: Recipe = Recipe(), *, directory: str | None = None):
    """(model, evaluate on the decision files, evaluate on the held-out files): each evaluate is
    ``-log(perplexity per byte)`` on ``recipe.eval_windows`` windows of its split. The model comes
    from :func:`load_or_train` (`directory`: its cache directory)."""
    model, _ = load_or_train(recipe, directory=directory)
    data = corpus()
    val = windows(data["val"], recipe.eval_windows, recipe.seq)
    test = windows(data["test"], recipe.eval_windows, recipe.seq)

    def evaluate(m) -> float:
        return -log_perplexity(m, val)

    def held_out(m) -> float:
        return -log_perplexity(m, test)

    return model, evaluate, held_out
