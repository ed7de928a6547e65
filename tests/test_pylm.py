"""The language-model example (wsq.examples.pylm) on its tiny recipe: the corpus and its split,
deterministic training, the cache, the perplexity metric, and wsq compress / tune / the Hugging
Face round trip on it."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import pytest
import torch

import wsq

pytest.importorskip("transformers", reason="transformers is not installed")
from wsq.examples import pylm  # noqa: E402

TINY = pylm.TINY


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("pylm-cache"))


def test_corpus_split_by_file_and_stable():
    names = [n for split in pylm.FILES.values() for n in split]
    assert len(names) == len(set(names))  # decision and held-out files never train
    a, b = pylm.corpus(), pylm.corpus()
    assert a == b and all(len(a[s]) > 20_000 for s in ("train", "val", "test"))
    assert len(a["train"]) > 10 * len(a["val"])


def test_windows():
    w = pylm.windows(b"0123456789", 3, 4)
    assert w.tolist() == [[48, 49, 50, 51, 52], [50, 51, 52, 53, 54], [53, 54, 55, 56, 57]]
    with pytest.raises(ValueError, match="fewer than one window"):
        pylm.windows(b"abc", 2, 8)


def test_recipe_errors_name_the_field():
    with pytest.raises(ValueError, match=r"Recipe\.steps"):
        pylm.Recipe(steps=0)
    with pytest.raises(ValueError, match=r"Recipe\.lr"):
        pylm.Recipe(lr=-1.0)
    with pytest.raises(ValueError, match=r"Recipe\.hidden .* Recipe\.heads"):
        pylm.Recipe(hidden=30, heads=4)
    with pytest.raises(TypeError, match="recipe"):
        pylm.load_or_train({"steps": 3})


def test_training_is_deterministic_and_cached(cache):
    model, path = pylm.load_or_train(TINY, directory=cache)
    assert path is not None and os.path.isfile(path) and not model.training
    again, path2 = pylm.load_or_train(TINY, directory=cache)
    assert path2 == path
    fresh = pylm.train(TINY)
    for (n, a), b, c in zip(
        model.state_dict().items(),
        again.state_dict().values(),
        fresh.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b) and torch.equal(a, c), n
    # another seed is another cache file and other weights
    other = dataclasses.replace(TINY, seed=1)
    o, opath = pylm.load_or_train(other, directory=cache)
    assert opath != path
    assert not torch.equal(
        o.model.layers[0].mlp.up_proj.weight, model.model.layers[0].mlp.up_proj.weight
    )
    # training lowers the perplexity of the held-out files below the untrained model's
    w = pylm.windows(pylm.corpus()["test"], TINY.eval_windows, TINY.seq)
    assert pylm.perplexity(model, w) < pylm.perplexity(pylm.build(TINY), w) < 300


def test_corrupted_cache_is_retrained(tmp_path):
    _, path = pylm.load_or_train(TINY, directory=str(tmp_path))
    with open(path, "r+b") as f:
        f.truncate(100)
    model, path2 = pylm.load_or_train(TINY, directory=str(tmp_path))
    assert path2 == path and os.path.getsize(path) > 100
    assert torch.equal(model.lm_head.weight, pylm.train(TINY).lm_head.weight)


def test_spec_tune_held_out(cache):
    model, evaluate, held_out = pylm.spec(TINY, directory=cache)
    base, base_test = evaluate(model), held_out(model)
    assert math.isfinite(base) and base < 0 and base != base_test  # other files, other figure
    c = wsq.tune(model, evaluate, tolerance=0.02)
    assert evaluate(c.model) >= base - 0.02
    assert math.isfinite(held_out(c.model)) and c.stats()["bits_memory"] < 16


def test_wsq_compress_cli_on_the_spec(cache, tmp_path, capsys):
    from wsq import cli

    spec = tmp_path / "lm_spec.py"
    spec.write_text(
        "from wsq.examples import pylm\n\n"
        f"def make():\n    return pylm.spec(pylm.TINY, directory={cache!r})\n"
    )
    out = tmp_path / "o"
    args = ["--method", "grid", "--tolerance", "0.02", "--json", "--out", str(out)]
    assert cli.main(["compress", f"{spec}:make", *args]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (out / "model.wsq").stat().st_size == summary["chosen"]["file_bytes"]


def test_hf_round_trip(cache, tmp_path):
    hf = pytest.importorskip("wsq.hf")
    import transformers

    model, _ = pylm.load_or_train(TINY, directory=cache)
    c = wsq.compress(model, k=64)
    hf.save_pretrained(c, tmp_path)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    w = pylm.windows(pylm.corpus()["test"], 4, TINY.seq)
    assert pylm.log_perplexity(loaded, w) == pylm.log_perplexity(c.model, w)


def test_builtin_pylm_spec_name(cache, tmp_path, capsys, monkeypatch):
    # `wsq compress pylm` routes to pylm.spec() with its own defaults (tolerance 0.01, no
    # --tolerance needed); the tiny recipe stands in for the default one (minutes of training)
    from wsq import cli

    real = pylm.spec
    monkeypatch.setattr(pylm, "spec", lambda: real(TINY, directory=cache))
    out = tmp_path / "o"
    assert cli.main(["compress", "pylm", "--method", "grid", "--json", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["spec"] == "pylm" and summary["settings"]["tolerance"] == 0.01
