"""Hugging Face and torchvision models, offline: built from a config, compressed, saved, loaded into a
fresh ``from_config`` instance, equal outputs (no download: configs only, random weights)."""

from __future__ import annotations

import pytest
import torch

import wsq

transformers = pytest.importorskip("transformers", reason="transformers is not installed")

VOCAB = 97


def _bert():
    cfg = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    return cfg, transformers.AutoModel


def _gpt2():
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=64,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
    )
    return cfg, transformers.AutoModelForCausalLM


def _llama():
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=False,
    )  # fmt: skip
    return cfg, transformers.AutoModelForCausalLM


def _out(model, ids):
    with torch.no_grad():
        o = model(input_ids=ids)
    return o.logits if hasattr(o, "logits") else o.last_hidden_state


@pytest.mark.parametrize("make", [_bert, _gpt2, _llama], ids=["bert", "gpt2-tied", "llama"])
def test_compress_save_load_from_config(make, tmp_path):
    cfg, auto = make()
    torch.manual_seed(0)
    model = auto.from_config(cfg).eval()
    ids = torch.randint(0, VOCAB, (2, 11))
    c = wsq.compress(model, k=256)
    want = _out(c.model, ids)
    torch.testing.assert_close(want, _out(model, ids), rtol=0.1, atol=0.1)  # still the model
    wsq.save(c, tmp_path / "m.wsq")
    fresh = auto.from_config(cfg).eval()  # other random weights: the load must replace them all
    assert not torch.equal(_out(fresh, ids), want)
    loaded = wsq.load(tmp_path / "m.wsq", fresh)
    assert torch.equal(_out(loaded.model, ids), want)
    if make is _gpt2:
        # tied input/output embeddings are pooled once and stay one packed tensor
        emb = loaded.model.get_input_embeddings()
        head = loaded.model.get_output_embeddings()
        assert emb.weight_packed is head.weight_packed
        every = model.named_parameters(remove_duplicate=False)
        assert c.stats()["n_weights"] < sum(p.numel() for _, p in every if p.dim() >= 2)
    # a compressed model's state_dict loads into another compressed instance, exactly
    # (another model, other values and per-tensor widths: every tensor's widths may differ)
    torch.manual_seed(1)
    other = wsq.compress(auto.from_config(cfg).eval(), k=100)
    assert not torch.equal(_out(other.model, ids), want)
    other.model.load_state_dict(c.model.state_dict())
    assert torch.equal(_out(other.model, ids), want)
    assert other.widths() == c.widths() and torch.equal(other.codebook, c.codebook)


def test_torchvision_resnet(tmp_path):
    try:
        import torchvision
    except Exception as e:  # noqa: BLE001 - a torchvision built for another torch fails variously
        pytest.skip(f"no torchvision build matching torch {torch.__version__} is importable: {e}")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    c = wsq.compress(model, k=256)
    wsq.save(c, tmp_path / "r.wsq")
    loaded = wsq.load(tmp_path / "r.wsq", torchvision.models.resnet18(weights=None, num_classes=10))
    loaded.model.eval()
    with torch.no_grad():
        assert torch.equal(loaded.model(x), c.model(x))
