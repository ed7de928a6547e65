"""wsq.core.grid (wsq.tune) and wsq.search(method="grid"): one shared grid, per-tensor steps."""

from __future__ import annotations

import copy
import csv
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from test_results import _Net  # the two-layer toy with an outlier
from torch import nn

import wsq
from wsq.core import grid


def test_grid_quantizer_matches_rounding_and_saves(tmp_path):
    m = _Net()
    gq = grid.GridQuantizer(m)
    delta0 = 0.01
    r = gq.quantize(grid.GridPlan(delta0, (1, 1)))
    assert torch.all(r.codebook[1:] > r.codebook[:-1])
    for i in range(len(gq.entries)):
        w = gq.weights(i)  # read from the model, one tensor at a time (no pool copy)
        assert torch.equal(r.points[i], torch.round(w / delta0).to(torch.int64))
    work = copy.deepcopy(m)
    gq.write(r, work)
    # each weight is replaced by the mean of its grid cell (the cell is one step wide)
    for (n, p), (_, q) in zip(work.named_parameters(), m.named_parameters(), strict=True):
        if p.dim() == 2:
            assert (p - q).abs().max() < delta0, n
    c = gq.compress(r)
    wsq.save(c, tmp_path / "m.wsq")
    loaded = wsq.load(tmp_path / "m.wsq", copy.deepcopy(m))
    dense = loaded.dequantized_state_dict()
    for n, p in work.state_dict().items():
        assert torch.equal(dense[n], p), n
    x = torch.randn(5, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), work(x))
    assert os.path.getsize(tmp_path / "m.wsq") == c.stats()["file_bytes"]
    # a coarser step on one tensor: fewer coded bits, that tensor's error grows, the other's not
    r2 = gq.quantize(grid.GridPlan(delta0, (8, 1)))
    assert r2.bits < r.bits
    assert torch.equal(r2.points[1], r.points[1])
    assert torch.all(r2.points[0] % 8 == 0)
    # rate-aware assignment spends fewer bits for a bounded extra error
    r3 = gq.quantize(grid.GridPlan(delta0, (8, 1), rd=1.0))
    assert r3.bits < r2.bits
    work3 = copy.deepcopy(m)
    gq.write(r3, work3)
    assert (work3.a.weight - m.a.weight).abs().max() <= 8 * delta0 + 1e-6
    with pytest.raises(ValueError, match="steps for"):
        gq.quantize(grid.GridPlan(delta0, (1,)))
    with pytest.raises(ValueError, match="too fine"):
        gq.quantize(grid.GridPlan(1e-9, (1, 1)))


def test_probe_allocate_and_tune():
    m = _Net()
    gq = grid.GridQuantizer(m)
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(1))
    ev = wsq.metrics.cosine(m, x)
    s = grid.probe_sensitivity(gq, ev, ev(m))
    assert s.shape == (2,) and np.all(s > 0)
    steps = grid.allocate(gq.numel, s, 1.0)
    # step_t ~ sqrt(n_t / s_t): the tensor with higher sensitivity per weight gets the finer step
    per_w = s / gq.numel
    assert (steps[0] < steps[1]) == (per_w[0] > per_w[1])
    plan = grid.plan_for(steps, resolution=4)
    assert min(plan.mult) == 4
    # bracketing + bisection on a monotone toy metric
    scale, payload, trace = grid.tune_scale(lambda c: (1.0 - c, c), 0.7, 0.01, iters=12)
    assert 0.25 < scale <= 0.3 and payload == scale
    scale, payload, trace = grid.tune_scale(lambda c: (1.0 - c, c), 0.7, 5.0, iters=12)
    assert 0.25 < scale <= 0.3
    assert grid.tune_scale(lambda c: (-1.0, c), 0.7, 1.0, iters=4)[0] is None


def test_tune_meets_the_tolerance():
    m = _Net()
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(2))
    ev = wsq.metrics.cosine(m, x)
    c = grid.tune(m, ev, tolerance=0.01, iters=8, rd=0.0)
    info = c.tune_info
    assert info["metric"] >= 1.0 - 0.01 - 1e-9 and info["evaluations"] == 1 + 2 + len(info["trace"])
    assert abs(ev(c.model) - info["metric"]) < 1e-4  # the packed model computes what was tuned
    # coarser than a uniform grid at the finest tensor's step, for the same model
    assert c.stats()["bits_entropy"] < wsq.compress(m, 1024).stats()["bits_entropy"]
    assert torch.equal(m.a.weight, _Net().a.weight)  # the input model is not modified
    with pytest.raises(ValueError, match="tolerance"):
        grid.tune(m, ev, tolerance=-1.0)
    with pytest.raises(ValueError, match="never reached"):
        grid.tune(m, ev, tolerance=0.0, baseline=2.0, iters=3)


def test_tune_margin_keeps_the_decision_metric_inside_the_tolerance():
    m = _Net()
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(2))
    ev = wsq.metrics.cosine(m, x)
    sens = grid.probe_sensitivity(grid.GridQuantizer(m), ev, 1.0)
    kw = dict(tolerance=0.02, iters=8, rd=0.0, baseline=1.0, sensitivities=sens)
    plain = grid.tune(m, ev, **kw).tune_info
    # the plain tune lands within the margin's band, so the margin has something to change
    assert 1.0 - 0.02 <= plain["metric"] < 1.0 - 0.02 + 0.01
    c = grid.tune(m, ev, margin=0.01, **kw)
    info = c.tune_info
    assert info["margin"] == 0.01 and info["threshold"] == pytest.approx(1.0 - 0.02 + 0.01)
    assert info["metric"] >= info["threshold"] and ev(c.model) >= 1.0 - 0.01 - 1e-6
    assert info["scale"] < plain["scale"]  # a finer grid: more bits for the margin
    assert c.stats()["bits_entropy"] > grid.tune(m, ev, **kw).stats()["bits_entropy"]
    assert plain["margin"] == 0.0 and plain["threshold"] == pytest.approx(0.98)
    # margin == tolerance asks for the baseline itself; beyond it, or negative, is an error
    for bad, err in ((0.03, "margin must be <= tolerance"), (-0.001, "margin must be"),
                     (math.nan, "margin must be")):  # fmt: skip
        with pytest.raises(ValueError, match=err):
            grid.tune(m, ev, margin=bad, **kw)
    with pytest.raises(TypeError, match="margin must be a number"):
        grid.tune(m, ev, margin="0.01", **kw)
    with pytest.raises(ValueError, match=r"tolerance \+ margin .* lower margin"):
        grid.tune(m, ev, margin=0.02, **dict(kw, iters=2))


class _Mixed(nn.Module):
    """Every kind of layer wsq.compress pools: conv, embedding, linear, a raw parameter."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.emb = nn.Embedding(20, 16)
        self.conv = nn.Conv1d(16, 24, 3, padding=1)
        self.raw = nn.Parameter(torch.randn(24, 24) * 0.2)
        self.fc = nn.Linear(24, 10)

    def forward(self, ids):
        h = self.conv(self.emb(ids).transpose(1, 2)).relu().mean(-1)
        return self.fc(h @ self.raw)


def _ids():
    return torch.randint(0, 20, (64, 7), generator=torch.Generator().manual_seed(4))


def test_tune_any_layer_saves_loads_and_merges(tmp_path):
    m = _Mixed()
    ev = wsq.metrics.cosine(m, _ids())
    before = {k: v.clone() for k, v in m.state_dict().items()}
    c = wsq.tune(m, ev, tolerance=0.02)
    info = c.tune_info
    assert ev(c.model) >= info["baseline"] - 0.02 - 1e-6
    assert abs(ev(c.model) - info["metric"]) < 1e-4
    assert {"emb.weight", "conv.weight", "raw", "fc.weight"} <= set(c.quantized)
    # one shared codebook: every layer's table is the same storage
    s = c.stats()
    assert s["n_bins"] == c.codebook.numel() and s["cr"] > 1
    path = tmp_path / "m.wsq"
    wsq.save(c, path)
    assert os.path.getsize(path) == s["file_bytes"]
    loaded = wsq.load(path, _Mixed())
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(_ids()), c.model(_ids()))
    merged = wsq.merge(c, ev, tolerance=0.02, baseline=info["baseline"], max_evals=20)
    assert merged.codebook.numel() <= c.codebook.numel()
    assert ev(merged.model) >= info["baseline"] - 0.02 - 1e-6
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k  # the input model is not modified


def test_tune_bad_evaluators_name_the_callable():
    m = _Net()
    x = torch.randn(16, 64)
    with pytest.raises(ValueError, match="evaluate.*nan"):
        wsq.tune(m, lambda mod: float("nan"), tolerance=0.1)

    calls = []

    def nan_after_baseline(mod):
        calls.append(1)
        return 1.0 if len(calls) == 1 else float("nan")

    with pytest.raises(ValueError, match="NaN for every candidate"):
        wsq.tune(m, nan_after_baseline, tolerance=0.1, iters=3)

    def boom(mod):
        raise RuntimeError("no data")

    with pytest.raises(RuntimeError, match="no data") as e:
        wsq.tune(m, boom, tolerance=0.1)
    assert any("evaluate" in n for n in getattr(e.value, "__notes__", []))
    with pytest.raises(TypeError, match="evaluate.*float"):
        wsq.tune(m, lambda mod: "high", tolerance=0.1)
    with pytest.raises(TypeError, match="evaluate must be callable"):
        wsq.tune(m, 3, tolerance=0.1)
    with pytest.raises(TypeError, match="Grid.probe"):
        wsq.tune(m, wsq.metrics.cosine(m, x), wsq.Grid(probe="kl"), tolerance=0.1)
    with pytest.raises(TypeError, match="model"):
        wsq.tune("net", wsq.metrics.cosine(m, x), tolerance=0.1)
    for kw in ({"rd": -1.0}, {"iters": 0}, {"probe_step": 0.0}):
        with pytest.raises((ValueError, TypeError), match=f"Grid.{next(iter(kw))}"):
            wsq.tune(m, wsq.metrics.cosine(m, x), wsq.Grid(**kw), tolerance=0.1)
    with pytest.raises(ValueError, match="tolerance"):
        wsq.tune(m, wsq.metrics.cosine(m, x), tolerance=math.nan)
    bad = _Net()
    with torch.no_grad():
        bad.a.weight[0, 0] = math.nan
    with pytest.raises(ValueError, match="a.weight"):
        wsq.tune(bad, lambda mod: 1.0, tolerance=0.1)


@pytest.fixture(scope="module")
def grid_result():
    m = _Net()
    x = torch.randn(128, 64, generator=torch.Generator().manual_seed(5))
    ev = wsq.metrics.cosine(m, x)
    return m, ev, wsq.search(m, ev, method=wsq.Grid(), pop_size=8, generations=4, progress=False)


def test_search_grid_front_and_outputs(tmp_path, grid_result):
    m, ev, r = grid_result
    assert r.config["method"] == "grid" and r.variables == ("scale", "rd")
    assert r.n_evaluations >= 8 and len(r.front) >= 2
    bits = [s.bits for s in r.front]
    assert bits == sorted(bits)
    assert all(s.method == "grid" and s.scale > 0 and 0 <= s.rd <= 2 for s in r.front)
    best = r.best(0.05)
    c = r.compress(best)
    # the compressed model computes what the search scored; the cr is the real file's
    assert abs(ev(c.model) - best.metric) < 1e-5
    assert math.isclose(c.stats()["cr"], best.cr, rel_tol=0.02)
    assert c.stats()["n_bins"] == best.n_bins
    path = tmp_path / "best.wsq"
    wsq.save(c, path)
    assert os.path.getsize(path) == c.stats()["file_bytes"]
    text = r.table()
    assert "grid" in text and "scale" in text and len(text.splitlines()) == 2 + len(r.front)
    r.to_csv(tmp_path / "f.csv")
    rows = list(csv.DictReader(open(tmp_path / "f.csv")))
    assert [float(row["scale"]) for row in rows] == [s.scale for s in r.front]
    r.to_json(tmp_path / "f.json")
    assert json.load(open(tmp_path / "f.json"))["front"][0]["method"] == "grid"
    r.plot(tmp_path / "f.png")
    assert os.path.getsize(tmp_path / "f.png") > 0
    # merge takes what compress() gives; a bare Solution gets a message saying what to pass
    merged = wsq.merge(c, ev, tolerance=0.05, baseline=r.baseline, max_evals=10)
    assert merged.codebook.numel() <= c.codebook.numel()
    with pytest.raises(TypeError, match=r"result.compress\(solution\)"):
        wsq.merge(best, ev, tolerance=0.05, baseline=r.baseline)


def test_search_grid_is_seeded_and_checks_arguments(grid_result):
    m, ev, r = grid_result
    again = wsq.search(m, ev, method=wsq.Grid(), pop_size=8, generations=4, progress=False)
    assert [(s.x, s.bits, s.metric) for s in again.front] == [
        (s.x, s.bits, s.metric) for s in r.front
    ]
    one = wsq.search(
        m, ev, method=wsq.Grid(rd=0.0, fixed_rd=True), pop_size=6, generations=2, progress=False
    )  # fmt: skip
    assert all(s.rd == 0.0 for s in one.history) and one.variables == ("scale",)
    with pytest.warns(DeprecationWarning, match="wsq.Grid"):
        old = wsq.search(m, ev, method="grid", variables=("scale",), rd=0.0, pop_size=6,
                         generations=2, progress=False)  # fmt: skip
    assert [(s.x, s.metric) for s in old.front] == [(s.x, s.metric) for s in one.front]
    with pytest.raises(ValueError, match="method"):
        wsq.search(m, ev, method="kmeans")
    with pytest.raises(ValueError, match="variables"):
        wsq.search(m, ev, method="grid", variables=("k",))
    with pytest.raises(ValueError, match="executor"), ThreadPoolExecutor(1) as ex:
        wsq.search(m, ev, method=wsq.Grid(), executor=ex)
    with pytest.raises(ValueError, match="checkpoint"):
        wsq.search(m, ev, method=wsq.Grid(), checkpoint="ckpt")
    with pytest.raises(ValueError, match="strategy"):
        wsq.search(m, ev, method=wsq.Grid(), strategy="sweep")
    for bad, exc, word in (({"rd": -1.0}, ValueError, "Grid.rd"), ({"iters": 0}, ValueError,
                           "Grid.iters"), ({"probe": "kl"}, TypeError, "Grid.probe"),
                           ({"sensitivities": [1.0, math.nan]}, ValueError, "Grid.sensitivities"),
                           ({"fixed_rd": 1}, TypeError, "Grid.fixed_rd"),
                           ({"scale": 0.0}, ValueError, "Grid.scale")):  # fmt: skip
        with pytest.raises(exc, match=word):
            wsq.Grid(**bad)
    with pytest.raises(ValueError, match="Grid.scale is needed"):
        wsq.compress(m, wsq.Grid())
    with pytest.raises(ValueError, match="method=.grid. only"):
        wsq.search(m, ev, rd=0.5)
    with pytest.raises(ValueError, match="evaluate.*nan"):
        wsq.search(m, lambda mod: math.nan, method=wsq.Grid(), pop_size=4, generations=1)


# ----------------------------------------------------------------------------- bounded by points used


def _outlier_net() -> nn.Module:
    """Two small tensors whose ranges span millions of fine steps but use few points."""
    torch.manual_seed(3)
    m = nn.Sequential(nn.Linear(40, 30), nn.Linear(30, 20))
    with torch.no_grad():
        m[0].weight.mul_(0.01)
        m[0].weight[0, 0] = 40.0  # outliers far out: a span of ~2**22 steps of 2e-5
        m[1].weight[3, 4] = -35.0
    return m


def test_wide_tensors_are_accumulated_sparsely_with_the_same_result(monkeypatch):
    from wsq.core import grid_quant

    m = _outlier_net()
    gq = grid.GridQuantizer(m)
    plan = grid.GridPlan(5e-5, (1, 2), rd=1.0)
    assert not any(gq._dense(i, plan) for i in range(2))  # the default: sparse for both
    sparse = gq.quantize(plan)
    monkeypatch.setattr(grid_quant, "DENSE_CELLS", 1 << 22)  # now dense for both
    assert all(gq._dense(i, plan) for i in range(2))
    dense = gq.quantize(plan)
    assert torch.equal(sparse.codebook, dense.codebook)
    assert torch.equal(sparse.at, dense.at) and torch.equal(sparse.entry, dense.entry)
    assert np.array_equal(sparse.per_stream, dense.per_stream)
    for i in range(2):
        assert torch.equal(sparse.points[i], dense.points[i])
        p_dense = gq.part(dense, i)
        monkeypatch.setattr(grid_quant, "DENSE_CELLS", 16)
        p_sparse = gq.part(sparse, i)
        monkeypatch.setattr(grid_quant, "DENSE_CELLS", 1 << 22)
        assert torch.equal(p_dense[0], p_sparse[0])  # packed indices
        torch.testing.assert_close(p_dense[1], p_sparse[1], rtol=0, atol=0, equal_nan=True)
    # the result holds the points used, not the grid's range
    assert sparse.at.numel() < 2000 and sparse.codebook.numel() <= sparse.at.numel()


def _hwm_growth(fn) -> int:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

    def field(name):
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith(name + ":"))

    base = field("VmRSS")
    fn()
    return field("VmHWM") - base


@pytest.mark.skipif(
    not (os.path.exists("/proc/self/clear_refs") and os.access("/proc/self/clear_refs", os.W_OK)),
    reason="needs Linux /proc/self/clear_refs to reset the RSS high-water mark",
)
def test_memory_is_bounded_by_points_used_not_the_grid_range():
    # a grid of ~2**22 points over |w| <= 40: per-point arrays over the range would be 64+ MB
    # (counts, float64 sums, relabel); 1200 weights use a few hundred points
    m = _outlier_net()
    gq = grid.GridQuantizer(m)
    plan = grid.GridPlan(2e-5, (1, 2), rd=1.0)
    gq.quantize(plan)  # warm up (lazy imports, first-call allocations)
    grew = _hwm_growth(lambda: gq.part(gq.quantize(plan), 0))
    assert grew < 16 << 20, grew
