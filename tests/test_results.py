"""bench/results.py (issue 6): its building blocks, and a reduced end-to-end run so it cannot rot."""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import pytest
import torch
from torch import nn

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def _bench_module(name: str):
    """Import a bench/ script without leaving bench/ on sys.path for the rest of the session
    (its script names must not shadow packages other tests import)."""
    import importlib

    sys.path.insert(0, BENCH)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(BENCH)


peers = _bench_module("_results_peers")


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = nn.Linear(64, 48)
        self.b = nn.Linear(48, 8)
        with torch.no_grad():
            self.a.weight.copy_(torch.randn(48, 64, generator=g) * 0.1)
            self.b.weight.copy_(torch.randn(8, 48, generator=g) * 0.5)
            self.b.weight[0, 0] = 3.0  # an outlier

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


# ----------------------------------------------------------------------------- 1-D k-means


def test_kmeans1d_is_a_lloyd_fixed_point_and_finds_separated_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(m, 0.01, 500) for m in (-1.0, 0.0, 2.0)])
    c, sse = peers.kmeans1d(x, 3)
    np.testing.assert_allclose(c, [-1.0, 0.0, 2.0], atol=0.005)
    y = rng.standard_t(3, 20000)
    c, sse = peers.kmeans1d(y, 16)
    assert np.all(np.diff(c) > 0)
    idx = peers.nearest(torch.from_numpy(y.astype(np.float32)), c).numpy()
    # every center is the mean of its cell (Lloyd fixed point), and the SSE is the partition's
    for j in range(len(c)):
        assert abs(y[idx == j].mean() - c[j]) < 1e-4 * max(1.0, abs(c[j]))
    assert math.isclose(sse, float(((y - c[idx]) ** 2).sum()), rel_tol=1e-4)
    # no worse than a few percent of scikit-learn's k-means++ on the same data
    cs, _, _ = peers.sklearn_kmeans(y, 16, sample=None)
    sse_sk = float(((y - cs[peers.nearest(torch.from_numpy(y.astype(np.float32)), cs)]) ** 2).sum())
    assert sse <= 1.05 * sse_sk
    # fewer distinct values than k
    c, sse = peers.kmeans1d(np.array([1.0, 1.0, 2.0]), 8)
    np.testing.assert_array_equal(c, [1.0, 2.0])
    assert sse == 0.0


def test_int_rtn_is_symmetric_per_row():
    w = torch.tensor([[1.0, -0.5, 0.25], [0.0, 0.0, 0.0], [-2.0, 1.0, 0.1]])
    q, s, d = peers.int_rtn(w, 4)
    assert q.min() >= 0 and q.max() <= 14
    np.testing.assert_allclose(s[[0, 2]].numpy(), [1 / 7, 2 / 7], rtol=1e-6)
    assert torch.equal(d[1], torch.zeros(3))
    assert torch.allclose(d[0, 0], torch.tensor(1.0)) and torch.allclose(
        d[2, 0], torch.tensor(-2.0)
    )
    assert (d - w).abs().max() <= s.max() / 2 + 1e-6


def test_peer_files_are_real_and_count_every_table(tmp_path):
    from wsq.core.pool import collect_pool

    m = _Net()
    pool = collect_pool(m)
    flat = pool.flat()
    codes, tables, ns = [], [], []
    for e in pool.entries:
        w = flat[e.offset : e.offset + e.numel]
        c, _ = peers.kmeans1d(w.numpy(), 4)
        codes.append(peers.nearest(w, c).to(torch.int64))
        tables.append(torch.as_tensor(c, dtype=torch.float32))
        ns.append(len(c))
    size, bits = peers.per_layer_file(m, pool, codes, tables, ns, "t", str(tmp_path))
    rest = sum(t.numel() * t.element_size() for n, t in m.state_dict().items() if "bias" in n)
    assert size > bits / 8 + rest + 4 * sum(ns)  # streams + tables + rest + header
    assert not os.listdir(tmp_path)  # temporary files removed
    c = peers.global_codebook_compressed(m, pool, flat, np.array([-0.2, 0.0, 0.2, 3.0]))
    assert c.codebook.numel() == 4
    assert float(c.dequantized_state_dict()["b.weight"][0, 0]) == 3.0
    assert peers.original_bytes(m) == sum(t.numel() * 4 for t in m.state_dict().values())


# ----------------------------------------------------------------------------- the script


def test_smallest_k_doubles_then_bisects():
    rows, k = peers.smallest_k(lambda k: {"decide": min(1.0, k / 37)}, 1.0, 1024)
    assert rows["decide"] == 1.0 and sorted(k)[-1] == 64 and 37 in k and 36 in k
    assert peers.smallest_k(lambda k: {"decide": 0.0}, 0.5, 16)[0] is None


def test_results_script_quick(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    results = _bench_module("results")

    out = results.main(["--model", "digits", "--quick", "--out", str(tmp_path)])
    for f in ("digits.json", "digits.md", "digits_front.png"):
        assert (tmp_path / f).stat().st_size > 0
    data = json.loads((tmp_path / "digits.json").read_text())
    rows = {r["method"]: r for r in data["paper"]["rows"]}
    assert list(rows) == ["Baseline", "Random UB", "MO-UB", "+ Merge", "+ Huffman", "+ ANS"]
    assert rows["Random UB"]["k"] == 1024 and rows["Random UB"]["bits"] == 10
    # entropy coding makes the same merged models' files smaller than their packed form
    assert rows["+ ANS"]["cr"][1] > rows["+ Merge"]["cr"][1]
    assert out["paper"]["headline_paper"]["check"]["saved_bytes"] > 0
    methods = {p["method"] for p in data["peers"]}
    assert {"int8 per-channel RTN", "int4 per-channel RTN", "sklearn KMeans, global"} <= methods
    for p in data["peers"]:
        assert p["cr"] > 1 and 0 <= p["decide"] <= 1 and p["bits"] > 0
    hv = data["paper"]["hypervolume"]
    assert hv["evaluations"]["nsga2"] == hv["evaluations"]["sweep"]
    # CR, front vs k-means, two time ratios, grid vs peers at equal bits and at the same bar
    assert len(data["targets"]) == 6
    bar = data["paper"]["baseline"]["decide"] - data["tolerance"]
    tuned = [p for p in data["peers"] if p.get("tuned")]
    assert {p["method"] for p in tuned} == {
        "1-D k-means (exact Lloyd), global, k tuned to the tolerance",
        "1-D k-means (exact Lloyd), per layer, k tuned to the tolerance",
    }
    assert all(p["decide"] >= bar for p in tuned)
    md = (tmp_path / "digits.md").read_text()
    assert "| + ANS |" in md and "QUICK" in md
    # the quick run is not the paper's budget, and its heading says what ran
    assert "reduced budget: NSGA-II pop 6 x 2 generations" in md


def test_pylm_page_quick(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the tiny model trains here
    results = _bench_module("results")
    out = results.main(["--model", "pylm", "--quick", "--out", str(tmp_path)])
    for f in ("pylm.json", "pylm.md", "pylm_front.png"):
        assert (tmp_path / f).stat().st_size > 0
    rows = {r["method"]: r for r in json.loads((tmp_path / "pylm.json").read_text())["rows"]}
    fp = rows["fp32 (uncompressed)"]
    assert fp["bits_memory"] == 32 and fp["bits_file"] > 32  # a real file: header and norms too
    # the peers' scales and codebooks are counted: exact in-memory bits of each layout
    assert rows["RTN int4, group 128, symmetric, fp16 scale"]["bits_memory"] == 4 + 16 / 128
    assert rows["RTN int3, group 128, symmetric, fp16 scale"]["bits_memory"] == 3 + 16 / 128
    torch_int4 = "RTN int4, group 128, asymmetric bf16 scale + zero (torch's int4 layout)"
    assert rows[torch_int4]["bits_memory"] == 4 + 32 / 128
    nf4 = "NF4, block 64, fp32 absmax (bitsandbytes without double quantization)"
    assert rows[nf4]["bits_memory"] == 4 + 32 / 64
    km = rows["k-means per tensor, 16 centroids (exact 1-D Lloyd, fp32 codebooks)"]
    assert 4 < km["bits_memory"] < 4.5
    wsq_rows = [r for r in rows.values() if r["family"] == "wsq"]
    assert any(r["method"].startswith("wsq Lloyd tables at a budget") for r in wsq_rows)
    budget = rows["wsq Lloyd tables at a budget of 4 bits/w in memory"]
    assert budget["bits_memory"] <= 4.0 and budget["decided_on"].startswith("val (probe")
    for r in rows.values():
        assert r["test_ppl"] > 1 and r["val_ppl"] > 1 and r["bits_file"] > 0
    md = (tmp_path / "pylm.md").read_text()
    assert "held-out ppl" in md and "QUICK" in md and "ISA" in md and out["machine"] in md
    assert "## Where a peer is ahead" in md and "## Decision data against held-out data" in md
    # the tune with a margin kept the decision perplexity inside tolerance - margin
    tuned = rows["wsq.tune (grid), tolerance 0.7, margin 0.05"]
    assert tuned["val_ppl"] <= fp["val_ppl"] * math.exp(0.7 - 0.05) and "(tolerance 0.7" in md
    assert [g["goal"][:10] for g in out["goals"]].count("<= 4 bits/") == 3  # 1%, two int4 peers
