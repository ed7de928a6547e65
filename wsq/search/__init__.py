"""Search: NSGA-II over a method's settings. run (wsq.search, the entry point; the method object
owns the space and evaluates candidates) -> problem (what executor workers receive) -> executors (where candidates run: in-process, processes,
dask) -> driver (the pymoo loop) -> checkpoint (resume) -> result (front, SearchResult)."""

from wsq.search.arguments import Sweep, Workers
from wsq.search.result import SearchResult, Solution, pareto_front
from wsq.search.run import search

__all__ = ["search", "SearchResult", "Solution", "pareto_front", "Sweep", "Workers"]
