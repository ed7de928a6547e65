"""wsq.merge: adjacent-bin merging with a fixed bar, batched/bisected evaluations, packed remap."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import wsq
from wsq import reference
from wsq.core.merge import merge
from wsq.kernels import ops


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(24, 40), nn.ReLU(), nn.Linear(40, 7)).eval()


def _indices(c) -> dict[str, torch.Tensor]:
    """Each tensor's indices into the shared codebook (what the file stores)."""
    return {
        n: ops.unpack(c.global_packed(n), q.numel, c.bits, torch.int64)
        for n, q in c.quantized.items()
    }


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [model[0].weight.detach().reshape(-1), model[2].weight.detach().reshape(-1)]


class MaxError:
    """1.0 while every weight is within eps of its original value, else 0.0; counts its calls.

    Acceptance of a set of merges is then the conjunction of each merge's own acceptance, so the
    batched/bisected search must keep exactly the merges a one-by-one search keeps."""

    def __init__(self, original: nn.Module, eps: float) -> None:
        self.ref = torch.cat(_weights(original)).clone()
        self.eps = eps
        self.calls = 0

    def __call__(self, model: nn.Module) -> float:
        self.calls += 1
        err = float((torch.cat(_weights(model)) - self.ref).abs().max())
        return 1.0 if err <= self.eps else 0.0


class OutputMSE:
    """-mean squared error of the outputs against the original model's (higher is better)."""

    def __init__(self, original: nn.Module, x: torch.Tensor) -> None:
        self.x = x
        with torch.no_grad():
            self.ref = original(x)

    def __call__(self, model: nn.Module) -> float:
        return -float(((model(self.x) - self.ref) ** 2).mean())


def _naive(c, evaluate_weights_ok) -> np.ndarray:
    """One-by-one reference of the merge passes for a decomposable bar: returns the final
    old -> new index table. evaluate_weights_ok(group_entries, center) says whether one merged
    group passes on its own."""
    counts = c.index_counts().double().numpy()
    cb = c.codebook.double().numpy()
    groups = [[i] for i in range(len(cb))]
    cnt = list(counts)
    mean = list(cb)
    while True:
        if len(groups) < 2:
            break
        costs = []
        for i in range(len(groups) - 1):
            a, b = cnt[i], cnt[i + 1]
            costs.append(a * b / (a + b) * (mean[i] - mean[i + 1]) ** 2 if a + b else 0.0)
        used = set()
        chosen = []
        for i in sorted(range(len(costs)), key=lambda i: (costs[i], i)):
            if i not in used and i + 1 not in used:
                used |= {i, i + 1}
                chosen.append(groups[i][0])
        kept = 0
        for start in chosen:
            i = next(j for j, g in enumerate(groups) if g[0] == start)
            m = (cnt[i] * mean[i] + cnt[i + 1] * mean[i + 1]) / (cnt[i] + cnt[i + 1])
            if evaluate_weights_ok(groups[i] + groups[i + 1], m):
                groups[i] = groups[i] + groups[i + 1]
                cnt[i] += cnt[i + 1]
                mean[i] = m
                del groups[i + 1], cnt[i + 1], mean[i + 1]
                kept += 1
        if kept == 0:
            break
    table = np.zeros(len(cb), dtype=np.int64)
    for j, g in enumerate(groups):
        table[g] = j
    return table


def _old_to_new(c, m) -> torch.Tensor:
    old, new = _indices(c), _indices(m)
    table = torch.full((c.codebook.numel(),), -1, dtype=torch.int64)
    for name in old:
        table[old[name]] = new[name]
        # a function: every weight of one old entry went to one new entry
        assert torch.equal(table[old[name]], new[name])
    return table


def test_free_merges_reduce_bins_and_keep_the_bar(device):
    model = _mlp().to(device)
    c = wsq.compress(model, 256)
    ev = MaxError(model, eps=0.05)
    m = merge(c, ev, reference_model=model)
    info = m.merge_info
    assert info["baseline"] == 1.0 and info["threshold"] == 1.0
    assert info["n_before"] == c.codebook.numel()
    assert info["n_after"] == m.codebook.numel() < c.codebook.numel() // 4
    assert m.bits == reference.bits_for(m.codebook.numel()) < c.bits
    assert m.quantized["0.weight"].packed.device.type == device.type
    assert ev(m.model) == 1.0  # the returned model passes the bar
    assert info["metric_after"] == 1.0
    # evaluations are counted (the baseline call on reference_model excluded) and cost fewer
    # than one per pair decision
    assert ev.calls == info["evaluations"] + 2  # + baseline + the check above
    assert info["evaluations"] < info["decisions"]
    assert info["accepted"] == info["n_before"] - info["n_after"]
    assert info["stopped"] == "converged" and info["passes"] >= 2


def test_batched_bisection_keeps_exactly_what_one_by_one_keeps():
    model = _mlp(1)
    c = wsq.compress(model, 512)
    eps = 0.03
    w = torch.cat(_weights(model)).double()
    idx = torch.cat(list(_indices(c).values()))

    def ok(entries, center):
        sel = torch.isin(idx, torch.tensor(entries))
        return float((w[sel] - center).abs().max()) <= eps + 1e-7

    m = merge(c, MaxError(model, eps), baseline=1.0)
    table = _old_to_new(c, m)
    expect = _naive(c, ok)
    assert table.tolist() == expect.tolist()


def test_merged_codebook_is_the_count_weighted_mean_and_indices_match_the_reference_remap():
    model = _mlp(2)
    c = wsq.compress(model, 300)
    m = merge(c, MaxError(model, 0.04), baseline=1.0)
    table = _old_to_new(c, m)
    n_new = m.codebook.numel()
    # contiguous, monotone runs of old entries
    assert table[0] == 0 and table[-1] == n_new - 1
    assert bool((table.diff() >= 0).all()) and bool((table.diff() <= 1).all())
    counts = c.index_counts().double()
    cb = c.codebook.double()
    for j in range(n_new):
        sel = table == j
        mu = float((counts[sel] * cb[sel]).sum() / counts[sel].sum())
        assert m.codebook[j].item() == pytest.approx(mu, rel=1e-6, abs=1e-9)
    # = the mean of the original weights of the union (centers were bin means)
    w = torch.cat(_weights(model)).double()
    idx = torch.cat(list(_indices(c).values()))
    for j in range(n_new):
        members = w[table[idx] == j]
        assert m.codebook[j].item() == pytest.approx(float(members.mean()), rel=1e-5, abs=1e-7)
    # the file's indices are exactly the reference remap of the old ones, and in memory each
    # tensor holds the merged values it uses at the narrowest width
    t32 = table.to(torch.int32)
    for name, q in c.quantized.items():
        want = reference.remap_packed(c.global_packed(name), q.numel, c.bits, t32, m.bits)
        assert torch.equal(m.global_packed(name), want)
        new_idx = reference.unpack(want, q.numel, m.bits).long()
        used = torch.unique(new_idx)
        mq = m.quantized[name]
        assert mq.bits == reference.bits_for(used.numel()) < c.bits
        assert torch.equal(mq.table[: used.numel()], m.codebook[used])
        local = torch.searchsorted(used, new_idx)
        assert torch.equal(mq.packed, reference.pack(local, mq.bits))
    assert m.codebook.dtype == torch.float32
    assert bool((m.codebook[1:] >= m.codebook[:-1]).all())


def test_tolerance_is_respected_and_the_input_untouched(device):
    model = _mlp(3).to(device)
    x = torch.randn(64, 24, generator=torch.Generator().manual_seed(0)).to(device)
    ev = OutputMSE(model, x)
    c = wsq.compress(model, 128)
    before_cb = c.codebook.clone()
    before_packed = {n: q.packed.clone() for n, q in c.quantized.items()}
    with torch.no_grad():
        before_out = c.model(x)
        start = -ev(c.model)  # the compressed model's own error: bars above it let merges pass
    results = {}
    for tol in (2 * start, 20 * start):
        m = merge(c, ev, tolerance=tol, baseline=0.0)
        with torch.no_grad():
            score = ev(m.model)
        assert score >= -tol
        assert score == m.merge_info["metric_after"]  # the evaluated state is the returned one
        results[tol] = m.codebook.numel()
    assert results[20 * start] < results[2 * start] < c.codebook.numel()
    assert torch.equal(c.codebook, before_cb)
    for n, q in c.quantized.items():
        assert torch.equal(q.packed, before_packed[n])
    with torch.no_grad():
        assert torch.equal(c.model(x), before_out)


def test_never_below_the_bar_even_when_merges_look_cheap():
    # a bar no merge can pass: nothing changes, and the result is still a new, equal Compressed
    model = _mlp(4)
    c = wsq.compress(model, 64)
    m = merge(c, MaxError(model, 0.0), baseline=1.0)
    assert m is not c and m.model is not c.model
    assert torch.equal(m.codebook, c.codebook) and m.bits == c.bits
    assert m.merge_info["accepted"] == 0 and m.merge_info["n_after"] == c.codebook.numel()
    for n, q in c.quantized.items():
        assert torch.equal(m.quantized[n].packed, q.packed)


def test_merged_model_matches_its_dense_weights_and_round_trips(tmp_path, device):
    model = _mlp(5).to(device)
    c = wsq.compress(model, 200)
    m = merge(c, MaxError(model, 0.05), baseline=1.0)
    x = torch.randn(9, 24, device=device)
    dense = _mlp(5).to(device)
    dense.load_state_dict(m.dequantized_state_dict())
    with torch.no_grad():
        torch.testing.assert_close(m.model(x), dense(x), rtol=1e-5, atol=1e-6)
    path = tmp_path / "m.wsq"
    wsq.save(m, path)
    back = wsq.load(path, _mlp(0).to(device))
    assert torch.equal(back.codebook, m.codebook) and back.bits == m.bits
    with torch.no_grad():
        assert torch.equal(back.model(x), m.model(x))
    assert m.stats()["file_bytes"] < c.stats()["file_bytes"]


def test_max_evals_stops_early_and_keeps_what_passed():
    model = _mlp(6)
    c = wsq.compress(model, 256)
    ev = MaxError(model, 0.05)
    m = merge(c, ev, baseline=1.0, max_evals=3)
    info = m.merge_info
    assert info["stopped"] == "max_evals" and info["evaluations"] == 3 == ev.calls
    assert ev(m.model) == 1.0


def test_tied_parameters_and_buffers_survive(device):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(30, 8)
            self.out = nn.Linear(8, 30, bias=False)
            self.out.weight = self.emb.weight
            self.norm = nn.LayerNorm(8)

        def forward(self, t):
            return self.out(self.norm(self.emb(t)))

    torch.manual_seed(0)
    model = Tied().eval().to(device)
    t = torch.randint(0, 30, (5, 4)).to(device)
    c = wsq.compress(model, 128)
    with torch.no_grad():
        ref = model(t)

    def ev(m):
        return -float(((m(t) - ref) ** 2).mean())

    with torch.no_grad():
        tol = -3 * ev(c.model)
    m = merge(c, ev, baseline=0.0, tolerance=tol)
    assert m.codebook.numel() < c.codebook.numel()
    assert list(m.quantized) == list(c.quantized)
    assert m.quantized["emb.weight"].names == ("emb.weight", "out.weight")
    with torch.no_grad():
        assert ev(m.model) >= -tol


def test_arguments_are_checked():
    model = _mlp()
    c = wsq.compress(model, 16)
    ev = MaxError(model, 0.1)
    with pytest.raises(ValueError, match="baseline"):
        merge(c, ev)
    with pytest.raises(ValueError, match="not both"):
        merge(c, ev, baseline=1.0, reference_model=model)
    with pytest.raises(TypeError, match="compressed"):
        merge(model, ev, baseline=1.0)
    with pytest.raises(TypeError, match="evaluate"):
        merge(c, 3, baseline=1.0)
    with pytest.raises(ValueError, match="tolerance"):
        merge(c, ev, baseline=1.0, tolerance=-1)
    with pytest.raises(ValueError, match="tolerance"):
        merge(c, ev, baseline=1.0, tolerance=math.nan)
    with pytest.raises(ValueError, match="max_evals"):
        merge(c, ev, baseline=1.0, max_evals=0)
    with pytest.raises(TypeError, match="batch"):
        merge(c, ev, baseline=1.0, batch=2.5)
    with pytest.raises(ValueError, match="baseline"):
        merge(c, ev, baseline=math.inf)
    with pytest.raises(TypeError, match="float"):
        merge(c, lambda m: "x", baseline=1.0)


def test_nan_metric_rejects():
    model = _mlp()
    c = wsq.compress(model, 32)
    calls = []

    def ev(m):
        calls.append(1)
        return 1.0 if len(calls) == 1 else math.nan

    m = merge(c, ev, baseline=1.0)
    assert m.merge_info["accepted"] == 0 and m.codebook.numel() == c.codebook.numel()


def test_merge_front_merges_the_solutions_within_tolerance():
    from wsq.core.merge import merge_front

    model = _mlp(7)
    x = torch.randn(64, 24, generator=torch.Generator().manual_seed(1))
    ev = OutputMSE(model, x)
    res = wsq.search(model, ev, method=wsq.Uniform(k_min=16, k_max=256),
                     strategy=wsq.Sweep(budget=6), progress=False)  # fmt: skip
    tol = -sorted(s.metric for s in res.front)[len(res.front) // 2]  # about half qualify
    merged = merge_front(res, ev, tolerance=tol)
    want = [i for i, s in enumerate(res.front) if s.drop <= tol]
    assert sorted(merged) == want and want
    for i, m in merged.items():
        assert m.merge_info["baseline"] == res.baseline
        assert m.codebook.numel() <= res.front[i].n_bins
        with torch.no_grad():
            assert ev(m.model) >= res.baseline - tol
