"""state_dict() / load_state_dict() of a compressed model: the codebook travels with the indices.

Packed indices mean nothing without the codebook they index; a state dict that left the codebook out
loaded "cleanly" into another compressed model and silently computed with the wrong values.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import wsq


def _net() -> nn.Module:
    torch.manual_seed(1)
    emb = nn.Embedding(50, 16)
    head = nn.Linear(16, 50, bias=False)
    head.weight = emb.weight  # tied: one packed tensor shared by two modules
    return nn.Sequential(
        emb,
        nn.Linear(16, 32),
        nn.ReLU(),
        nn.Conv1d(4, 4, 3, padding=1),
        nn.Flatten(),
        nn.LayerNorm(32),
        nn.Linear(32, 16),
        head,
    )


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    h = model[1](model[0](x)).relu()  # (b, 32)
    h = model[4](model[3](h.view(-1, 4, 8)))
    return model[7](model[6](model[5](h)))


X = torch.randint(0, 50, (5,))


def _pair(k_src: int = 40, k_dst: int = 40):
    src = wsq.compress(_net(), k_src)
    other = _net()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.7).add_(0.05)  # another model of the same architecture: another codebook
    dst = wsq.compress(other, k_dst)
    dst.stats()  # fills dst's size cache, which a load must invalidate
    return src, dst


def test_round_trip_into_another_compressed_model_is_exact():
    src, dst = _pair()
    want = _forward(src.model, X)
    assert not torch.equal(_forward(dst.model, X), want)
    sd = src.model.state_dict()
    assert any(k.endswith("wsq_table") for k in sd)  # the codebook is part of the state dict
    res = dst.model.load_state_dict(sd)
    assert not res.missing_keys and not res.unexpected_keys
    assert torch.equal(_forward(dst.model, X), want)
    # every weight, the shared codebook object and the stats agree with the source
    assert torch.equal(dst.codebook, src.codebook)
    for k, v in src.model.state_dict().items():
        assert torch.equal(dst.model.state_dict()[k].nan_to_num(), v.nan_to_num()), k
    # the table stays ONE tensor shared by every module after the load
    tables = {id(m._buffers["wsq_table"]) for m in dst.model.modules() if wsq.nn.is_quantized(m)}
    assert len(tables) == 1
    # sizes computed before the load are not served stale (file_bytes may differ by the header's
    # binning range, which the load drops: dst.k/lo/hi described dst's old codebook)
    for key in ("n_bins", "bits_fixed", "bits_entropy"):
        assert dst.stats()[key] == src.stats()[key], key
    assert dst.k is None and dst.lo is None


def test_round_trip_after_save_load(tmp_path):
    src, dst = _pair()
    wsq.save(src, tmp_path / "a.wsq")
    loaded = wsq.load(tmp_path / "a.wsq", _net())
    dst.model.load_state_dict(loaded.model.state_dict())
    assert torch.equal(_forward(dst.model, X), _forward(src.model, X))
    wsq.save(dst, tmp_path / "b.wsq")  # the loaded object saves what it now computes
    again = wsq.load(tmp_path / "b.wsq", _net())
    assert torch.equal(_forward(again.model, X), _forward(src.model, X))


def test_self_round_trip_and_submodule():
    src, _ = _pair()
    before = _forward(src.model, X)
    sd = {k: v.clone() for k, v in src.model.state_dict().items()}
    src.model.load_state_dict(sd)
    assert torch.equal(_forward(src.model, X), before)
    # a submodule's own state dict carries the codebook too
    _, dst = _pair()
    dst.model[1].load_state_dict(src.model[1].state_dict())
    h = torch.randn(3, 16)
    assert torch.equal(dst.model[1](h), src.model[1](h))


def test_bit_width_mismatch_raises():
    src, dst = _pair(k_src=40, k_dst=200)  # 6-bit vs 8-bit indices
    assert src.bits != dst.bits
    with pytest.raises(ValueError, match=r"wsq_table.*bit"):
        dst.model.load_state_dict(src.model.state_dict())
    with pytest.raises(ValueError, match=r"wsq_table.*bit"):
        dst.model.load_state_dict(src.model.state_dict(), strict=False)


def test_missing_codebook_raises_even_non_strict():
    src, dst = _pair()
    sd = {k: v for k, v in src.model.state_dict().items() if not k.endswith("wsq_table")}
    with pytest.raises(ValueError, match="codebook"):
        dst.model.load_state_dict(sd, strict=False)
    with pytest.raises((ValueError, RuntimeError), match="wsq_table"):
        dst.model.load_state_dict(sd)


def test_inconsistent_codebooks_raise():
    src, dst = _pair()
    sd = dict(src.model.state_dict())
    # one layer's table from another model (a copy: dst's own table is overwritten as it loads)
    sd["6.wsq_table"] = dst.model.state_dict()["6.wsq_table"].clone()
    with pytest.raises(ValueError, match="differs"):
        dst.model.load_state_dict(sd)


@pytest.mark.parametrize(
    "defect, match",
    [
        (lambda t: t.double(), "float32"),
        (lambda t: t[:-1], "bit"),
        (lambda t: torch.full_like(t, float("nan")), "codebook"),
        (lambda t: torch.cat([t[:3], torch.full_like(t[3:4], float("nan")), t[4:]]), "codebook"),
        (lambda t: t.nan_to_num(7.0).flip(0), "codebook"),
        (lambda t: torch.where(torch.arange(t.numel()) == 1, float("inf"), t), "codebook"),
    ],
)
def test_malformed_codebook_raises(defect, match):
    src, dst = _pair()
    sd = dict(src.model.state_dict())
    for k in sd:
        if k.endswith("wsq_table"):
            sd[k] = defect(sd[k])
    before = _forward(dst.model, X)
    with pytest.raises(ValueError, match=match):
        dst.model.load_state_dict(sd)
    assert torch.equal(_forward(dst.model, X), before)  # the first defect stops before any copy


def test_entropy_reachable_without_loading_native():
    code = (
        "import sys, wsq; assert 'wsq._C' not in sys.modules; "
        "assert callable(wsq.entropy.encode); assert 'wsq._C' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
