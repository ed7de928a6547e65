"""Candidates in executor workers: what a worker receives once (:class:`WorkerSpec`), the task
that evaluates one candidate with the worker's cached evaluator (:func:`worker_evaluate`), and the
drop objective handed to pymoo.

A candidate is a tuple of integers (the rounded decision vector); the method's Problem
(wsq.methods) says what it means and evaluates it on one working copy. The same evaluator runs in
the main process (sequential search) and inside workers, where it is built once per worker (per
thread) from the method's picklable worker factory and cached under the search's token.
"""

from __future__ import annotations

import math
import pickle
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from wsq.methods.base import Record

# Largest |drop| handed to pymoo: a non-finite metric becomes this (worst) drop, so that sorting and
# crowding distances stay finite; the result still reports the metric as given (NaN/inf).
DROP_CAP = 1e30

# ----------------------------------------------------------------------------- worker side


@dataclass
class WorkerSpec:
    """Everything a worker needs to evaluate candidates; shipped once per worker.

    factory: the method's picklable worker factory (``build()`` -> an evaluator of keys).
    threads: torch intra-op threads the worker sets when it builds its evaluator; None: 1 in
    process workers, unchanged in thread workers (the setting is process-wide).
    """

    token: str
    factory: object
    threads: int | None = None

    def build(self, *, private: bool) -> Callable[[tuple[int, ...]], Record]:
        """The worker's evaluator; ``private=True`` when the factory belongs to this worker alone
        (a process worker that unpickled it)."""
        threads = self.threads
        if threads is None and private:
            # Process workers default to one thread each: the pool parallelises across processes,
            # and OpenMP's thread team does not survive fork (a forked child that enters a
            # parallel region of the parent's runtime deadlocks; with one thread it never does).
            threads = 1
        if threads is not None:
            torch.set_num_threads(threads)
        return self.factory.build()


def dumps_spec(spec: WorkerSpec) -> bytes:
    """Serialise a spec once for inter-process shipping (cloudpickle when installed, so closures
    and lambdas work as evaluate; this never touches a file)."""
    try:
        import cloudpickle
    except ImportError:  # pragma: no cover - cloudpickle comes with dask
        return pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
    return cloudpickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)


NEED_SPEC = "wsq-need-spec"
_LOCAL = threading.local()


def worker_evaluate(token: str, key: tuple[int, ...], payload=None):
    """Executor task: evaluate one candidate with this worker's cached evaluator.

    ``payload`` (a WorkerSpec, or its bytes) is sent only to workers that may lack the evaluator;
    without one and without a cached evaluator for `token`, returns NEED_SPEC and the driver resends
    with the payload. Returns (Record, loaded) with loaded=True when this call built the evaluator.
    One evaluator per thread: threads must not share a working copy. Only the latest token is kept,
    so a long-lived worker pool holds one model copy at most.
    """
    slot = getattr(_LOCAL, "slot", None)
    loaded = False
    if slot is None or slot[0] != token:
        if payload is None:
            return NEED_SPEC
        _LOCAL.slot = None  # drop the previous search's copy before building the next
        if isinstance(payload, bytes):
            spec = pickle.loads(payload)
            ev = spec.build(private=True)
        else:
            ev = payload.build(private=False)
        slot = (token, ev)
        _LOCAL.slot = slot
        loaded = True
    return slot[1](key), loaded


def finite_or_worst(metric: float, baseline: float) -> float:
    """The drop objective handed to pymoo: baseline - metric, capped; NaN metric -> worst."""
    if math.isnan(metric):
        return DROP_CAP
    return max(-DROP_CAP, min(DROP_CAP, baseline - metric))
