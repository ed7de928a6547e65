"""wsq.search: objectives, cache, one working copy, strategies and SearchResult outputs."""

from __future__ import annotations

import concurrent.futures
import copy
import csv
import json
import math
import sys

import numpy as np
import pytest
import torch
from _search_digits import Accuracy, trained_cnn
from torch import nn

import wsq
from wsq.kernels import ops
from wsq.methods.uniform import CandidateEvaluator, Space
from wsq.methods.uniform import sweep_ks as _sweep_ks
from wsq.search import Solution, search

SMALL = {"pop_size": 8, "generations": 3, "progress": False}
POOL = wsq.Pooling()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # tiny models: one thread is faster than two contending ones (restored afterwards)
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
def result(cnn, acc):
    return search(cnn, acc, seed=1, **SMALL)


def _same_bits(search_bits: float, stats: dict, n_streams: int) -> bool:
    """The search's bits equal the file's coded streams: exactly for Huffman; for ANS size_bits is
    an upper bound a few bytes per stream above the real stream (wsq.entropy.size_bits)."""
    slack = (n_streams * 8 * 8 + 1e-4 * stats["n_weights"]) / stats["n_weights"]
    return 0 <= search_bits - stats["bits_entropy"] <= slack


def _dominates(a: Solution, b: Solution) -> bool:
    return a.drop <= b.drop and a.bits <= b.bits and (a.drop < b.drop or a.bits < b.bits)


def test_front_is_the_pareto_set_of_history(result):
    front, hist = result.front, result.history
    assert front and len(hist) == result.n_evaluations
    assert [s.bits for s in front] == sorted(s.bits for s in front)
    assert all(s in hist for s in front)
    for s in hist:  # nothing evaluated dominates a front point; every other point is dominated
        assert not any(_dominates(o, s) for o in hist) or s not in front
        if s not in front:
            assert any(_dominates(f, s) or (f.bits, f.drop) == (s.bits, s.drop) for f in front)
    assert len({s.x for s in hist}) == len(hist)  # each decision vector evaluated once
    assert result.n_evaluations <= result.n_requested <= 8 * 3
    for s in hist:
        assert 2 <= s.k <= 1024 and 1 <= s.n_bins <= s.k and s.clip == 0.0
        assert s.drop == pytest.approx(result.baseline - s.metric, abs=0)
        assert s.bits > 0 and s.cr > 1


def test_solution_matches_compress_exactly(cnn, acc, result):
    """The working copy the search scored holds exactly compress()'s weights; bits and CR agree
    with the file wsq.save would write."""
    for i in (0, len(result.front) - 1):
        s = result.front[i]
        c = result.compress(i)
        st = c.stats()
        assert st["n_bins"] == s.n_bins
        assert _same_bits(s.bits, st, 3)
        assert s.cr == pytest.approx(st["cr"], rel=5e-3)
        with torch.no_grad():
            assert acc(c.model) == s.metric


def test_search_on_the_device_matches_compress(cnn, device):
    """The search scores working copies on the model's device; what it reports is what compress()
    of the chosen solution gives there."""
    model = copy.deepcopy(cnn).to(device)
    x, y = Accuracy().x, Accuracy().y
    acc = Accuracy(x.to(device), y.to(device))
    r = search(model, acc, seed=1, **SMALL)
    assert all(p.device.type == device.type for p in model.parameters())
    for s in (r.front[0], r.front[-1]):
        c = r.compress(s)
        assert c.quantized["4.weight"].packed.device.type == device.type
        assert _same_bits(s.bits, c.stats(), 3)
        with torch.no_grad():
            assert acc(c.model) == s.metric


def test_working_copy_weights_equal_dequantized(cnn, result):
    s = result.front[len(result.front) // 2]
    before = {n: t.clone() for n, t in cnn.state_dict().items()}
    ev = CandidateEvaluator(cnn, lambda m: 0.0, None, coder="auto", pooling=POOL)
    ev.space = Space(("k",), 2, 1024, *ev.range(), 0.0, 0.01)
    rec = ev(s.x)
    assert rec.bits == s.bits and rec.n_bins == s.n_bins
    # the compressed working copy holds compress()'s weights exactly; the model is only read
    dense = result.compress(s).dequantized_state_dict()
    for name, p in ev.work.dequantized_state_dict().items():
        assert torch.equal(p, dense[name]), name
    for name, p in cnn.state_dict().items():
        assert torch.equal(p, before[name]), name


def test_one_working_copy_and_original_untouched(cnn, acc, monkeypatch):
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    seen, copies = [], []
    real = copy.deepcopy

    def counting(x, *a, **kw):
        copies.append(type(x).__name__)
        return real(x, *a, **kw)

    monkeypatch.setattr(copy, "deepcopy", counting)

    at_call = []

    def ev(m):
        seen.append(m)
        at_call.append(copies.count("Sequential"))
        return acc(m)

    r = search(cnn, ev, seed=2, **SMALL)
    # ONE working copy, made before the first candidate (the other copy is the single
    # wsq.compress that measures the file's header size), none per candidate
    assert copies.count("Sequential") == 2
    assert len(set(at_call)) == 1
    assert seen[0] is cnn  # the baseline on the original
    assert all(m is seen[1] for m in seen[1:]) and seen[1] is not cnn
    assert len(seen) == 1 + r.n_evaluations  # the cache: one call per distinct candidate
    for k, v in cnn.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_same_seed_same_front_other_seed_differs(cnn, acc, result):
    again = search(cnn, acc, seed=1, **SMALL)
    assert [(s.x, s.metric, s.bits) for s in again.history] == [
        (s.x, s.metric, s.bits) for s in result.history
    ]
    other = search(cnn, acc, seed=7, **SMALL)
    assert [s.x for s in other.history] != [s.x for s in result.history]


def test_sweep_budget_and_hypervolume(cnn, acc, result):
    sw = search(cnn, acc, strategy=wsq.Sweep(budget=result.n_evaluations), progress=False)
    ks = [s.k for s in sw.history]
    assert len(ks) == result.n_evaluations == len(set(ks))
    assert ks == _sweep_ks(2, 1024, result.n_evaluations, "geometric")
    ratios = np.diff(np.log(ks))
    assert ratios.min() > 0  # increasing, roughly geometric
    ref = (1.0, 16.0)
    for r in (sw, result):
        hv = r.hypervolume(ref)
        # 2-D hypervolume by hand: the staircase area under ref
        pts = [(s.bits, s.drop) for s in r.front if s.bits < ref[1] and s.drop < ref[0]]
        area, prev = 0.0, ref[0]
        for b, d in sorted(pts):
            area += (ref[1] - b) * (prev - d)
            prev = d
        assert hv == pytest.approx(area, rel=1e-9)
    assert sw.hypervolume() > 0


def test_sweep_ks():
    assert _sweep_ks(2, 10, 50, "geometric") == list(range(2, 11))
    g = _sweep_ks(2, 1024, 100, "geometric")
    assert len(g) == 100 and g[0] == 2 and g[-1] == 1024 and len(set(g)) == 100
    lin = _sweep_ks(2, 1024, 12, "linear")
    assert lin[0] == 2 and lin[-1] == 1024 and len(lin) == 12


def test_clip_variable_reproduced_by_compress(cnn, acc):
    r = search(cnn, acc, method=wsq.Uniform(clip=True), seed=3, **SMALL)
    assert all(0.0 <= s.clip <= 1.0 for s in r.history)
    clipped = [s for s in r.front if s.clip > 0] or [s for s in r.history if s.clip > 0]
    s = clipped[0]
    wmin, wmax = ops.minmax(
        torch.cat([p.detach().reshape(-1) for p in cnn.parameters() if p.dim() >= 2])
    )
    assert wmin < s.lo < s.hi < wmax
    c = r.compress(s)
    assert _same_bits(s.bits, c.stats(), 3)
    assert acc(c.model) == s.metric
    assert "clip" in r.table()


def test_outputs(tmp_path, result):
    text = result.table()
    assert "baseline" in text and len(text.splitlines()) == 2 + len(result.front)
    result.to_csv(tmp_path / "f.csv")
    rows = list(csv.DictReader(open(tmp_path / "f.csv")))
    assert [int(r["k"]) for r in rows] == [s.k for s in result.front]
    assert [float(r["bits"]) for r in rows] == [s.bits for s in result.front]
    result.to_json(tmp_path / "f.json")
    d = json.load(open(tmp_path / "f.json"))
    assert d["n_evaluations"] == result.n_evaluations and len(d["front"]) == len(result.front)
    assert d["front"][0]["bits"] == result.front[0].bits
    result.plot(tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_best(result):
    s = result.best(max_drop=0.0)
    assert s.drop <= 0.0 and all(t.bits >= s.bits for t in result.front if t.drop <= 0)
    loose = result.best(max_drop=1.0)
    assert loose.bits <= s.bits
    with pytest.raises(ValueError, match="max_drop"):
        result.best(max_drop=-5.0)
    with pytest.raises(TypeError, match="max_drop"):
        result.best(max_drop="0")


def test_progress_bar(cnn, acc, capsys, monkeypatch):
    search(cnn, acc, seed=1, pop_size=8, generations=2, progress=False)
    assert capsys.readouterr().err == ""
    # progress=True draws on a terminal only: a log or a pipe (pytest's capture) gets no
    # carriage-return updates
    search(cnn, acc, seed=1, pop_size=8, generations=2, progress=True)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    search(cnn, acc, seed=1, pop_size=8, generations=2, progress=True)
    err = capsys.readouterr().err
    assert "front=" in err and "best=" in err and "2/2" in err


class _Tied(nn.Module):
    """Tied embedding/output weights, a transposed (non-contiguous) parameter, bf16 and fp32."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(16, 8)
        self.out = nn.Linear(8, 16, bias=False)
        self.out.weight = self.emb.weight
        self.t = nn.Parameter(torch.randn(8, 6).t())  # (6, 8), strides (1, 6)
        self.h = nn.Linear(8, 8).to(torch.bfloat16)

    def forward(self, idx):
        x = self.emb(idx)
        x = x + (x @ self.t.t()).sum(-1, keepdim=True)
        x = self.h(x.to(torch.bfloat16)).float()
        return self.out(x)


def test_tied_strided_and_bf16_parameters(device):
    model = _Tied().to(device)
    idx = torch.arange(16, device=device)
    ref = model(idx).detach()

    def fidelity(m):
        with torch.no_grad():
            return -float((m(idx) - ref).pow(2).mean())

    r = search(model, fidelity, method=wsq.Uniform(k_max=64), seed=0, pop_size=8, generations=2,
               progress=False)  # fmt: skip
    assert r.config["n_weights"] == 16 * 8 + 6 * 8 + 8 * 8  # tied weight pooled once
    ev = CandidateEvaluator(model, fidelity, None, coder="auto", pooling=POOL)
    ev.space = Space(("k",), 2, 64, *ev.range(), 0.0, 0.01)
    for s in (r.front[0], r.front[-1]):
        c = r.compress(s)
        assert _same_bits(s.bits, c.stats(), 3)
        assert ev(s.x).metric == s.metric
        # the working copy holds compress()'s weights exactly: strided, bf16 and tied ones too
        # (the metric itself may differ in the last bits: wsq layers compute bf16 differently)
        dense = c.dequantized_state_dict()
        for name, p in ev.work.dequantized_state_dict().items():
            assert torch.equal(p, dense[name]), name
        work = ev.work.model
        assert work.out._buffers["weight_packed"] is work.emb._buffers["weight_packed"]


@pytest.mark.parametrize(
    "kw, exc, word",
    [
        ({"strategy": "grid"}, ValueError, "strategy"),
        ({"variables": ("clip",)}, ValueError, "variables"),
        ({"variables": ("k", "range")}, ValueError, "variables"),
        ({"k_min": 1}, ValueError, "k_min"),
        ({"k_min": 10, "k_max": 5}, ValueError, "k_max"),
        ({"k_max": 2.5}, TypeError, "k_max"),
        ({"pop_size": 1}, ValueError, "pop_size"),
        ({"generations": 0}, ValueError, "generations"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"coder": "zip"}, ValueError, "coder"),
        ({"clip_floor": 1.0}, ValueError, "clip_floor"),
        ({"budget": 0, "strategy": "sweep"}, ValueError, "budget"),
        ({"strategy": "sweep", "variables": ("k", "clip")}, ValueError, "sweep"),
        ({"executor": object()}, TypeError, "executor"),
        ({"progress": 1}, TypeError, "progress"),
        ({"max_retries": -1}, ValueError, "max_retries"),
    ],
)
def test_bad_arguments(cnn, acc, kw, exc, word):
    with pytest.raises(exc, match=word):
        search(cnn, acc, **{"progress": False, **kw})


def test_bad_model_and_evaluate(cnn, acc):
    with pytest.raises(TypeError, match="model"):
        search("net", acc)
    with pytest.raises(TypeError, match="evaluate"):
        search(cnn, 3)
    with pytest.raises(ValueError, match="baseline"):
        search(cnn, lambda m: math.nan, progress=False)
    with pytest.raises(TypeError, match="evaluate must return"):
        search(cnn, lambda m: "good", progress=False)
    bad = copy.deepcopy(cnn)
    with torch.no_grad():
        bad[4].weight[0, 0] = math.inf
    with pytest.raises(ValueError, match=r"4\.weight"):
        search(bad, acc, progress=False)
    flat = nn.Linear(4, 4, bias=False)
    nn.init.constant_(flat.weight, 0.5)
    with pytest.raises(ValueError, match="equal"):
        search(flat, lambda m: 1.0, progress=False)


def test_nan_metric_is_worst_not_fatal(cnn, acc):
    calls = []

    def ev(m):
        calls.append(1)
        return acc(m) if len(calls) % 3 else math.nan

    r = search(cnn, ev, seed=1, **SMALL)
    assert any(math.isnan(s.metric) for s in r.history)
    assert not any(math.isnan(s.metric) for s in r.front)


def test_paper_protocol(cnn, acc):
    seen = []
    p = wsq.paper_protocol(
        cnn, acc, tolerance=0.0, method=wsq.Uniform(k_max=40), seed=1, pop_size=8, generations=3,
        merge_top=2, before_merge=lambda s, c: seen.append((s, c.codebook.numel())),
    )  # fmt: skip
    ok = sorted((s for s in p.search.front if s.drop <= 0.0), key=lambda s: (s.bits, s.drop))
    assert p.chosen == ok[:2] and p.chosen and len(p.merged) == len(p.chosen)
    assert [s for s, _ in seen] == p.chosen and p.random_ub.k == 40
    for s, m in zip(p.chosen, p.merged, strict=True):
        assert isinstance(m, wsq.Compressed) and m.codebook.numel() <= s.n_bins
        with torch.no_grad():
            assert acc(m.model) >= p.search.baseline  # merges never cross the bar
    for kw, word in (({"tolerance": -1.0}, "tolerance"), ({"tolerance": 0.1, "margin": 0.2},
                     "margin"), ({"tolerance": 0.0, "merge_top": 0}, "merge_top"),
                     ({"tolerance": 0.0, "method": wsq.Grid()}, "method"),
                     ({"tolerance": 0.0, "random_ub": 1}, "random_ub")):  # fmt: skip
        with pytest.raises((TypeError, ValueError), match=word):
            wsq.paper_protocol(cnn, acc, **kw)


def test_legacy_keywords_translate_with_a_warning(cnn, acc):
    new = search(cnn, acc, method=wsq.Uniform(k_max=40, clip=True), seed=1, **SMALL)
    with pytest.warns(DeprecationWarning, match="wsq.Uniform"):
        old = search(cnn, acc, k_max=40, variables=("k", "clip"), seed=1, **SMALL)
    assert [(s.x, s.metric, s.bits) for s in old.front] == [
        (s.x, s.metric, s.bits) for s in new.front
    ]
    with pytest.warns(DeprecationWarning, match="wsq.Grid"):
        g = search(cnn, acc, method="grid", rd=0.5, variables=("scale",), seed=1, **SMALL)
    assert g.variables == ("scale",) and all(s.rd == 0.5 for s in g.history)
    with pytest.warns(DeprecationWarning, match="wsq.Sweep"):
        sw = search(cnn, acc, strategy="sweep", budget=5, progress=False)
    assert sw.n_evaluations == 5
    with pytest.warns(DeprecationWarning, match="wsq.Pooling"):
        search(cnn, acc, min_dims=2, seed=1, **SMALL)
    with pytest.raises(TypeError, match="paper_protocol"):
        search(cnn, acc, merge=True, **SMALL)
    with pytest.raises(ValueError, match="method object"):
        search(cnn, acc, method=wsq.Uniform(), k_max=40, **SMALL)
    with pytest.raises(TypeError, match="unexpected"):
        search(cnn, acc, k_maxx=40, **SMALL)
    with pytest.raises(TypeError, match="method must be"):
        search(cnn, acc, method=3.5, **SMALL)
    with pytest.raises(ValueError, match="executor"):
        search(cnn, acc, method=wsq.Grid(), executor=concurrent.futures.ThreadPoolExecutor(1),
               **SMALL)  # fmt: skip
