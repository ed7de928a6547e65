"""Per-tensor runtime widths: each compressed tensor is held at the narrowest width for the values it
uses, with its own table (a gather of the one shared codebook), and computes exactly what the
single-width model (every tensor indexing the whole codebook at ceil(log2 n) bits) computes.

The model below has one Linear layer per width 1..16 plus an Embedding and a Conv2d: the weights of
the width-w layer take exactly m(w) distinct values (2**(w-1) + 1, so they need w bits), each value
at the centre of its own bin of a 65536-bin grid over [-1, 1], so wsq.compress(k=65536) keeps every
value as its own codebook entry. The Linear layers are wide enough (737..1292 inputs, rows not
starting on byte boundaries, streams longer than the SIMD decoders' 64-byte reads) that every part
of the fused kernels runs: whole steps in registers, the masked last vectors, the stream's last
bytes, and K chunks at small batches. The kernels sum in one order at every width, so the outputs
are compared bit for bit at every ISA level and batch.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import wsq
from wsq import reference
from wsq.kernels import ops

K = 65536
WIDTHS = range(1, 17)


def _values(w: int) -> int:
    return 2 if w == 1 else (1 << (w - 1)) + 1


def _shape(w: int) -> tuple[int, int]:
    m = _values(w)
    cols = 700 + 37 * w  # odd for odd w: no layer is a multiple of a SIMD block
    return -(-m // cols) + 1, cols


CENTRES = -1 + (torch.arange(K, dtype=torch.float64) + 0.5) * (2.0 / K)  # one per bin


def _weights(m: int, numel: int, g: torch.Generator) -> torch.Tensor:
    pick = torch.linspace(0, K - 1, m, dtype=torch.float64).round().long()
    vals = CENTRES[pick].float()
    idx = torch.cat([torch.arange(m), torch.randint(0, m, (numel - m,), generator=g)])
    return vals[idx[torch.randperm(numel, generator=g)]]


class Net(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fcs = nn.ModuleList()
        for w in WIDTHS:
            out, cols = _shape(w)
            fc = nn.Linear(cols, out)
            with torch.no_grad():
                fc.weight.copy_(_weights(_values(w), out * cols, g).view(out, cols))
            self.fcs.append(fc)
        self.emb = nn.Embedding(37, 7)
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        with torch.no_grad():
            self.emb.weight.copy_(_weights(9, 37 * 7, g).view(37, 7))  # 4 bits
            self.conv.weight.copy_(_weights(33, 135, g).view(5, 3, 3, 3))  # 6 bits

    def outputs(self, batch: int, seed: int = 1) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        outs = [fc(torch.randn(batch, fc.in_features, generator=g)) for fc in self.fcs]
        outs.append(self.emb(torch.randint(0, 37, (batch, 3), generator=g)))
        outs.append(self.conv(torch.randn(batch, 3, 6, 5, generator=g)))
        return outs


def _expected_widths() -> dict[str, int]:
    want = {f"fcs.{i}.weight": w for i, w in enumerate(WIDTHS)}
    return want | {"emb.weight": 4, "conv.weight": 6}


@pytest.fixture(scope="module")
def compressed():
    with torch.no_grad():
        c = wsq.compress(Net(), wsq.Uniform(k=K, lo=-1.0, hi=1.0))
    return c


def _single_width_weight(c: wsq.Compressed, name: str) -> torch.Tensor:
    """The weight as the single-width model holds it: the codebook indexed at c.bits."""
    q = c.quantized[name]
    idx = reference.unpack(c.global_packed(name), q.numel, c.bits).long()
    return c.codebook[idx].view(q.shape)


def test_every_tensor_at_the_width_its_values_need(compressed):
    c = compressed
    assert c.bits == 16 and c.widths() == _expected_widths()
    for name, q in c.quantized.items():
        n = int((~torch.isnan(q.table)).sum())
        assert q.bits == reference.bits_for(n) and q.table.numel() == 1 << q.bits
        # its table is a gather of the shared codebook, and the weights are bit-identical
        assert bool(torch.isin(q.table[:n], c.codebook).all())
        assert torch.equal(c.model.get_submodule(name[:-7]).weight, _single_width_weight(c, name))


def test_in_memory_bytes_are_each_tensor_at_its_width(compressed):
    c = compressed
    s = c.stats()
    lut = sum(ops.packed_bytes(q.numel, q.bits) + (4 << q.bits) for q in c.quantized.values())
    assert s["bits_memory"] == 8 * lut / c.n_weights
    want = _expected_widths()
    for name, q in c.quantized.items():
        assert q.packed.numel() == ops.packed_bytes(q.numel, want[name]), name
    rest = sum(t.numel() * t.element_size() for t in c.rest_state().values())
    assert s["param_bytes_compressed"] == lut + rest
    assert s["widths"] == {
        w: sum(c.quantized[n].numel for n, b in c.widths().items() if b == w)
        for w in sorted(set(c.widths().values()))
    }


@pytest.mark.parametrize("batch", [1, 2, 5, 70])
def test_outputs_equal_the_single_width_model(compressed, isa, batch):
    # the single-width model: every Linear through the same kernel with the whole codebook's
    # table at 16 bits; Embedding/Conv through their dense equivalents of the same weights
    c = compressed
    table = ops.lut_table(c.codebook, c.bits)
    got = c.model.outputs(batch)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for i, fc in enumerate(c.model.fcs):
            x = torch.randn(batch, fc.in_features, generator=g)
            name = f"fcs.{i}.weight"
            want = ops.lut_matmul(x, c.global_packed(name), fc.out_features, c.bits, table, fc.bias)
            assert torch.equal(got[i], want), (name, c.widths()[name], isa, batch)
        ids = torch.randint(0, 37, (batch, 3), generator=g)
        assert torch.equal(got[-2], F.embedding(ids, _single_width_weight(c, "emb.weight")))
        x = torch.randn(batch, 3, 6, 5, generator=g)
        w = _single_width_weight(c, "conv.weight")
        assert torch.equal(got[-1], F.conv2d(x, w, c.model.conv.bias, padding=1))


@pytest.mark.parametrize("batch", [1, 2, 5, 70])
def test_a_tensor_computes_the_same_at_every_width_it_fits(compressed, isa, batch):
    # each Linear's own values held at its own width and at every wider one (its table padded
    # with NaN): one result, bit for bit, from every kernel; x strided, as a transposed input is
    c = compressed
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for i, fc in enumerate(c.model.fcs):
            q = c.quantized[f"fcs.{i}.weight"]
            values = q.table[: int((~torch.isnan(q.table)).sum())]
            idx = reference.unpack(q.packed, q.numel, q.bits)
            x = torch.randn(batch, fc.in_features + 5, generator=g)[:, 2 : 2 + fc.in_features]
            assert batch == 1 or not x.is_contiguous()
            outs = [
                ops.lut_matmul(
                    x, ops.pack(idx, b), fc.out_features, b, ops.lut_table(values, b), fc.bias
                )
                for b in range(q.bits, 17)
            ]
            assert all(torch.equal(o, outs[0]) for o in outs[1:]), (i, q.bits, isa, batch)


def test_save_load_and_state_dict_keep_every_width_and_output(compressed, tmp_path):
    c = compressed
    want = c.model.outputs(3)
    wsq.save(c, tmp_path / "w.wsq")
    loaded = wsq.load(tmp_path / "w.wsq", Net(seed=5))
    assert loaded.widths() == c.widths()
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.outputs(3), want, strict=True))
    # into a fresh compressed model of the same architecture (other values, other widths)
    other = Net(seed=9)
    with torch.no_grad():
        for fc in other.fcs:
            fc.weight.mul_(0.5)
    fresh = wsq.compress(other, 300)
    assert fresh.widths() != c.widths()
    fresh.model.load_state_dict(c.model.state_dict())
    assert fresh.widths() == c.widths() and torch.equal(fresh.codebook, c.codebook)
    assert all(torch.equal(a, b) for a, b in zip(fresh.model.outputs(3), want, strict=True))
    wsq.save(fresh, tmp_path / "again.wsq")
    again = wsq.load(tmp_path / "again.wsq", Net())
    assert all(torch.equal(a, b) for a, b in zip(again.model.outputs(3), want, strict=True))


def test_merge_narrows_each_tensor():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(24, 40), nn.ReLU(), nn.Linear(40, 8))
    c = wsq.compress(m, 256)
    merged = wsq.merge(c, lambda model: 1.0, baseline=1.0)  # every merge passes: one value left
    assert merged.codebook.numel() == 1 and set(merged.widths().values()) == {1}
    x = torch.randn(4, 24)
    dense = copy.deepcopy(m)
    dense.load_state_dict(merged.dequantized_state_dict())
    torch.testing.assert_close(merged.model(x), dense(x))
