"""wsq: structure-agnostic weight-sharing compression for PyTorch models.

Every weight of every layer goes into one pool, the pool's range is split into k equal bins in O(N),
and each weight is replaced by its bin's mean: one codebook for the whole model, each weight a small
index. A method is an object (wsq.Uniform: k equal bins; wsq.Grid: per-tensor steps on one shared
grid) that wsq.compress applies, wsq.tune tunes to a tolerance and wsq.search explores;
wsq.paper_protocol runs the paper's random UB -> search -> merge -> code. The package map and the
data flow are in docs/architecture.md. Importing wsq is lean: it loads no compiled module,
initialises no CUDA and reads no files.
"""

from __future__ import annotations

from wsq import entropy, kernels, metrics, nn  # entropy imports no native module until a call
from wsq._info import __version__, info
from wsq.compressed import Compressed
from wsq.core.binning import Binning, uniform_bins
from wsq.core.equalize import correct_bias, equalize
from wsq.core.equalized import tune_equalized
from wsq.core.merge import merge
from wsq.core.tables import lloyd_tables
from wsq.errors import FormatError
from wsq.from_checkpoint import compress_checkpoint, empty_parameters
from wsq.io import load, load_state_dict, save
from wsq.methods import Grid, Method, Pooling, Uniform, compress, tune
from wsq.protocol import Protocol, paper_protocol
from wsq.search import SearchResult, Sweep, Workers, search

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
    "Method",
    "Uniform",
    "Grid",
    "Pooling",
    "Sweep",
    "Workers",
    "compress_checkpoint",
    "empty_parameters",
    "Compressed",
    "nn",
    "entropy",
    "merge",
    "metrics",
    "kernels",
    "search",
    "paper_protocol",
    "Protocol",
    "SearchResult",
    "tune",
    "lloyd_tables",
    "equalize",
    "correct_bias",
    "tune_equalized",
]


def __getattr__(name: str):
    # wsq.reference (the oracle, for tests and checks) loads on first access, so `import wsq` does
    # not pull it in; product code never goes through here (tests/test_architecture.py).
    if name == "reference":
        import importlib

        return importlib.import_module("wsq.reference")
    raise AttributeError(f"module 'wsq' has no attribute {name!r}")
