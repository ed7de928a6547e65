"""wsq: structure-agnostic weight-sharing compression for PyTorch models.

Every weight of every layer goes into one pool, the pool's range is split into k equal bins in O(N),
and each weight is replaced by its bin's mean: one codebook for the whole model, each weight a small
index. Importing wsq is lean: it loads no compiled module, initialises no CUDA and reads no files.
"""

from __future__ import annotations

__version__ = "0.1.0"

from wsq import entropy, grid, metrics, nn  # entropy imports no native module until a call
from wsq._info import info
from wsq.binning import Binning, uniform_bins
from wsq.compress import Compressed, compress
from wsq.errors import FormatError
from wsq.grid import tune
from wsq.io import load, load_state_dict, save
from wsq.merge import merge
from wsq.search import SearchResult, search

__all__ = [
    "__version__",
    "info",
    "uniform_bins",
    "Binning",
    "FormatError",
    "save",
    "load",
    "load_state_dict",
    "compress",
    "Compressed",
    "nn",
    "entropy",
    "merge",
    "metrics",
    "search",
    "SearchResult",
    "grid",
    "tune",
]
