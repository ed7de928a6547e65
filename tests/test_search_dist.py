"""wsq.search on executors: thread and process pools, a 2-worker Dask LocalCluster, dying workers.

Every run must equal the sequential one (same seed, deterministic evaluate), ship the model to each
worker about once, and retry the candidates of a worker that died.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import pytest
import torch
from _search_digits import Accuracy, ExitOnce, trained_cnn

import wsq
from wsq.search import search

RUN = {"pop_size": 8, "generations": 3, "seed": 11, "progress": False}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def cnn():
    return trained_cnn()


@pytest.fixture(scope="module")
def acc():
    return Accuracy()


@pytest.fixture(scope="module")
def sequential(cnn, acc):
    return search(cnn, acc, **RUN)


def _sig(r):
    return [(s.x, s.metric, s.bits, s.generation) for s in r.history]


class FailInWorkers:
    """Fine in the main process (the baseline), raises in any worker process."""

    def __init__(self, inner) -> None:
        self.inner, self.pid = inner, os.getpid()

    def __call__(self, model):
        if os.getpid() != self.pid:
            raise ArithmeticError("boom in a worker")
        return self.inner(model)


def test_thread_pool_equals_sequential(cnn, acc, sequential):
    with ThreadPoolExecutor(2) as ex:
        r = search(cnn, acc, executor=ex, **RUN)
    assert _sig(r) == _sig(sequential)
    assert 1 <= r.n_loads <= 2 and r.n_retries == 0


def test_process_pool_equals_sequential(cnn, acc, sequential):
    with ProcessPoolExecutor(2) as ex:  # fork on Linux: workers must not inherit a dead OMP team
        r = search(cnn, acc, executor=ex, **RUN)
        assert _sig(r) == _sig(sequential)
        assert [s.x for s in r.front] == [s.x for s in sequential.front]
        # the model travels with the first tasks (and to a worker that asks), not per candidate
        assert 1 <= r.n_loads <= 2 and r.n_shipments <= 4 < r.n_evaluations
        # the same pool serves another search (a new token replaces the cached model)
        again = search(cnn, acc, executor=ex, **RUN)
        assert _sig(again) == _sig(sequential)


def test_process_pool_worker_death_is_retried(tmp_path, cnn, acc, sequential):
    ev = ExitOnce(acc, str(tmp_path / "log"), str(tmp_path / "marker"), after=6)
    with ProcessPoolExecutor(2) as ex:
        r = search(cnn, ev, executor=ex, **RUN)
    assert os.path.exists(tmp_path / "marker")  # a worker really died
    assert r.n_retries >= 1
    assert _sig(r) == _sig(sequential)


def test_already_broken_pool_is_replaced(tmp_path, cnn, acc, sequential):
    ex = ProcessPoolExecutor(2)
    try:
        ex.submit(os._exit, 1)  # kills a worker: the pool is broken before the search starts
        for _ in range(200):
            try:
                ex.submit(int, 1).result(timeout=60)
            except BrokenProcessPool:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the pool did not break")
        r = search(cnn, acc, executor=ex, **RUN)
        assert _sig(r) == _sig(sequential) and r.n_retries >= 1
    finally:
        ex.shutdown()


def test_worker_errors_propagate(cnn, acc):
    with ProcessPoolExecutor(2) as ex:
        with pytest.raises(ArithmeticError, match="boom"):
            search(cnn, FailInWorkers(acc), executor=ex, **RUN)


def test_broken_pool_gives_up_after_max_retries(tmp_path, cnn, acc):
    class AlwaysExit(ExitOnce):  # every worker call dies: no marker ever stops it
        def __call__(self, model):
            if os.getpid() != self.after:
                os._exit(5)
            return self.inner(model)

    ev = AlwaysExit(acc, "", "", after=os.getpid())
    with ProcessPoolExecutor(2) as ex:
        with pytest.raises(RuntimeError, match="max_retries"):
            search(cnn, ev, executor=wsq.Workers(ex, max_retries=1), **RUN)


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_dask_equals_sequential(dask_client, cnn, acc, sequential):
    r = search(cnn, acc, executor=dask_client, **RUN)
    assert _sig(r) == _sig(sequential)
    assert r.n_shipments == 1 and 1 <= r.n_loads <= 2  # one broadcast, one build per worker
    ex = dask_client.get_executor()  # its concurrent.futures face works too
    assert _sig(search(cnn, acc, executor=ex, **RUN)) == _sig(sequential)


def test_dask_worker_death_is_retried(tmp_path, dask_client, cnn, acc, sequential):
    ev = ExitOnce(acc, str(tmp_path / "log"), str(tmp_path / "marker"), after=5)
    r = search(cnn, ev, executor=dask_client, **RUN)
    assert os.path.exists(tmp_path / "marker")
    assert _sig(r) == _sig(sequential)
