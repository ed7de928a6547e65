"""Where candidates are evaluated: in process, on a concurrent.futures executor, or on Dask.

Every runner has ``run(keys, on_result)``: evaluate each key once, calling ``on_result(i, record)``
as results arrive (in completion order), and return when all are done. Runners on executors ship
the model and evaluate to each worker once (see wsq.search.problem.worker_evaluate), send only
decision vectors per candidate, and retry candidates whose worker died, a bounded number of times.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool

from wsq.search.problem import (
    NEED_SPEC,
    Record,
    WorkerSpec,
    dumps_spec,
    worker_evaluate,
)

OnResult = Callable[[int, Record], None]


class SequentialRunner:
    """Evaluates in the calling process with one evaluator (one working copy)."""

    def __init__(self, evaluator: Callable[[tuple[int, ...]], Record]) -> None:
        self.evaluator = evaluator
        self.n_shipments = 0
        self.n_loads = 0
        self.n_retries = 0

    def run(self, keys: Sequence[tuple[int, ...]], on_result: OnResult) -> None:
        for i, key in enumerate(keys):
            on_result(i, self.evaluator(key))

    def close(self) -> None:
        pass


def _is_dask_client(executor) -> bool:
    mod = type(executor).__module__ or ""
    return mod.startswith("distributed") and hasattr(executor, "scatter")


def _lost_error(key, n: int) -> RuntimeError:
    return RuntimeError(
        f"candidate {key} was lost in {n} worker failures (max_retries exceeded); "
        "does evaluate crash the worker for this candidate?"
    )


class FuturesRunner:
    """Any concurrent.futures.Executor (process pools, thread pools, dask's ClientExecutor, ...).

    The spec reaches a worker only with the first tasks after the pool (re)starts and with resends
    after a worker answered NEED_SPEC, so each worker deserialises it about once. Thread pools get
    the spec object itself (no serialisation; each thread deep-copies the model once); others get
    its bytes, serialised once here. A broken ProcessPoolExecutor (a worker died) is replaced by a
    new one with the same settings, owned and shut down by this runner, and the lost candidates
    are resubmitted; the caller's executor object itself stays broken.
    """

    def __init__(self, executor: cf.Executor, spec: WorkerSpec, *, max_retries: int) -> None:
        self.executor = executor
        self.spec = spec
        self.max_retries = max_retries
        self._owned: list[cf.Executor] = []
        self._threads = isinstance(executor, cf.ThreadPoolExecutor)
        self._payload = spec if self._threads else dumps_spec(spec)
        self._n_workers = int(getattr(executor, "_max_workers", 0) or os.cpu_count() or 1)
        self._sent = 0  # payload-carrying tasks submitted since the pool (re)started
        self.n_shipments = 0  # tasks that carried the spec, over the whole search
        self.n_loads = 0  # evaluators built by workers
        self.n_retries = 0  # candidates resubmitted after a worker failure

    def _submit(self, key, *, with_payload: bool) -> cf.Future:
        if not with_payload and self._sent < self._n_workers:
            with_payload = True  # prime: the first tasks of a fresh pool carry the spec
        if with_payload:
            self._sent += 1
            self.n_shipments += 1
        payload = self._payload if with_payload else None
        try:
            return self.executor.submit(worker_evaluate, self.spec.token, key, payload)
        except BrokenProcessPool as e:  # broke before this submit: fail like its tasks do
            fut: cf.Future = cf.Future()
            fut.set_exception(e)
            return fut

    def _replace_broken(self, err: BaseException) -> None:
        old = self.executor
        if not isinstance(old, cf.ProcessPoolExecutor):
            raise RuntimeError(
                f"the executor {type(old).__name__} broke ({err}) and wsq cannot recreate it"
            ) from err
        new = cf.ProcessPoolExecutor(
            max_workers=old._max_workers,
            mp_context=getattr(old, "_mp_context", None),
            initializer=getattr(old, "_initializer", None),
            initargs=getattr(old, "_initargs", ()),
        )
        if old in self._owned:
            old.shutdown(wait=False, cancel_futures=True)
            self._owned.remove(old)
        self._owned.append(new)
        self.executor = new
        self._sent = 0

    def run(self, keys: Sequence[tuple[int, ...]], on_result: OnResult) -> None:
        lost: Counter[int] = Counter()
        todo = list(range(len(keys)))
        while todo:
            inflight = {self._submit(keys[i], with_payload=False): i for i in todo}
            todo = []
            try:
                broken = self._drain(keys, inflight, lost, todo, on_result)
            except BaseException:
                for fut in inflight:  # e.g. evaluate raised: drop the rest of the batch
                    fut.cancel()
                raise
            if broken is not None:
                self.n_retries += len(todo)
                self._replace_broken(broken)
                todo.sort()

    def _drain(self, keys, inflight: dict, lost: Counter, todo: list, on_result: OnResult):
        """Collect results until nothing is in flight. Candidates lost to a broken pool are
        appended to `todo`; returns the BrokenProcessPool error, or None."""
        broken: BaseException | None = None
        while inflight:
            done, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                i = inflight.pop(fut)
                try:
                    res = fut.result()
                except BrokenProcessPool as e:
                    broken = e
                    lost[i] += 1
                    if lost[i] > self.max_retries:
                        raise _lost_error(keys[i], lost[i]) from e
                    todo.append(i)
                    continue
                if isinstance(res, str) and res == NEED_SPEC:
                    if broken is None:  # this worker lacks the model: send it along
                        inflight[self._submit(keys[i], with_payload=True)] = i
                    else:
                        todo.append(i)
                    continue
                rec, loaded = res
                self.n_loads += int(loaded)
                on_result(i, rec)
        return broken

    def close(self) -> None:
        for ex in self._owned:
            ex.shutdown(wait=True)
        self._owned.clear()


class DaskRunner:
    """A dask.distributed Client: the spec is scattered to every worker once (broadcast) and each
    task refers to it by key. Dask itself reschedules tasks whose worker died; a task that still
    fails with KilledWorker or is cancelled (its data lost) is resubmitted here, the spec
    re-scattered if needed, up to max_retries times."""

    def __init__(self, client, spec: WorkerSpec, *, max_retries: int) -> None:
        self.client = client
        self.spec = spec
        self.max_retries = max_retries
        self.n_shipments = 0  # scatters of the spec (each to every worker)
        self.n_loads = 0
        self.n_retries = 0
        self._spec_future = None

    def _scatter(self):
        self.n_shipments += 1
        self._spec_future = self.client.scatter(self.spec, broadcast=True, hash=False)
        return self._spec_future

    def run(self, keys: Sequence[tuple[int, ...]], on_result: OnResult) -> None:
        from distributed import as_completed

        try:
            from distributed.scheduler import KilledWorker
        except ImportError:  # pragma: no cover
            KilledWorker = RuntimeError  # noqa: N806

        spec_f = self._spec_future or self._scatter()
        pending = {}  # future key -> (future, candidate index)

        def submit(i):
            f = self.client.submit(worker_evaluate, self.spec.token, keys[i], spec_f, pure=False)
            pending[f.key] = (f, i)
            return f

        lost: Counter[int] = Counter()
        ac = as_completed([submit(i) for i in range(len(keys))])
        try:
            for fut in ac:
                i = pending.pop(fut.key)[1]
                try:
                    rec, loaded = fut.result()
                except (KilledWorker, cf.CancelledError) as e:
                    lost[i] += 1
                    if lost[i] > self.max_retries:
                        raise _lost_error(keys[i], lost[i]) from e
                    if spec_f.status != "finished":  # the spec's replicas were lost too
                        spec_f = self._scatter()
                    self.n_retries += 1
                    ac.add(submit(i))
                    continue
                self.n_loads += int(loaded)
                on_result(i, rec)
        except BaseException:
            self.client.cancel([f for f, _ in pending.values()])
            raise

    def close(self) -> None:
        if self._spec_future is not None:
            self._spec_future.release()
            self._spec_future = None


def make_runner(executor, spec_factory: Callable[[], WorkerSpec], *, max_retries: int):
    """A runner for `executor` (a concurrent.futures.Executor or a dask.distributed Client)."""
    if _is_dask_client(executor):
        return DaskRunner(executor, spec_factory(), max_retries=max_retries)
    if isinstance(executor, cf.Executor):
        return FuturesRunner(executor, spec_factory(), max_retries=max_retries)
    raise TypeError(
        "executor must be a concurrent.futures.Executor or a dask.distributed Client, "
        f"got {type(executor).__name__}"
    )
