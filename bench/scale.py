"""Model scale (issue 24): time and peak resident memory of every wsq path against model size.

LLaMA-shaped decoders built from transformers configs (random weights, fp32, untied embeddings)
of about 50M, 220M and 1B parameters. Each measurement runs in a fresh subprocess: it imports wsq
and warms the path up on a tiny model (lazy imports, the native module), notes its resident size
(the *runtime*: interpreter, torch, transformers), builds what the path needs, resets the
resident-set high-water mark (VmHWM, through /proc/self/clear_refs) and runs the path once.

Paths: ``compress`` (wsq.compress(model, 256)); ``tune`` (wsq.tune(model, evaluate,
tolerance=0.01); evaluate = the mean over 16 tokens of the cosine between the logits of one
16-token forward and the original model's); ``search`` and ``search_grid`` (wsq.search with
method "uniform", k in 2..1024 (the default), or "grid"; NSGA-II, population 6, 2 generations: memory does not
depend on the number of candidates); ``merge`` (wsq.merge of the k=256 model, tolerance 0.01,
baseline given, at most 40 evaluations; the dense model deleted first, as merge never reads
it); ``save`` (the k=256 model, the dense one deleted
first); ``load`` (wsq.load into a template built under wsq.empty_parameters()); ``checkpoint``
(wsq.compress_checkpoint from the dense model saved as one safetensors file, into a template on
the meta device, writing the .wsq file). Setup per size (not timed): the safetensors file and the
.wsq file that load reads.

Columns: ``peak`` = VmHWM minus the runtime (what the path and its inputs hold at the peak: the
dense model included for compress and tune); ``peak/dense`` against the dense fp32 bytes, the
issue's bound being 1.5x; ``extra`` = VmHWM minus the resident size once the inputs are built
(the path's own growth); for the checkpoint path ``bound`` is the compressed model + 1 GiB.

Usage: python bench/scale.py [--sizes 50m,220m,1b]
       [--paths compress,tune,search,search_grid,merge,save,load,checkpoint]
       [--workdir DIR] [--json PATH] [--tune-iters N] [--timeout S]
Linux only (/proc). Run from the repository root with PYTHONPATH=. after .ci/dev_build.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SIZES = {  # LlamaConfig keyword arguments; vocab 32000, untied embeddings
    "50m": dict(
        hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8
    ),
    "220m": dict(
        hidden_size=1024, intermediate_size=2816, num_hidden_layers=12, num_attention_heads=16
    ),
    "1b": dict(
        hidden_size=2048, intermediate_size=5504, num_hidden_layers=16, num_attention_heads=32
    ),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
}
PATHS = ("compress", "tune", "search", "search_grid", "merge", "save", "load", "checkpoint")
GIB = 1 << 30
SEARCH_POP, SEARCH_GENS = 6, 2  # wsq.search: at most 12 candidates (memory does not grow with them)
MERGE_EVALS = 40


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _config(size: str):
    from transformers import LlamaConfig

    kw = dict(SIZES[size])
    vocab = 1000 if size == "tiny" else 32000
    return LlamaConfig(vocab_size=vocab, max_position_embeddings=256, tie_word_embeddings=False,
                       num_key_value_heads=kw["num_attention_heads"], **kw)  # fmt: skip


def _build(size: str, meta: bool = False):
    import torch
    from transformers import LlamaForCausalLM

    import wsq

    torch.manual_seed(0)
    if meta:
        with wsq.empty_parameters():
            return LlamaForCausalLM(_config(size)).eval()
    return LlamaForCausalLM(_config(size)).eval()


def _evaluator(model, vocab: int):
    """Mean cosine over 16 tokens between a model's logits and `model`'s (one forward each)."""
    import torch

    ids = torch.randint(0, vocab, (1, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(ids).logits[0].float()

    def evaluate(m) -> float:
        with torch.no_grad():
            out = m(ids).logits[0].float()
        return float(torch.nn.functional.cosine_similarity(out, ref, dim=-1).mean())

    return evaluate


def _files(workdir: str, size: str) -> tuple[str, str]:
    return os.path.join(workdir, f"{size}.safetensors"), os.path.join(workdir, f"{size}.wsq")


def _setup(size: str, workdir: str) -> None:
    """The dense checkpoint (safetensors) and the k=256 .wsq file that load reads."""
    import safetensors.torch as st

    import wsq

    ckpt, wfile = _files(workdir, size)
    m = _build(size)
    if not os.path.exists(ckpt):
        st.save_file({k: v.contiguous() for k, v in m.state_dict().items()}, ckpt)
    if not os.path.exists(wfile):
        wsq.save(wsq.compress(m, 256), wfile)


def _run(size: str, path: str, workdir: str, tune_iters: int) -> dict:
    """One path on one model size; what it returns is what it held and how long it took."""
    import gc

    import wsq

    ckpt, wfile = _files(workdir, size)
    out: dict = {}
    if path == "compress":
        model = _build(size)
        return {"_inputs": model, "_fn": lambda: wsq.compress(model, 256)}
    if path == "tune":
        model = _build(size)
        ev = _evaluator(model, model.config.vocab_size)

        def fn():
            c = wsq.tune(model, ev, wsq.Grid(iters=tune_iters), tolerance=0.01)
            info = c.tune_info
            keys = ("baseline", "metric", "evaluations", "probe_s", "tune_s", "own_s", "eval_s",
                    "own_s_per_candidate", "eval_s_per_candidate",
                    "own_s_per_candidate_per_gweight")  # fmt: skip
            out.update({k: float(info[k]) for k in keys})
            out["candidates"] = len(info["trace"])
            out["n_codebook"] = int(c.codebook.numel())
            return c

        return {"_inputs": model, "_fn": fn, "_out": out}
    if path in ("search", "search_grid"):
        model = _build(size)
        ev = _evaluator(model, model.config.vocab_size)
        if path == "search":  # the paper's method: k only
            kw = dict(pop_size=SEARCH_POP, generations=SEARCH_GENS)  # k in 2..1024
        else:
            kw = dict(method=wsq.Grid(), pop_size=SEARCH_POP, generations=SEARCH_GENS)

        def fn():
            r = wsq.search(model, ev, progress=False, **kw)
            t = r.timings
            n = len(r.history)
            out.update(candidates=n, own_s_per_candidate=(t["hist_ms"] + t["write_ms"]) / 1e3,
                       eval_s_per_candidate=t["eval_ms"] / 1e3, probe_s=t.get("probe_s", 0.0))  # fmt: skip
            out["own_s_per_candidate_per_gweight"] = out["own_s_per_candidate"] / (
                sum(e.numel for e in wsq.core.pool.collect_pool(model).entries) / 1e9
            )
            return r

        return {"_inputs": model, "_fn": fn, "_out": out}
    if path == "merge":  # a compressed model and the baseline: the dense model is not needed
        model = _build(size)
        ev = _evaluator(model, model.config.vocab_size)
        c = wsq.compress(model, 256)
        del model
        gc.collect()

        def fn():
            m = wsq.merge(c, ev, tolerance=0.01, baseline=1.0, max_evals=MERGE_EVALS)
            out.update(evaluations=m.merge_info["evaluations"], n_before=m.merge_info["n_before"],
                       n_after=m.merge_info["n_after"])  # fmt: skip
            return m

        return {"_inputs": c, "_fn": fn, "_out": out}
    if path == "save":
        c = wsq.compress(_build(size), 256)
        gc.collect()
        target = os.path.join(workdir, f"{size}.saved.wsq")
        return {"_inputs": c, "_fn": lambda: wsq.save(c, target)}
    if path == "load":
        template = _build(size, meta=True)
        return {"_inputs": template, "_fn": lambda: wsq.load(wfile, template)}
    if path == "checkpoint":
        template = _build(size, meta=True)
        target = os.path.join(workdir, f"{size}.ckpt.wsq")

        def fn():
            c = wsq.compress_checkpoint(ckpt, template, 256, out=target)
            out["file_bytes"] = os.path.getsize(target)
            out["packed"] = sum(q.packed.numel() for q in c.quantized.values())
            return c

        return {"_inputs": template, "_fn": fn, "_out": out}
    raise SystemExit(f"unknown path {path!r}")


def child(size: str, path: str, workdir: str, tune_iters: int) -> dict:
    import gc

    import torch

    torch.set_num_threads(int(os.environ.get("WSQ_BENCH_THREADS", "2")))
    import transformers  # noqa: F401 - part of the runtime, not of the path

    import wsq  # noqa: F401

    # warm up on a tiny model: lazy imports, the native module, first-call caches
    os.makedirs(os.path.join(workdir, "tiny"), exist_ok=True)
    _setup("tiny", os.path.join(workdir, "tiny"))
    warm = _run("tiny", path, os.path.join(workdir, "tiny"), 2)
    warm["_fn"]()
    del warm
    gc.collect()
    runtime = _status("VmRSS")
    job = _run(size, path, workdir, tune_iters)
    gc.collect()
    inputs = _status("VmRSS")
    _reset_hwm()
    t0 = time.perf_counter()
    res = job["_fn"]()
    seconds = time.perf_counter() - t0
    hwm = _status("VmHWM")
    del res
    dense = sum(p.numel() * 4 for p in _build(size, meta=True).parameters())
    largest = max(p.numel() * 4 for p in _build(size, meta=True).parameters())
    r = {"size": size, "path": path, "params": dense // 4, "dense": dense, "largest": largest,
         "runtime": runtime, "inputs": inputs - runtime, "peak": hwm - runtime,
         "extra": hwm - inputs, "seconds": seconds, "hwm": hwm}  # fmt: skip
    r.update(job.get("_out", {}))
    return r


def _row(r: dict) -> str:
    ratio = r["peak"] / r["dense"]
    bound = ""
    if r["path"] == "checkpoint" and "packed" in r:
        ok = r["peak"] <= r["packed"] + GIB
        bound = f"<= packed+1GiB: {'yes' if ok else 'NO'}"
    else:
        bound = f"<= 1.5x: {'yes' if ratio <= 1.5 else 'NO'}"
    per = ""
    if r["path"] in ("search", "search_grid"):
        per = (f"own {r['own_s_per_candidate']:.2f} s/cand "
               f"({r['own_s_per_candidate_per_gweight']:.1f} s/cand/Gw), "
               f"eval {r['eval_s_per_candidate']:.2f} s/cand, {r['candidates']} cands")  # fmt: skip
    if r["path"] == "merge":
        per = f"{r['evaluations']} evals, {r['n_before']} -> {r['n_after']} entries"
    if r["path"] == "tune":
        per = (f"own {r['own_s_per_candidate']:.1f} s/cand "
               f"({r['own_s_per_candidate_per_gweight']:.1f} s/cand/Gw), "
               f"eval {r['eval_s_per_candidate']:.1f} s/cand, {r['evaluations']:.0f} evals")  # fmt: skip
    return (f"| {r['size']} | {r['params'] / 1e6:.0f}M | {r['path']} | {r['dense'] / GIB:.2f} | "
            f"{r['peak'] / GIB:.2f} | {ratio:.2f}x | {r['extra'] / GIB:.2f} | {r['seconds']:.1f} | "
            f"{bound} | {per} |")  # fmt: skip


HEADER = (
    "| size | params | path | dense GiB | peak GiB | peak/dense | extra GiB | time s | bound "
    "| per candidate |\n|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="50m,220m,1b")
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument(
        "--workdir", default=None, help="where the checkpoints go (default: a temp dir)"
    )
    ap.add_argument("--json", default=None, help="append one JSON object per measurement here")
    ap.add_argument("--tune-iters", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per measurement")
    ap.add_argument("--child", nargs=2, metavar=("SIZE", "PATH"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if not (sys.platform.startswith("linux") and os.access("/proc/self/clear_refs", os.W_OK)):
        raise SystemExit("bench/scale.py needs Linux /proc/self/clear_refs (VmHWM reset)")
    sizes = [s for s in a.sizes.split(",") if s]
    paths = [p for p in a.paths.split(",") if p]
    for s in sizes:
        if s not in SIZES:
            raise SystemExit(f"--sizes: unknown size {s!r} (one of {', '.join(SIZES)})")
    for p in paths:
        if p not in PATHS:
            raise SystemExit(f"--paths: unknown path {p!r} (one of {', '.join(PATHS)})")
    if a.tune_iters < 1:
        raise SystemExit(f"--tune-iters must be >= 1, got {a.tune_iters}")
    if a.workdir is None:
        import tempfile

        a.workdir = tempfile.mkdtemp(prefix="wsq-scale-")
    os.makedirs(a.workdir, exist_ok=True)
    if a.child:
        size, path = a.child
        if path == "setup":
            _setup(size, a.workdir)
            return 0
        print("RESULT " + json.dumps(child(size, path, a.workdir, a.tune_iters)), flush=True)
        return 0
    me = os.path.abspath(__file__)
    rows = []
    print(HEADER, flush=True)
    for size in sizes:
        if {"load", "checkpoint"} & set(paths):
            subprocess.run([sys.executable, me, "--child", size, "setup", "--workdir", a.workdir],
                           check=True, timeout=a.timeout)  # fmt: skip
        for path in paths:
            cmd = [sys.executable, me, "--child", size, path, "--workdir", a.workdir,
                   "--tune-iters", str(a.tune_iters)]  # fmt: skip
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
            except subprocess.TimeoutExpired:
                print(f"| {size} | | {path} | timed out after {a.timeout:.0f} s |", flush=True)
                continue
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
            if p.returncode != 0 or not lines:
                print(f"| {size} | | {path} | failed (rc {p.returncode}): "
                      f"{p.stderr.strip().splitlines()[-1:]} |", flush=True)  # fmt: skip
                continue
            r = json.loads(lines[-1][len("RESULT ") :])
            rows.append(r)
            print(_row(r), flush=True)
            if a.json:
                with open(a.json, "a") as f:
                    f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
