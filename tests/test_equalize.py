"""wsq.equalize: per-output-channel range equalization folded into the following BatchNorm leaves
the model's function unchanged (eval mode, float rounding), handles Conv2d, depthwise Conv2d and
Linear + BatchNorm, and leaves alone what it cannot fold exactly."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import wsq
from wsq.core.equalize import equalize, find_pairs

torch.manual_seed(0)


def _randomize_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            with torch.no_grad():
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g))
                m.running_mean.copy_(torch.randn(n, generator=g))
                m.running_var.copy_(torch.rand(n, generator=g) + 0.1)
    return model.eval()


def _spread(model: nn.Module) -> nn.Module:
    """Give each output channel of every Conv/Linear a different range (factor up to ~50)."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                f = torch.exp(torch.empty(m.weight.shape[0]).uniform_(-2, 2, generator=g))
                m.weight.mul_(f.view(-1, *([1] * (m.weight.dim() - 1))))
    return model


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)  # depthwise
        self.bn_dw = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 16, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 12)
        self.bn_fc = nn.BatchNorm1d(12)
        self.head = nn.Linear(12, 5)  # no BatchNorm after it

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = nn.functional.relu6(self.bn_dw(self.dw(x)))
        x = self.bn_pw(self.pw(x))
        x = torch.relu(self.bn_fc(self.fc(x.mean((2, 3)))))
        return self.head(x)


class SharedOutput(nn.Module):
    """conv's output feeds its BatchNorm AND a residual sum: rescaling it would change the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        z = self.bn(y) + y
        return self.bn2(self.conv2(z))


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("stat", ["max", "std"])
def test_function_unchanged_conv_depthwise_linear(stat):
    model = _spread(_randomize_bn(ConvNet()))
    x = torch.randn(4, 3, 10, 10)
    with torch.no_grad():
        ref = model(x)
    eq, info = equalize(model, x[:1], stat=stat)
    assert {p[0] for p in info["pairs"]} == {"conv", "dw", "pw", "fc"}
    assert dict(info["left"]) == {"head": "no BatchNorm takes its output directly"}
    with torch.no_grad():
        got = eq(x)
    assert _close(got, ref) < 1e-5
    # every folded channel now has the same range; the head is left alone (bit for bit)
    for name in ("conv", "dw", "pw", "fc"):
        w = getattr(eq, name).weight.detach().reshape(getattr(eq, name).weight.shape[0], -1)
        r = w.abs().amax(1) if stat == "max" else w.pow(2).mean(1).sqrt()
        assert torch.allclose(r, torch.full_like(r, info["target"]), rtol=1e-5)
    assert torch.equal(eq.head.weight, model.head.weight)
    assert torch.equal(eq.head.bias, model.head.bias)
    # the input model is untouched
    with torch.no_grad():
        assert torch.equal(model(x), ref)


def test_conv_bias_and_inplace():
    model = _spread(_randomize_bn(ConvNet()))
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        ref = model(x)
    bias = model.conv.bias.detach().clone()
    out, info = equalize(model, x, inplace=True)
    assert out is model
    s = info["scales"]["conv"]
    assert torch.allclose(model.conv.bias.detach(), bias / s)
    with torch.no_grad():
        assert _close(model(x), ref) < 1e-5


def test_shared_output_left_alone():
    model = _randomize_bn(SharedOutput())
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        ref = model(x)
    pairs, _ = find_pairs(model, x)
    assert ("conv", "bn") in pairs  # hooks alone cannot see the residual use...
    eq, info = equalize(model, x)
    assert info["pairs"] == [("conv2", "bn2")]  # ...the verification drops it
    assert "conv" in dict(info["left"])
    assert torch.equal(eq.conv.weight, model.conv.weight)
    with torch.no_grad():
        assert _close(eq(x), ref) < 1e-5


def test_non_affine_and_train_flags():
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3, affine=False), nn.ReLU())
    model.train()
    eq, info = equalize(model, torch.randn(1, 2, 3, 3))
    assert info["pairs"] == []
    assert dict(info["left"])["0"] == "BatchNorm without affine weights"
    assert all(m.training for m in eq.modules())  # flags restored


def test_compressed_equalized_file_round_trip(tmp_path):
    model = _spread(_randomize_bn(ConvNet()))
    x = torch.randn(3, 3, 8, 8)
    eq, _ = equalize(model, x[:1])
    c = wsq.compress(eq, 256)
    path = os.path.join(tmp_path, "m.wsq")
    wsq.save(c, path)
    back = wsq.load(path, ConvNet().eval())  # the file holds the folded BatchNorm entries
    with torch.no_grad():
        assert torch.allclose(back.model(x), c.model(x), atol=1e-5)


def test_equalize_helps_one_codebook():
    model = _spread(_randomize_bn(ConvNet()))
    x = torch.randn(16, 3, 8, 8)
    eq, _ = equalize(model, x[:1])
    with torch.no_grad():
        ref = model(x)
        err_plain = _close(wsq.compress(model, 16).model(x), ref)
        err_eq = _close(wsq.compress(eq, 16).model(x), ref)
    assert err_eq < err_plain


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"stat": "mean"}, "stat"),
        ({"target": -1.0}, "target"),
        ({"target": float("nan")}, "target"),
        ({"rtol": 0}, "rtol"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        equalize(ConvNet().eval(), torch.randn(1, 3, 4, 4), **kwargs)


def test_bad_model_and_inplace():
    with pytest.raises(TypeError, match="model"):
        equalize("not a model", torch.randn(1))
    with pytest.raises(TypeError, match="inplace"):
        equalize(ConvNet().eval(), torch.randn(1, 3, 4, 4), inplace=1)


def test_correct_bias_removes_the_mean_shift_and_is_saved(tmp_path):
    from wsq.core.equalize import correct_bias

    model = _spread(_randomize_bn(ConvNet()))
    x = torch.randn(64, 3, 8, 8) + 0.5  # a non-zero input mean: dW x has a mean to remove
    eq, _ = equalize(model, x[:1])
    c = wsq.compress(eq, 12)
    kl = wsq.metrics.kl(eq, x)
    before = kl(c.model)
    info = correct_bias(c.model, eq, x)
    assert ("conv", "bn") in info["layers"] and ("head", "bias") in info["layers"]
    assert info["largest"] > 0
    assert kl(c.model) > before  # -KL: closer to the reference
    # the head's own shift (its quantized weights on the inputs they receive) is (nearly) gone
    from wsq.core.equalize import _own_shifts

    c2 = wsq.compress(eq, 12)
    first = float(_own_shifts(c2.model, eq, ["head"], x, 64)["head"].abs().max())
    left = float(_own_shifts(c.model, eq, ["head"], x, 64)["head"].abs().max())
    assert left < first / 5
    with pytest.raises(ValueError, match="passes"):
        correct_bias(c.model, eq, x, passes=0)
    path = os.path.join(tmp_path, "b.wsq")
    wsq.save(c, path)
    back = wsq.load(path, ConvNet().eval())  # the corrected BatchNorm means and bias are in it
    with torch.no_grad():
        assert torch.allclose(back.model(x), c.model(x), atol=1e-5)


def test_tune_equalized_meets_the_tolerance():
    model = _spread(_randomize_bn(ConvNet()))
    x = torch.randn(32, 3, 8, 8)
    evaluate = wsq.metrics.kl(model, x)
    c = wsq.tune_equalized(model, evaluate, x, tolerance=0.02, iters=4)
    info = c.tune_info
    assert info["metric"] >= -0.02 and evaluate(c.model) >= -0.02
    assert len(info["equalize"]["pairs"]) == 4 and info["bias"]["layers"]
    assert info["evaluations"] == 1 + 5 + 4  # baseline, one probe per pooled tensor, the tuning
    with pytest.raises(ValueError, match="tolerance"):
        wsq.tune_equalized(model, evaluate, x, tolerance=-1)
    with pytest.raises(ValueError, match="inputs"):
        wsq.tune_equalized(model, evaluate, x[:0], tolerance=0.1)
    with pytest.raises(TypeError, match="bias"):
        wsq.tune_equalized(model, evaluate, x, tolerance=0.1, bias=1)
