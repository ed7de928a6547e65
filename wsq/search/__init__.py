"""Search: NSGA-II over the method's knobs. run (wsq.search, the entry point) -> problem (the search
space, one candidate's evaluation) -> executors (where candidates run: in-process, processes,
dask) -> driver (the pymoo loop) -> checkpoint (resume) -> result (front, SearchResult)."""

from wsq.search.result import SearchResult, Solution, pareto_front
from wsq.search.run import search

__all__ = ["search", "SearchResult", "Solution", "pareto_front"]
