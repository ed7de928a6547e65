"""wsq.metrics: built-in evaluators on a tiny model, checked against hand computations."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wsq import metrics


class Probe(nn.Module):
    """A linear classifier that records grad mode and training flag at every forward."""

    def __init__(self, seed: int = 0, d: int = 6, k: int = 4) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(d, k)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(k, d, generator=g))
            self.lin.bias.copy_(torch.randn(k, generator=g))
        self.drop = nn.Dropout(0.5)
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.seen.append((torch.is_grad_enabled(), self.training))
        return self.drop(self.lin(x))


def _data(n: int = 50, d: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, 4, (n,), generator=g)


def test_accuracy_tensors_and_loader_agree_with_hand_count():
    x, y = _data()
    model = Probe().eval()
    with torch.no_grad():
        want = int((model.lin(x).argmax(1) == y).sum()) / len(y)
    ev = metrics.accuracy((x, y), batch_size=7)
    assert ev(model) == pytest.approx(want, abs=1e-12)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    assert metrics.accuracy(loader)(model) == pytest.approx(want, abs=1e-12)
    assert 0.0 < want < 1.0  # the test can tell right from wrong


def test_eval_mode_no_grad_and_modes_restored():
    x, y = _data()
    model = Probe()
    model.train()
    model.drop.eval()  # mixed modes must come back exactly as they were
    ev = metrics.accuracy((x, y), batch_size=20)
    first = ev(model)
    assert ev(model) == first  # dropout off: deterministic
    assert all(g is False and t is False for g, t in model.seen)
    assert model.training is True and model.lin.training is True and model.drop.training is False
    assert torch.is_grad_enabled()


def test_agreement_against_itself_and_a_permuted_head():
    x, _ = _data(40)
    ref = Probe(0).eval()
    ev = metrics.agreement(ref, x, batch_size=9)
    assert ev(ref) == 1.0
    other = Probe(0).eval()
    with torch.no_grad():
        other.lin.weight.copy_(other.lin.weight[[1, 0, 2, 3]])
        other.lin.bias.copy_(other.lin.bias[[1, 0, 2, 3]])
        want = float((other.lin(x).argmax(1) == ref.lin(x).argmax(1)).double().mean())
    assert ev(other) == pytest.approx(want)
    assert want < 1.0


def test_kl_is_minus_the_mean_kl_and_zero_for_the_reference():
    x, _ = _data(30)
    ref, other = Probe(0).eval(), Probe(3).eval()
    ev = metrics.kl(ref, x, batch_size=4)
    assert ev(ref) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        p = F.log_softmax(ref.lin(x), -1)
        q = F.log_softmax(other.lin(x), -1)
        want = -float((p.exp() * (p - q)).sum(-1).mean())
    assert ev(other) == pytest.approx(want, rel=1e-5)
    assert ev(other) < 0


def test_cosine_with_output_fn_and_mapping_inputs():
    class Emb(nn.Module):
        def __init__(self, seed: int, scale: float = 1.0) -> None:
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            self.w = nn.Parameter(torch.randn(5, 3, generator=g))
            self.scale = scale

        def forward(self, ids, mask):
            return {"emb": self.scale * (self.w[ids] * mask.unsqueeze(-1)).sum(1)}

    ids = torch.randint(0, 5, (12, 4), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(12, 4)
    inputs = {"ids": ids, "mask": mask}
    ref = Emb(0)
    ev = metrics.cosine(ref, inputs, output_fn=lambda o: o["emb"], batch_size=5)
    assert ev(ref) == pytest.approx(1.0, abs=1e-6)
    assert ev(Emb(0, scale=3.0)) == pytest.approx(1.0, abs=1e-6)  # direction only
    other = Emb(7)
    with torch.no_grad():
        want = float(
            F.cosine_similarity(other(ids, mask)["emb"], ref(ids, mask)["emb"], dim=1).mean()
        )
    assert ev(other) == pytest.approx(want, rel=1e-6)
    with pytest.raises(TypeError, match="output_fn"):
        metrics.cosine(ref, inputs)(ref)  # a dict output needs output_fn


def test_reference_outputs_are_computed_once():
    x, _ = _data(20)
    ref = Probe(0).eval()
    ev = metrics.kl(ref, x, batch_size=8)
    n = len(ref.seen)
    assert n == 3  # 20 samples in batches of 8
    ev(Probe(1))
    ev(Probe(2))
    assert len(ref.seen) == n


def test_evaluators_pickle():
    x, y = _data(10)
    ref = Probe(0).eval()
    for ev in (
        metrics.accuracy((x, y)),
        metrics.agreement(ref, x),
        metrics.kl(ref, x),
        metrics.cosine(ref, x),
    ):
        back = pickle.loads(pickle.dumps(ev))
        assert back(ref) == ev(ref)


def test_bad_arguments():
    x, y = _data(10)
    ref = Probe(0)
    with pytest.raises(TypeError, match="data"):
        metrics.accuracy(3)
    with pytest.raises(ValueError, match="labels"):
        metrics.accuracy((x, y[:5]))
    with pytest.raises(TypeError, match="labels"):
        metrics.accuracy((x, y.float()))
    with pytest.raises(ValueError, match="batch_size"):
        metrics.accuracy((x, y), batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        metrics.kl(ref, x, batch_size=2.0)
    with pytest.raises(TypeError, match="reference_model|model"):
        metrics.agreement("nope", x)
    with pytest.raises(ValueError, match="0 samples"):
        metrics.cosine(ref, x[:0])
    with pytest.raises(ValueError, match="dim 0"):
        metrics.cosine(ref, {"a": x, "b": x[:3]})
    with pytest.raises(TypeError, match="model"):
        metrics.accuracy((x, y))("nope")
    ev = metrics.cosine(ref, x)
    with pytest.raises(ValueError, match="differs"):
        ev(Probe(0, k=5))
