"""wsq.compress, the pool, Compressed's parts (rest_state, from_parts, stats) and bad inputs."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn

import wsq
from wsq import reference
from wsq.core.pool import collect_pool
from wsq.kernels import ops
from wsq.reference import fake_quant_model as reference_fake_quant


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)
        self.scale = nn.Parameter(torch.randn(5))

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean((2, 3))) * self.scale


def trained_net() -> Net:
    m = Net()
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.randn(4, 3, 9, 9))  # non-trivial running stats and num_batches_tracked
    return m.eval()


def state_equal(a: dict, b: dict) -> bool:
    # NaN-aware: a compressed model's state holds its NaN-padded lookup tables (<param>_table)
    return a.keys() == b.keys() and all(
        a[n].dtype == b[n].dtype
        and a[n].shape == b[n].shape
        and (torch.equal(a[n], b[n]) or torch.allclose(a[n], b[n], rtol=0, atol=0, equal_nan=True))
        for n in a
    )


# ----------------------------------------------------------------------------- pool


def test_pool_default_rules_and_flat():
    m = trained_net()
    pool = collect_pool(m)
    assert pool.names == ["conv.weight", "fc.weight"]
    assert pool.n_weights == 8 * 3 * 9 + 5 * 8
    assert [e.offset for e in pool.entries] == [0, 216]
    flat = pool.flat()
    assert flat.dtype == torch.float32 and flat.is_contiguous() and flat.shape == (256,)
    assert torch.equal(flat[:216], m.conv.weight.detach().reshape(-1))
    assert torch.equal(flat[216:], m.fc.weight.detach().reshape(-1))
    assert flat.data_ptr() != m.conv.weight.data_ptr()  # a copy the caller owns


def test_pool_include_exclude_min_dims():
    m = trained_net()
    assert collect_pool(m, min_dims=1).names == [
        "scale",
        "conv.weight",
        "conv.bias",
        "bn.weight",
        "bn.bias",
        "fc.weight",
        "fc.bias",
    ]  # fmt: skip (named_parameters order: a module's own parameters first)
    assert collect_pool(m, include="*.bias").names == ["conv.bias", "bn.bias", "fc.bias"]
    assert collect_pool(m, include=["fc.*", "scale"]).names == ["scale", "fc.weight", "fc.bias"]
    pool = collect_pool(m, exclude="conv.*")
    assert pool.names == ["fc.weight"]
    assert pool.skipped == [("conv.weight", "excluded by pattern 'conv.*'")]
    with pytest.raises(TypeError, match="include"):
        collect_pool(m, include=3)
    with pytest.raises(ValueError, match="min_dims"):
        collect_pool(m, min_dims=-1)
    with pytest.raises(TypeError, match="model"):
        collect_pool({"w": torch.zeros(2, 2)})


def test_pool_tied_once_with_all_names():
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight  # same object
    m = nn.ModuleDict({"emb": emb, "head": head, "other": nn.Linear(4, 4)})
    m.other2 = nn.Linear(4, 4)
    m.other2.weight = nn.Parameter(m.other.weight.data)  # distinct object, same storage
    pool = collect_pool(m)
    assert [e.names for e in pool.entries] == [
        ("emb.weight", "head.weight"),
        ("other.weight", "other2.weight"),
    ]
    assert pool.n_weights == 40 + 16


def test_pool_skips_integer_and_reports():
    m = trained_net()
    m.steps = nn.Parameter(torch.arange(6, dtype=torch.int64).view(2, 3), requires_grad=False)
    pool = collect_pool(m)
    assert pool.names == ["conv.weight", "fc.weight"]
    assert pool.skipped == [("steps", "int64 is not a floating-point dtype")]


def test_pool_tensors_resolve_working_copy():
    m = trained_net()
    pool = collect_pool(m)
    work = copy.deepcopy(m)
    ts = pool.tensors(work)
    assert ts[0] is work.conv.weight and ts[1] is work.fc.weight
    with pytest.raises(ValueError, match="conv.weight"):
        pool.tensors(nn.Sequential(nn.Linear(2, 2)))


# ----------------------------------------------------------------------------- compress


def test_compress_matches_reference_and_keeps_input(device):
    m = trained_net().to(device)
    before = {n: t.clone() for n, t in m.state_dict().items()}
    c = wsq.compress(m, 16)
    assert state_equal(m.state_dict(), before)  # input untouched, bit for bit
    assert type(m.fc) is nn.Linear and isinstance(m.fc.weight, nn.Parameter)
    ref = reference_fake_quant(m, 16)
    idx, cb, _ = reference.uniform_bins(collect_pool(m).flat(), 16)
    assert torch.equal(c.codebook, cb.cpu()) and c.codebook.dtype == torch.float32
    assert c.bits == reference.bits_for(cb.numel()) and c.k == 16
    assert state_equal(c.dequantized_state_dict(), ref.state_dict())
    assert c.quantized["fc.weight"].packed.device.type == device.type
    x = torch.randn(2, 3, 9, 9, device=device)
    torch.testing.assert_close(c.model(x), ref(x), rtol=1e-5, atol=1e-6)
    # the file's indices are exactly the oracle's packing of the oracle's indices
    q = c.quantized
    assert list(q) == ["conv.weight", "fc.weight"]
    assert torch.equal(c.global_packed("conv.weight"), reference.pack(idx[:216], c.bits).cpu())
    assert q["fc.weight"].shape == (5, 8) and q["fc.weight"].dtype == torch.float32
    # in memory each tensor holds only the values it uses, at the narrowest width
    for name, start, numel in (("conv.weight", 0, 216), ("fc.weight", 216, 40)):
        used = torch.unique(idx[start : start + numel].long().cpu())
        assert q[name].bits == reference.bits_for(used.numel())
        table = q[name].table.cpu()
        assert torch.equal(table[: used.numel()], cb.cpu()[used])
        assert torch.isnan(table[used.numel() :]).all() and table.numel() == 1 << q[name].bits
        local = torch.searchsorted(used, idx[start : start + numel].long().cpu())
        assert torch.equal(q[name].packed.cpu(), reference.pack(local, q[name].bits))


def test_compress_never_deep_copies_pooled_weights(monkeypatch):
    m = trained_net()
    pooled = {id(m.conv.weight), id(m.fc.weight)}
    copied = []
    orig = nn.Parameter.__deepcopy__

    def spy(self, memo):
        copied.append(id(self))
        return orig(self, memo)

    monkeypatch.setattr(nn.Parameter, "__deepcopy__", spy)
    c = wsq.compress(m, 8)
    assert copied and not pooled & set(copied)  # the small ones are copied, the pooled never
    names = {n for n, _ in c.model.named_parameters()}
    assert "conv.weight" not in names and "fc.weight" not in names


def test_rest_state_is_everything_else():
    m = trained_net()
    c = wsq.compress(m, 8)
    rest = c.rest_state()
    assert list(rest) == [n for n in m.state_dict() if n not in ("conv.weight", "fc.weight")]
    assert "bn.num_batches_tracked" in rest and int(rest["bn.num_batches_tracked"]) == 3
    assert state_equal(rest, {n: t for n, t in m.state_dict().items() if n in rest})
    assert rest["bn.running_mean"].data_ptr() != m.bn.running_mean.data_ptr()  # copies, not aliases


def test_all_equal_weights_one_bin():
    m = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    with torch.no_grad():
        for lin in m:
            lin.weight.fill_(0.25)
    c = wsq.compress(m, 64)
    assert c.codebook.tolist() == [0.25] and c.bits == 1
    assert torch.equal(c.model[0].weight, torch.full((3, 4), 0.25))


def test_lo_hi_clamp_to_end_bins(device):
    m = nn.Linear(64, 64, bias=False).to(device)
    c = wsq.compress(m, wsq.Uniform(k=4, lo=-0.05, hi=0.05))
    w = m.weight.detach().cpu()
    got = c.model.weight.cpu()
    assert c.lo == pytest.approx(-0.05) and c.hi == pytest.approx(0.05)
    assert torch.equal(got[w > 0.05].unique(), c.codebook[-1:])  # clamped into the top bin
    assert torch.equal(got[w < -0.05].unique(), c.codebook[:1])
    with pytest.raises(ValueError, match="lo must be < Uniform.hi"):
        wsq.Uniform(k=4, lo=0.1, hi=0.1)


def test_method_objects_and_their_errors():
    m = trained_net()
    # an int k is Uniform(k=k); the old keyword forms still work, with a warning naming the new one
    assert torch.equal(wsq.compress(m, 16).codebook, wsq.compress(m, wsq.Uniform(k=16)).codebook)
    assert torch.equal(wsq.compress(m, k=16).codebook, wsq.compress(m, wsq.Uniform(k=16)).codebook)
    with pytest.raises(TypeError, match="not both"):
        wsq.compress(m, wsq.Uniform(k=16), k=16)
    with pytest.warns(DeprecationWarning, match=r"wsq.Uniform\(k=k, lo=..., hi=...\)"):
        old = wsq.compress(m, 8, lo=-0.1, hi=0.1)
    assert torch.equal(old.codebook, wsq.compress(m, wsq.Uniform(k=8, lo=-0.1, hi=0.1)).codebook)
    with pytest.warns(DeprecationWarning, match="wsq.Pooling"):
        old = wsq.compress(m, 8, min_dims=1)
    new = wsq.compress(m, 8, pooling=wsq.Pooling(min_dims=1))
    assert sorted(old.quantized) == sorted(new.quantized) and "fc.bias" in new.quantized
    assert wsq.Uniform(k=8) == wsq.Uniform(k=8) and hash(wsq.Pooling(include="fc.*"))
    assert wsq.Pooling(include="fc.*").include == ("fc.*",)
    for bad, exc, word in (
        ({"k": 1}, ValueError, "Uniform.k"), ({"k": 2.5}, TypeError, "Uniform.k"),
        ({"lo": math.nan}, ValueError, "Uniform.lo"), ({"k_min": 1}, ValueError, "Uniform.k_min"),
        ({"k_min": 10, "k_max": 5}, ValueError, "Uniform.k_max"),
        ({"clip": 1}, TypeError, "Uniform.clip"), ({"clip_floor": 1.0}, ValueError, "clip_floor"),
    ):  # fmt: skip
        with pytest.raises(exc, match=word):
            wsq.Uniform(**bad)
    with pytest.raises(TypeError, match="Pooling.include"):
        wsq.Pooling(include=3)
    with pytest.raises(ValueError, match="Pooling.min_dims"):
        wsq.Pooling(min_dims=-1)
    with pytest.raises(TypeError, match="method must be"):
        wsq.compress(m, "uniform")
    with pytest.raises(TypeError, match="pooling must be"):
        wsq.compress(m, 8, pooling={"min_dims": 1})
    with pytest.raises(TypeError, match="unexpected keyword"):
        wsq.compress(m, 8, kk=3)
    with pytest.raises(TypeError, match="int k"):
        wsq.compress(m, wsq.Uniform(k=8), lo=0.1)
    with pytest.raises(TypeError, match="model"):
        wsq.compress("net", wsq.Uniform())


def test_tune_takes_the_method():
    m = trained_net()
    x = torch.randn(32, 3, 9, 9, generator=torch.Generator().manual_seed(0))
    ev = wsq.metrics.cosine(m, x)
    c = wsq.tune(m, ev, wsq.Uniform(k=64, k_max=512), tolerance=0.01)
    info = c.tune_info
    k = info["k"]
    assert c.k == k and 2 <= k <= 512 and info["metric"] >= info["threshold"]
    with torch.no_grad():
        assert ev(c.model) == info["metric"]  # the result is the k the tune scored
        if k > 2:  # the next smaller k tried, if any, failed the bar
            smaller = [mm for kk, mm in info["trace"] if kk < k]
            assert all(not mm >= info["threshold"] for mm in smaller)
    g = wsq.tune(m, ev, wsq.Grid(iters=4), tolerance=0.01)
    gi = g.tune_info
    same = wsq.compress(m, wsq.Grid(scale=gi["scale"], rd=gi["rd"],
                                    sensitivities=gi["sensitivities"]))  # fmt: skip
    assert torch.equal(same.codebook, g.codebook)
    with pytest.warns(DeprecationWarning, match="wsq.Grid"):
        old = wsq.tune(m, ev, tolerance=0.01, iters=4)
    assert torch.equal(old.codebook, g.codebook)
    with pytest.raises(ValueError, match="never reached"):
        wsq.tune(m, ev, wsq.Uniform(k_max=4), tolerance=0.0)
    with pytest.raises(ValueError, match="method object"):
        wsq.tune(m, ev, wsq.Grid(), tolerance=0.01, iters=3)
    with pytest.raises(ValueError, match="margin"):
        wsq.tune(m, ev, wsq.Uniform(), tolerance=0.01, margin=0.02)


def test_fp16_bf16_models_keep_dtype(device):
    for dt in (torch.float16, torch.bfloat16):
        m = trained_net().to(device, dt)
        c = wsq.compress(m, 32)
        assert c.codebook.dtype == torch.float32
        assert c.quantized["fc.weight"].dtype == dt
        assert c.model.fc.weight.dtype == dt and c.model.bn.running_var.dtype == dt
        ref = reference_fake_quant(m, 32)
        x = torch.randn(2, 3, 9, 9, dtype=dt, device=device)
        torch.testing.assert_close(c.model(x), ref(x), rtol=2e-2, atol=2e-2)


# ----------------------------------------------------------------------------- from_parts


def _parts(c):
    return c.codebook, c.bits, {n: c.global_packed(n) for n in c.quantized}, c.rest_state()


@pytest.mark.parametrize("fresh_on", ["cpu", "meta"])
def test_from_parts_rebuilds_identical_model(fresh_on, device):
    m = trained_net().to(device)
    c = wsq.compress(m, 16)
    with torch.device(device if fresh_on == "cpu" else fresh_on):
        fresh = Net().eval()
    fresh_state = copy.deepcopy(fresh.state_dict())
    d = wsq.Compressed.from_parts(fresh, *_parts(c), k=16)
    assert state_equal(fresh.state_dict(), fresh_state) if fresh_on == "cpu" else True
    assert d.k == 16 and d.lo is None and torch.equal(d.codebook, c.codebook)
    assert state_equal(d.model.state_dict(), c.model.state_dict())
    x = torch.randn(3, 3, 9, 9, device=device)
    assert torch.equal(d.model(x), c.model(x))
    assert d.model.training is False


def test_from_parts_name_and_shape_errors():
    m = trained_net()
    c = wsq.compress(m, 16)
    cb, bits, packed, rest = _parts(c)
    fresh = Net()
    with pytest.raises(wsq.FormatError, match=r"missing: fc.weight.*unexpected: fc.w"):
        p2 = dict(packed)
        p2["fc.w"] = p2.pop("fc.weight")
        wsq.Compressed.from_parts(fresh, cb, bits, p2, rest)
    with pytest.raises(wsq.FormatError, match=r"missing: bn.running_var"):
        r2 = dict(rest)
        del r2["bn.running_var"]
        wsq.Compressed.from_parts(fresh, cb, bits, packed, r2)
    with pytest.raises(wsq.FormatError, match=r"unexpected: extra"):
        wsq.Compressed.from_parts(fresh, cb, bits, packed, {**rest, "extra": torch.zeros(1)})
    with pytest.raises(wsq.FormatError, match="conv.weight: 10 bytes"):
        wsq.Compressed.from_parts(
            fresh, cb, bits, {**packed, "conv.weight": packed["conv.weight"][:10]}, rest
        )
    with pytest.raises(wsq.FormatError, match=r"bn.bias: shape \(7,\)"):
        wsq.Compressed.from_parts(fresh, cb, bits, packed, {**rest, "bn.bias": torch.zeros(7)})
    with pytest.raises(wsq.FormatError, match="codebook has 16 entries"):
        wsq.Compressed.from_parts(fresh, cb, 3, packed, rest)
    with pytest.raises(wsq.FormatError, match="NaN"):
        wsq.Compressed.from_parts(fresh, torch.full((4,), math.nan), bits, packed, rest)


def test_from_parts_meta_with_nonpersistent_buffer_is_refused():
    class WithPos(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.register_buffer("pos", torch.arange(4.0), persistent=False)

    c = wsq.compress(WithPos(), 8)
    with torch.device("meta"):
        fresh = WithPos()
    with pytest.raises(ValueError, match="pos"):
        wsq.Compressed.from_parts(fresh, *_parts(c))


# ----------------------------------------------------------------------------- stats


def test_stats_counts_and_sizes(device):
    m = trained_net()
    m.steps = nn.Parameter(torch.arange(6, dtype=torch.int64), requires_grad=False)
    m = m.to(device)
    c = wsq.compress(m, 16)
    idx, cb, counts = reference.uniform_bins(collect_pool(m).flat(), 16)
    counts = counts.cpu()
    assert torch.equal(c.index_counts(), counts)
    p = counts.double() / counts.sum()
    s = c.stats()
    assert s["n_weights"] == 256 and s["n_bins"] == cb.numel() and s["bits_fixed"] == c.bits
    assert s["entropy_bound"] == pytest.approx(float(-(p * p.log2()).sum()))
    assert s["n_skipped"] == 1 and s["skipped"] == ["steps"]
    dense = sum(t.numel() * t.element_size() for t in m.state_dict().values())
    assert s["original_bytes"] == dense
    assert s["cr"] == pytest.approx(s["original_bytes"] / s["file_bytes"])
    assert s["bits_entropy"] >= s["entropy_bound"] - 1e-9
    packed = sum(q.packed.numel() for q in c.quantized.values())
    table = sum(4 << q.bits for q in c.quantized.values())
    assert s["param_bytes_compressed"] == dense - 256 * 4 + packed + table
    assert s["param_bytes_dense"] == dense
    assert s["bits_memory"] == 8 * (packed + table) / 256
    assert s["cr_memory"] == dense / s["param_bytes_compressed"]
    want: dict[int, int] = {}
    for q in c.quantized.values():
        want[q.bits] = want.get(q.bits, 0) + q.numel
    assert s["widths"] == want


def test_stats_file_bytes_equal_saved_file(tmp_path):
    c = wsq.compress(trained_net(), 16)
    for coder in ("auto", "ans", "huffman"):
        path = tmp_path / f"m_{coder}.wsq"
        wsq.save(c, path, coder=coder)
        assert c.stats(coder)["file_bytes"] == path.stat().st_size


# ----------------------------------------------------------------------------- bad inputs


def test_no_eligible_parameters():
    with pytest.raises(ValueError, match="no eligible parameters"):
        wsq.compress(nn.Sequential(nn.LayerNorm(4), nn.ReLU()), 8)
    with pytest.raises(ValueError, match="no eligible parameters"):
        wsq.compress(nn.ReLU(), 8)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_inf_named(bad):
    m = trained_net()
    with torch.no_grad():
        m.fc.weight[1, 2] = bad
    with pytest.raises(ValueError, match=r"parameter fc.weight contains NaN or Inf"):
        wsq.compress(m, 8)


def test_fp16_overflowing_float64_named():
    m = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3)).double()
    with torch.no_grad():
        m[1].weight[0, 0] = 1e300  # finite in float64, Inf in the float32 pool
    with pytest.raises(ValueError, match=r"parameter 1.weight"):
        wsq.compress(m, 8)


def test_meta_parameters_refused():
    with torch.device("meta"):
        m = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    with pytest.raises(ValueError, match=r"meta device.*0.weight"):
        wsq.compress(m, 8)


def test_lazy_parameters_refused():
    with pytest.raises(ValueError, match=r"0.weight.*not initialised"):
        wsq.compress(nn.Sequential(nn.LazyLinear(3), nn.Linear(3, 3)), 8)


@pytest.mark.parametrize("k", [-1, 0, 1, 65537])
def test_k_out_of_range(k):
    with pytest.raises(ValueError, match="k must be in 2..65536"):
        wsq.compress(nn.Linear(3, 3), k)


@pytest.mark.parametrize("k", [2.0, True, "8", None])
def test_k_wrong_type(k):
    with pytest.raises(TypeError, match="method must be a wsq method object .* or an int k"):
        wsq.compress(nn.Linear(3, 3), k)


def test_k_extremes(device):
    m = nn.Linear(40, 30).to(device)
    c = wsq.compress(m, 2)
    assert c.codebook.numel() == 2 and c.bits == 1
    c = wsq.compress(m, 65536)
    assert 1000 < c.codebook.numel() <= 1200 and c.bits == 11
    err = (c.model.weight - m.weight.detach()).abs().max()
    assert err <= (c.hi - c.lo) / 65536  # within one bin width of the original


def test_with_indices_builds_independent_model():
    emb = nn.Embedding(30, 8)
    head = nn.Linear(8, 30)
    head.weight = emb.weight
    m = nn.Sequential(emb, nn.Linear(8, 8), head)
    c = wsq.compress(m, 32)
    n = c.codebook.numel()
    table = torch.arange(n, dtype=torch.int32) // 2  # merge neighbouring pairs
    new_n = (n + 1) // 2
    cb = torch.stack([c.codebook[2 * i : 2 * i + 2].mean() for i in range(new_n)])
    bits = reference.bits_for(new_n)
    packed = {
        name: ops.remap_packed(c.global_packed(name), q.numel, c.bits, table, bits)
        for name, q in c.quantized.items()
    }
    before = {k: v.clone() for k, v in c.model.state_dict().items()}
    d = c.with_indices(cb, bits, packed)
    assert state_equal(c.model.state_dict(), before)  # the source is untouched
    assert d.bits == bits and torch.equal(d.codebook, cb)
    for name, q in c.quantized.items():
        old_idx = reference.unpack(c.global_packed(name), q.numel, c.bits)
        want = cb[table[old_idx].long()].view(q.shape)
        assert torch.equal(d.dequantized_state_dict()[name], want)
    assert d.model[0].weight_packed is d.model[2].weight_packed  # ties kept
    assert d.model[0].weight_table is d.model[2].weight_table
    assert d.model[1].bias is not c.model[1].bias and torch.equal(d.model[1].bias, c.model[1].bias)
    assert d.model[1]._wsq_state is not c.model[1]._wsq_state
    assert d.model[1].weight_table is not c.model[1].weight_table
    x = torch.randint(0, 30, (2, 3))
    ref = copy.deepcopy(m)
    ref.load_state_dict(d.dequantized_state_dict())
    torch.testing.assert_close(d.model(x), ref(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(wsq.FormatError, match="missing: 1.weight"):
        d.with_indices(cb, bits, {"0.weight": packed["0.weight"]})
    with pytest.raises(wsq.FormatError, match="1.weight: packed indices must be"):
        d.with_indices(cb, bits, {**packed, "1.weight": packed["1.weight"][:-1]})
