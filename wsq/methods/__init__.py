"""Methods as objects (torchao's config objects are the model): each method is a frozen dataclass
in a module of its own that owns its variables, its search space and its candidate evaluation;
wsq.compress, wsq.tune and wsq.search take one (apply.py) and never branch on which."""

from wsq.methods.apply import compress, tune
from wsq.methods.base import Method, Pooling, Problem, Record
from wsq.methods.grid import Grid
from wsq.methods.uniform import Uniform

__all__ = ["Method", "Problem", "Record", "Pooling", "Uniform", "Grid", "compress", "tune"]
