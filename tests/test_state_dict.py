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


def _layers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every compressed layer's output on fixed inputs, loaded or not (what a load may change)."""
    g = torch.Generator().manual_seed(3)
    return {
        "0": model[0](X),
        "1": model[1](torch.randn(3, 16, generator=g)),
        "3": model[3](torch.randn(2, 4, 8, generator=g)),
        "6": model[6](torch.randn(3, 32, generator=g)),
        "7": model[7](torch.randn(3, 16, generator=g)),
    }


def _same(a: dict, b: dict) -> list[str]:
    return [k for k in a if not torch.equal(a[k], b[k])]


def test_round_trip_into_another_compressed_model_is_exact():
    src, dst = _pair()
    want = _forward(src.model, X)
    assert not torch.equal(_forward(dst.model, X), want)
    sd = src.model.state_dict()
    assert "1.weight_table" in sd and "1.weight_packed" in sd  # values travel with the indices
    res = dst.model.load_state_dict(sd)
    assert not res.missing_keys and not res.unexpected_keys
    assert torch.equal(_forward(dst.model, X), want)
    assert _same(_layers(dst.model), _layers(src.model)) == []
    # every weight, the codebook and the stats agree with the source
    assert torch.equal(dst.codebook, src.codebook)
    for k, v in src.model.state_dict().items():
        assert torch.equal(dst.model.state_dict()[k].nan_to_num(), v.nan_to_num()), k
    assert list(dst.model.state_dict()) == list(sd)  # key order unchanged by the load
    assert dst.model[0].weight_table is dst.model[7].weight_table  # ties kept
    # sizes computed before the load are not served stale (file_bytes may differ by the header's
    # binning range, which the load drops: dst.k/lo/hi described dst's old codebook)
    for key in ("n_bins", "bits_fixed", "bits_entropy", "bits_memory", "widths"):
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
    a, b = wsq.load_state_dict(tmp_path / "a.wsq"), wsq.load_state_dict(tmp_path / "b.wsq")
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_self_round_trip_and_submodule():
    src, _ = _pair()
    before = _forward(src.model, X)
    sd = {k: v.clone() for k, v in src.model.state_dict().items()}
    src.model.load_state_dict(sd)
    assert torch.equal(_forward(src.model, X), before)
    # a submodule's own state dict carries its values too
    _, dst = _pair()
    dst.model[1].load_state_dict(src.model[1].state_dict())
    h = torch.randn(3, 16)
    assert torch.equal(dst.model[1](h), src.model[1](h))


@pytest.mark.parametrize("how", ["submodule", "strict=False"])
def test_partial_load_changes_only_the_named_layer(how, tmp_path):
    # one layer of another model (another codebook): that layer becomes the source's layer
    # exactly, and every other layer stays bit-identical (there is no shared state to leak)
    src, dst = _pair()
    before = _layers(dst.model)
    if how == "submodule":
        dst.model[6].load_state_dict(src.model[6].state_dict())
    else:
        part = {k: v for k, v in src.model.state_dict().items() if k.startswith("6.")}
        res = dst.model.load_state_dict(part, strict=False)
        assert "1.weight_packed" in res.missing_keys and not res.unexpected_keys
    after = _layers(dst.model)
    assert _same(after, before) == ["6"]
    assert torch.equal(after["6"], _layers(src.model)["6"])
    # the model's codebook now holds both models' values; a save -> load keeps every layer
    assert dst.stats()["n_bins"] == dst.codebook.numel() > src.codebook.numel()
    wsq.save(dst, tmp_path / "mixed.wsq")
    again = wsq.load(tmp_path / "mixed.wsq", _net())
    assert _same(_layers(again.model), after) == []


def test_width_changes_with_the_load():
    # the source holds its layers at other widths: the buffers are resized in place, ties kept
    src, dst = _pair(k_src=40, k_dst=200)
    assert src.widths() != dst.widths()
    dst.model.load_state_dict(src.model.state_dict())
    assert dst.widths() == src.widths()
    assert _same(_layers(dst.model), _layers(src.model)) == []
    assert dst.model[0].weight_packed is dst.model[7].weight_packed


def test_indices_without_their_table_raise_even_non_strict():
    src, dst = _pair()
    before = _layers(dst.model)
    sd = {k: v for k, v in src.model.state_dict().items() if k != "6.weight_table"}
    with pytest.raises(RuntimeError, match="6.weight_packed but no 6.weight_table"):
        dst.model.load_state_dict(sd, strict=False)
    assert _same(_layers(dst.model), before) == ["0", "1", "3", "7"]  # 6 was not touched
    sd = {k: v for k, v in src.model.state_dict().items() if k != "6.weight_packed"}
    with pytest.raises(RuntimeError, match="6.weight_table but no 6.weight_packed"):
        dst.model.load_state_dict(sd)


@pytest.mark.parametrize(
    "key, defect, match",
    [
        ("6.weight_table", lambda t: t.double(), "float32"),
        ("6.weight_table", lambda t: t[:-1], "2\\*\\*b entries"),
        ("6.weight_table", lambda t: torch.full_like(t, float("nan")), "not a wsq table"),
        ("6.weight_table", lambda t: t.nan_to_num(7.0).flip(0), "not a wsq table"),
        ("6.weight_table", lambda t: torch.where(torch.arange(t.numel()) == 1, float("inf"), t), "not a wsq table"),
        ("6.weight_table", lambda t: torch.cat([t, torch.full_like(t, float("nan"))]), "need"),
        ("6.weight_packed", lambda t: t[:-1], "need"),
        ("6.weight_packed", lambda t: t.to(torch.int16), "uint8"),
        ("6.weight_packed", lambda t: torch.full_like(t, 255), "beyond the"),
    ],
)  # fmt: skip
def test_malformed_pair_raises_and_leaves_the_layer(key, defect, match):
    src, dst = _pair(k_src=20)
    sd = dict(src.model.state_dict())
    sd[key] = defect(sd[key])
    if key == "6.weight_packed" and match == "beyond the":
        n = int((~torch.isnan(sd["6.weight_table"])).sum())
        assert n < sd["6.weight_table"].numel(), "needs a table with NaN padding"
    before = _layers(dst.model)
    with pytest.raises(RuntimeError, match=match):
        dst.model.load_state_dict(sd)
    assert torch.equal(_layers(dst.model)["6"], before["6"])  # nothing of layer 6 loaded


def test_entropy_reachable_without_loading_native():
    code = (
        "import sys, wsq; assert 'wsq._C' not in sys.modules; "
        "assert callable(wsq.entropy.encode); assert 'wsq._C' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
