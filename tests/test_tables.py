"""wsq.core.tables: per-tensor Lloyd tables on one shared codebook, widths at a memory budget."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from test_results import _Net  # the two-layer toy with an outlier
from torch import nn

import wsq
from wsq.core import tables


def test_lloyd1d_beats_equal_width_levels():
    # its fixed point and error are tested as bench's kmeans1d (tests/test_results.py)
    y = np.random.default_rng(0).standard_t(3, 20000)
    c, sse = tables.lloyd1d(y, 16)
    idx = np.searchsorted(0.5 * (c[1:] + c[:-1]), y, side="right")
    assert math.isclose(sse, float(((y - c[idx]) ** 2).sum()), rel_tol=1e-4)
    # better than 16 equal-width levels over the range (the point of a Lloyd table)
    edges = np.linspace(y.min(), y.max(), 17)
    u = np.clip(np.digitize(y, edges[1:-1]), 0, 15)
    sse_u = sum(((y[u == j] - y[u == j].mean()) ** 2).sum() for j in range(16) if (u == j).any())
    assert sse < 0.5 * sse_u
    np.testing.assert_array_equal(tables.lloyd1d(np.array([1.0, 1.0, 2.0]), 8)[0], [1.0, 2.0])
    with pytest.raises(ValueError, match="k must be"):
        tables.lloyd1d(y, 0)


def test_allocate_widths_spends_the_budget_where_the_drop_is():
    numel = [1000, 1000, 1000]
    # tensor 0 is 100x as sensitive as the others; error falls 4x per bit
    base = np.array([100.0, 1.0, 1.0])[:, None] * 4.0 ** -np.arange(5)[None, :]
    b = tables.allocate_widths(numel, base, 3.5, min_bits=2)
    held = sum(tables._held_bits(n, int(w)) for n, w in zip(numel, b, strict=True))
    assert held <= 3.5 * sum(numel) and b[0] > b[1] and b[1] == b[2]
    with pytest.raises(ValueError, match="budget 1.5 bits/weight is below"):
        tables.allocate_widths(numel, base, 1.5, min_bits=2)


def test_lloyd_tables_fixed_width_and_budget_round_trip(tmp_path):
    m = _Net()
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(2))
    ev = wsq.metrics.cosine(m, x)
    assert wsq.lloyd_tables is tables.lloyd_tables  # public name
    c = wsq.lloyd_tables(m, bits=3)
    st = c.stats()
    assert st["widths"] == {3: m.a.weight.numel() + m.b.weight.numel()}
    # each tensor's values are its own Lloyd centers, drawn from the one shared codebook
    sd = c.dequantized_state_dict()
    for name in ("a.weight", "b.weight"):
        want, _ = tables.lloyd1d(dict(m.named_parameters())[name].detach().numpy(), 8)
        got = torch.unique(sd[name]).double().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert set(torch.unique(sd[name]).tolist()) <= set(c.codebook.tolist())
    assert torch.equal(m.a.weight, _Net().a.weight)  # the input is not modified
    # a budget: at most that many bits held in memory, and no worse than one width for all
    b = tables.lloyd_tables(m, budget=3.0, evaluate=ev)
    info = b.tables_info
    assert b.stats()["bits_memory"] <= 3.0 and info["evaluations"] == 1 + 2 + len(info["scores"])
    assert set(info["widths"].values()) <= {2, 3, 4}  # floor(budget) -/+ 1 by default
    if info["scores"]:  # spread and flat differed: the better on evaluate was kept
        assert info["scores"][info["chosen"]] == max(info["scores"].values())
        assert ev(b.model) == info["scores"][info["chosen"]]
    assert set(info["widths"]) == {"a.weight", "b.weight"}
    assert ev(b.model) >= ev(tables.lloyd_tables(m, bits=2).model)
    wsq.save(b, tmp_path / "t.wsq")
    loaded = wsq.load(tmp_path / "t.wsq", copy.deepcopy(m))
    assert ev(loaded.model) == ev(b.model)


def test_lloyd_tables_errors_name_the_argument():
    m = _Net()
    with pytest.raises(ValueError, match="exactly one of bits"):
        tables.lloyd_tables(m)
    with pytest.raises(ValueError, match="exactly one of bits"):
        tables.lloyd_tables(m, bits=4, budget=4.0)
    with pytest.raises(ValueError, match="bits must be"):
        tables.lloyd_tables(m, bits=0)
    with pytest.raises(ValueError, match="budget needs evaluate"):
        tables.lloyd_tables(m, budget=3.0)
    with pytest.raises(ValueError, match="budget must be"):
        tables.lloyd_tables(m, budget=-1.0, sensitivities=np.ones(2))
    with pytest.raises(ValueError, match="max_bits"):
        tables.lloyd_tables(m, budget=3.0, sensitivities=np.ones(2), max_bits=9)
    with pytest.raises(ValueError, match="sensitivities must have shape"):
        tables.lloyd_tables(m, budget=3.0, sensitivities=np.ones(3))
    with pytest.raises(TypeError, match="model"):
        tables.lloyd_tables(nn.Linear, bits=2)
