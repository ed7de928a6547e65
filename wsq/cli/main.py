"""The ``wsq`` command: ``wsq compress [SPEC]``, ``wsq info FILE``, ``wsq bench``.

``wsq compress`` runs the whole method on one model: the baseline, a k=1024 binning (the paper's
"Random UB" row), the NSGA-II search, the merge of the best front solutions, entropy coding; it
prints the paper-style table and writes front.csv, front.json, front.png, summary.json and the
chosen compressed file (model.wsq) into --out. Every decision (which solutions, which merges, which
file) uses the validation evaluate only; the test evaluate is only reported.

Exit codes: 0 success; 1 ``wsq info`` found a defective file; 2 usage errors (a bad SPEC, an
unwritable --out, a missing extra), each reported as one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

__all__ = ["main"]

DEFAULTS = {
    "k_min": 2,
    "k_max": 1024,
    "pop": 100,
    "gens": 100,
    "seed": 0,
    "tolerance": 0.0,
    "metric": "accuracy",
    "coder": "auto",
    "variables": "k",
    "merge_top": 3,
    "merge_evals": None,
}
# Built-in specs bring settings that suit their size (flags given on the command line win).
_SPEC_DEFAULTS = {
    "minilm": {
        "k_min": 64,
        "k_max": 4096,
        "pop": 12,
        "gens": 6,
        "tolerance": 0.01,
        "merge_top": 1,
        "merge_evals": 200,
    },
}


class CliError(Exception):
    """A usage error: reported as one line, exit code 2."""


# ----------------------------------------------------------------------------- specs


class Spec:
    """What ``wsq compress`` works on: a model, the decision evaluate, an optional report one."""

    def __init__(
        self, name: str, model, evaluate: Callable, test: Callable | None, metric: str
    ) -> None:
        self.name, self.model, self.metric = name, model, metric
        self.evaluate, self.test = evaluate, test


def _digits_spec(seed: int, metric: str, say: Callable[[str], None]) -> Spec:
    from wsq import metrics
    from wsq.examples import digits as _digits

    if importlib.util.find_spec("sklearn") is None:
        raise CliError(
            "the built-in digits default needs scikit-learn: pip install 'wsq[demo]' "
            "(or pip install scikit-learn)"
        )
    t0 = time.perf_counter()
    model, path = _digits.load_or_train(seed)
    where = f"cached at {path}" if path else "cache directory not writable, not cached"
    say(f"digits CNN ({sum(p.numel() for p in model.parameters())} parameters) ready in "
        f"{time.perf_counter() - t0:.1f} s, {where}")  # fmt: skip
    d = _digits.splits(seed)
    if metric == "accuracy":
        val, test = metrics.accuracy(d["val"]), metrics.accuracy(d["test"])
    elif metric == "agreement":
        val, test = metrics.agreement(model, d["val"][0]), metrics.agreement(model, d["test"][0])
    else:
        val, test = metrics.kl(model, d["val"][0]), metrics.kl(model, d["test"][0])
    return Spec("digits", model, val, test, metric)


def _minilm_spec() -> Spec:
    from wsq.examples import minilm as _minilm

    missing = _minilm.available()
    if missing is not None:
        raise CliError(
            f"the minilm spec needs the hf extra ({missing} is not installed): pip install 'wsq[hf]'"
        )
    model, val, test = _minilm.spec()
    return Spec("minilm", model, val, test, "cosine")


def _import_spec(spec: str) -> Callable:
    target, sep, fn_name = spec.rpartition(":")
    if not sep or not target or not fn_name.isidentifier():
        raise CliError(
            f"bad SPEC {spec!r}: expected 'module:function' or 'path/to/file.py:function' (or the "
            "built-in 'minilm')"
        )
    if target.endswith(".py") or os.sep in target or (os.altsep and os.altsep in target):
        if not os.path.isfile(target):
            raise CliError(f"bad SPEC {spec!r}: file {target!r} does not exist")
        name = "wsq_spec_" + os.path.splitext(os.path.basename(target))[0].replace("-", "_")
        try:
            mod_spec = importlib.util.spec_from_file_location(name, target)
            if mod_spec is None or mod_spec.loader is None:
                raise ImportError("not a Python source file")
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = module  # so classes defined there pickle for executors
            mod_spec.loader.exec_module(module)
        except Exception as e:  # the user's file: any error is a bad SPEC
            sys.modules.pop(name, None)
            raise CliError(f"bad SPEC {spec!r}: importing {target!r} failed: {_one_line(e)}") from e
    else:
        try:
            module = importlib.import_module(target)
        except Exception as e:
            raise CliError(
                f"bad SPEC {spec!r}: cannot import module {target!r}: {_one_line(e)}"
            ) from e
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise CliError(f"bad SPEC {spec!r}: {target!r} has no function {fn_name!r}")
    return fn


def _user_spec(spec: str) -> Spec:
    import torch

    fn = _import_spec(spec)
    try:
        out = fn()
    except Exception as e:
        raise CliError(f"bad SPEC {spec!r}: {fn.__name__}() raised {_one_line(e)}") from e
    if (
        not isinstance(out, (tuple, list))
        or len(out) not in (2, 3)
        or not isinstance(out[0], torch.nn.Module)
        or not callable(out[1])
        or (len(out) == 3 and out[2] is not None and not callable(out[2]))
    ):
        raise CliError(
            f"bad SPEC {spec!r}: the function must return (model, evaluate) or (model, evaluate, "
            f"test_evaluate), got {_describe(out)}"
        )
    return Spec(spec, out[0], out[1], out[2] if len(out) == 3 else None, "evaluate")


def _describe(v) -> str:
    if isinstance(v, (tuple, list)):
        return f"a {type(v).__name__} of ({', '.join(type(x).__name__ for x in v)})"
    return f"a {type(v).__name__}"


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


# ----------------------------------------------------------------------------- output dir


def _prepare_out(out: str) -> str:
    out = os.path.abspath(os.path.expanduser(out))
    if os.path.exists(out) and not os.path.isdir(out):
        raise CliError(f"cannot write to --out {out!r}: it exists and is not a directory")
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".wsq-write-test-"):
            pass
    except OSError as e:
        raise CliError(f"cannot write to --out {out!r}: {e.strerror or e}") from None
    return out


# ----------------------------------------------------------------------------- the pipeline


def _fixed_bytes(c) -> int:
    """Bytes of a fixed-width (not entropy-coded) store: packed indices + float32 codebook + every
    uncompressed tensor (no header)."""
    from wsq.kernels import ops

    packed = sum(ops.packed_bytes(q.numel, c.bits) for q in c.quantized.values())
    rest = sum(t.numel() * t.element_size() for t in c.rest_state().values())
    return packed + 4 * int(c.codebook.numel()) + rest


def _row(method: str, items: list[dict]) -> dict:
    """A table row: the (min, max) of each column over items (one item: plain values)."""

    def rng(key):
        vals = [it[key] for it in items if it.get(key) is not None]
        if not vals:
            return None
        return [min(vals), max(vals)]

    return {
        "method": method,
        "count": len(items),
        **{k: rng(k) for k in ("val", "test", "k", "n_bins", "bits", "cr")},
    }


def _fmt_range(r, fmt: str) -> str:
    if r is None:
        return "-"
    a, b = (format(v, fmt) for v in r)
    return a if a == b else f"{a}-{b}"


def format_table(summary: dict) -> str:
    """The paper-style table of a ``wsq compress`` summary."""
    cols = ["Method", "Val", "Test", "k", "shared values", "avg bits", "CR"]
    rows = []
    for r in summary["rows"]:
        rows.append(
            [
                r["method"],
                _fmt_range(r["val"], ".4f"),
                _fmt_range(r["test"], ".4f"),
                _fmt_range(r["k"], "d"),
                _fmt_range(r["n_bins"], "d"),
                _fmt_range(r["bits"], ".2f"),
                _fmt_range(r["cr"], ".2f"),
            ]
        )
    w = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(cols)) + " |"
    sep = "|" + "|".join("-" * (x + 2) for x in w) + "|"
    body = ["| " + " | ".join(r[i].ljust(w[i]) for i in range(len(cols))) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def run_compress(spec: Spec, opts: dict, out: str, say: Callable[[str], None], progress: bool):
    """The whole pipeline; returns the summary dict (also written to out/summary.json)."""
    import wsq
    from wsq.core.merge import merge
    from wsq.search import search

    t_start = time.perf_counter()
    model, evaluate, test = spec.model, spec.evaluate, spec.test

    def val_of(m) -> float:
        import torch

        with torch.no_grad():
            return float(evaluate(m))

    def test_of(m) -> float | None:
        import torch

        if test is None:
            return None
        with torch.no_grad():
            return float(test(m))

    # Random UB: the paper's fixed k = 1024 (here --k-max) binning, for reference
    ub = wsq.compress(model, opts["k_max"])
    ub_stats = ub.stats(opts["coder"])
    original = ub_stats["original_bytes"]
    n_weights = ub_stats["n_weights"]
    base_val, base_test = val_of(model), test_of(model)
    rows = [
        {"method": "Baseline", "val": base_val, "test": base_test, "k": None, "n_bins": n_weights,
         "bits": 8.0 * (original - sum(t.numel() * t.element_size()
                                       for t in ub.rest_state().values())) / n_weights,
         "cr": 1.0},
        {"method": f"Random UB k={opts['k_max']}", "val": val_of(ub.model),
         "test": test_of(ub.model), "k": opts["k_max"], "n_bins": ub_stats["n_bins"],
         "bits": float(ub.bits), "cr": original / _fixed_bytes(ub)},
    ]  # fmt: skip
    del ub

    say(
        f"searching: NSGA-II pop {opts['pop']} x {opts['gens']} generations, k in "
        f"[{opts['k_min']}, {opts['k_max']}], variables {opts['variables']}, seed {opts['seed']}"
    )
    res = search(
        model, evaluate, k_min=opts["k_min"], k_max=opts["k_max"], pop_size=opts["pop"],
        generations=opts["gens"], seed=opts["seed"], variables=opts["variables"],
        coder=opts["coder"], progress=progress,
    )  # fmt: skip
    t_search = time.perf_counter() - t_start
    tol = opts["tolerance"]
    ok = [s for s in res.front if s.drop <= tol]
    if not ok:
        best = min(res.front, key=lambda s: (s.drop, s.bits))
        say(
            f"note: no front solution is within --tolerance {tol} of the baseline; using the "
            f"smallest drop ({best.drop:.4g})"
        )
        ok = [best]
    chosen_set = sorted(ok, key=lambda s: (s.bits, s.drop))[: opts["merge_top"]]

    pre, merged = [], []
    for s in chosen_set:
        c = res.compress(s)
        pre.append({"k": s.k, "n_bins": s.n_bins, "val": val_of(c.model), "test": test_of(c.model),
                    "bits": float(c.bits), "cr": original / _fixed_bytes(c)})  # fmt: skip
        m = merge(
            c, evaluate, tolerance=tol, baseline=res.baseline, max_evals=opts["merge_evals"],
            progress=progress,
        )  # fmt: skip
        del c
        info = m.merge_info
        say(
            f"merge of k={s.k}: {info['n_before']} -> {info['n_after']} shared values in "
            f"{info['evaluations']} evaluations ({info['decisions']} pair decisions)"
        )
        item = {"k": s.k, "n_bins": info["n_after"], "val": val_of(m.model),
                "test": test_of(m.model), "model": m, "merge": info}  # fmt: skip
        for coder in ("huffman", "ans", opts["coder"]):
            st = m.stats(coder)
            item[coder] = {"bits": st["bits_entropy"], "file_bytes": st["file_bytes"],
                           "cr": st["cr"]}  # fmt: skip
        merged.append(item)

    def view(items, bits_of, cr_of):
        return [{"k": it["k"], "n_bins": it["n_bins"], "val": it["val"], "test": it["test"],
                 "bits": bits_of(it), "cr": cr_of(it)} for it in items]  # fmt: skip

    rows = [_row(r["method"], [r]) for r in rows]
    rows.append(_row("MO-UB front", pre))
    rows.append(
        _row("+ Merge", view(merged, lambda it: float(it["model"].bits),
                             lambda it: original / _fixed_bytes(it["model"])))
    )  # fmt: skip
    for coder, label in (("huffman", "+ Huffman"), ("ans", "+ ANS")):
        rows.append(
            _row(label, view(merged, lambda it, c=coder: it[c]["bits"],
                             lambda it, c=coder: it[c]["cr"]))
        )  # fmt: skip

    # the chosen file: smallest with the chosen coder (all passed the validation bar)
    best = min(merged, key=lambda it: (it[opts["coder"]]["file_bytes"], -it["val"]))
    path = os.path.join(out, "model.wsq")
    wsq.save(best["model"], path, coder=opts["coder"])
    size = os.path.getsize(path)
    res.to_csv(os.path.join(out, "front.csv"))
    res.to_json(os.path.join(out, "front.json"))
    res.plot(os.path.join(out, "front.png"), title=f"wsq compress {spec.name}: Pareto front")
    summary = {
        "spec": spec.name,
        "metric": spec.metric,
        "settings": dict(opts),
        "baseline": {"val": base_val, "test": base_test},
        "rows": rows,
        "search": {"evaluations": res.n_evaluations, "front_size": len(res.front),
                   "hypervolume": res.hypervolume(), "seconds": t_search},  # fmt: skip
        "merged": [{k: v for k, v in it.items() if k != "model"} for it in merged],
        "chosen": {"k": best["k"], "n_bins": best["n_bins"], "val": best["val"],
                   "test": best["test"], "file": path, "file_bytes": size,
                   "original_bytes": original, "cr": original / size,
                   "coder": opts["coder"]},  # fmt: skip
        "files": {n: os.path.join(out, n) for n in
                  ("model.wsq", "front.csv", "front.json", "front.png", "summary.json")},
        "seconds": time.perf_counter() - t_start,
    }  # fmt: skip
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(_json_safe(summary), f, indent=1, allow_nan=False)
        f.write("\n")
    return summary


def _json_safe(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


# ----------------------------------------------------------------------------- info


def describe(path: str) -> dict:
    """Everything ``wsq info`` reports about a wsq file, after validating it completely (every
    checksum verified, every stream decoded). Raises wsq.FormatError naming the defect."""
    import numpy as np

    from wsq.io import format as wfmt
    from wsq.io import reader

    h, codebook, symbols, plain = reader._parse(path, model_state=None, max_elements=None)
    size = os.path.getsize(path)
    tensors, q_bytes, stream_bytes, numel_total = [], 0, 0, 0
    hist = np.zeros(h.n, dtype=np.int64)
    for q in h.quantized:
        sym = symbols.pop(q.name)
        hist += np.bincount(sym.astype(np.int64), minlength=h.n)[: h.n]
        item = wfmt._itemsize(wfmt._DTYPES[q.dtype])
        q_bytes += q.numel * item
        stream_bytes += q.nbytes
        numel_total += q.numel
        tensors.append({"name": q.name, "tied": list(q.names[1:]), "shape": list(q.shape),
                        "dtype": q.dtype, "numel": q.numel, "coder": q.coder,
                        "stream_bytes": q.nbytes,
                        "bits_per_weight": 8 * q.nbytes / q.numel if q.numel else 0.0})  # fmt: skip
    plain_bytes = sum(t.numel() * t.element_size() for t in plain.values())
    p = hist[hist > 0] / max(1, hist.sum())
    coders = sorted({t["coder"] for t in tensors})
    original = q_bytes + plain_bytes
    return {
        "file": os.path.abspath(path),
        "file_bytes": size,
        "format": f"{wfmt.FORMAT} v{wfmt.VERSION}",
        "n_shared_values": h.n,
        "bits": h.bits,
        "k": h.k,
        "lo": h.lo,
        "hi": h.hi,
        "codebook_min": float(codebook.min()),
        "codebook_max": float(codebook.max()),
        "quantized": tensors,
        "quantized_weights": numel_total,
        "coders": coders,
        "avg_bits_per_weight": 8 * stream_bytes / numel_total if numel_total else 0.0,
        "entropy_bits_per_weight": float(-(p * np.log2(p)).sum()) if p.size > 1 else 0.0,
        "plain_tensors": len(plain),
        "plain_bytes": plain_bytes,
        "original_bytes": original,
        "cr": original / size,
        "checksums": "ok",
    }


def format_info(d: dict) -> str:
    lines = [
        f"{d['file']}: {d['format']}, {d['file_bytes']} bytes, checksums ok",
        f"  codebook: {d['n_shared_values']} shared values at {d['bits']} bits "
        f"[{d['codebook_min']:.6g}, {d['codebook_max']:.6g}]"
        + (f" (k={d['k']}, range [{d['lo']:.6g}, {d['hi']:.6g}])" if d["k"] else ""),
        f"  {len(d['quantized'])} quantized tensors, {d['quantized_weights']} weights, coded at "
        f"{d['avg_bits_per_weight']:.3f} bits/weight (pooled-histogram entropy "
        f"{d['entropy_bits_per_weight']:.3f}; "
        f"coders: {', '.join(d['coders']) or '-'})",
    ]
    w = max([len(t["name"]) for t in d["quantized"]] + [4])
    for t in d["quantized"]:
        tied = f"  (tied: {', '.join(t['tied'])})" if t["tied"] else ""
        lines.append(
            f"    {t['name']:<{w}}  {'x'.join(map(str, t['shape'])):>14} {t['dtype']:>4}  "
            f"{t['coder']:<7} {t['stream_bytes']:>9} B  {t['bits_per_weight']:6.3f} b/w{tied}"
        )
    lines.append(
        f"  {d['plain_tensors']} uncompressed tensors, {d['plain_bytes']} bytes; original "
        f"{d['original_bytes']} bytes -> CR {d['cr']:.2f}x"
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- commands


def _cmd_compress(args) -> int:
    quiet = args.quiet or args.json

    def say(msg: str) -> None:
        if not quiet:
            print(msg, flush=True)

    spec_key = args.spec
    if spec_key in ("wsq:minilm", "minilm"):
        spec_key = "minilm"
    elif spec_key in (None, "digits", "wsq:digits"):
        spec_key = None
    opts = dict(DEFAULTS)
    opts.update(_SPEC_DEFAULTS.get(spec_key or "", {}))
    for k in DEFAULTS:
        v = getattr(args, k)
        if v is not None:
            opts[k] = v
    limits = (("k_min", 2), ("k_max", 2), ("pop", 2), ("gens", 1), ("merge_top", 1),
              ("merge_evals", 1))  # fmt: skip
    for name, lo in limits:
        if opts[name] is not None and opts[name] < lo:
            raise CliError(f"--{name.replace('_', '-')} must be >= {lo}, got {opts[name]}")
    if opts["k_max"] > 65536 or opts["k_min"] > opts["k_max"]:
        raise CliError(
            f"need 2 <= --k-min <= --k-max <= 65536, got {opts['k_min']}, {opts['k_max']}"
        )
    if opts["seed"] < 0:
        raise CliError(f"--seed must be >= 0, got {opts['seed']}")
    if not (math.isfinite(opts["tolerance"]) and opts["tolerance"] >= 0):
        raise CliError(f"--tolerance must be finite and >= 0, got {opts['tolerance']}")
    variables = tuple(v.strip() for v in opts["variables"].split(",") if v.strip())
    if "k" not in variables or not set(variables) <= {"k", "clip"}:
        raise CliError(f"--variables must be 'k' or 'k,clip', got {opts['variables']!r}")
    opts["variables"] = ",".join(variables)
    if spec_key is not None and args.metric is not None:
        raise CliError(
            "--metric applies to the built-in digits default; a SPEC brings its own evaluate"
        )
    out = _prepare_out(args.out)

    if spec_key is None:
        spec = _digits_spec(opts["seed"], opts["metric"], say)
    elif spec_key == "minilm":
        spec = _minilm_spec()
    else:
        spec = _user_spec(spec_key)
    opts["variables"] = variables
    summary = run_compress(spec, opts, out, say, progress=not quiet)
    if args.json:
        print(json.dumps(_json_safe(summary), allow_nan=False))
    elif not args.quiet:
        c = summary["chosen"]
        print()
        print(f"wsq compress {spec.name} ({spec.metric}; decisions on validation data, test only "
              f"reported; {summary['seconds']:.0f} s)")  # fmt: skip
        print(format_table(summary))
        print(
            "avg bits and CR: fixed-width indices for Random UB, MO-UB and + Merge; entropy-coded "
            "file sizes for + Huffman and + ANS"
        )
        print(
            f"saved {c['file']}: k={c['k']}, {c['n_bins']} shared values, {c['file_bytes']} bytes "
            f"(CR {c['cr']:.2f}x), val {c['val']:.4f}"
            + (f", test {c['test']:.4f}" if c["test"] is not None else "")
        )
        print(f"front: {os.path.join(out, 'front.png')}, front.csv, front.json, summary.json")
    return 0


def _cmd_info(args) -> int:
    from wsq.errors import FormatError

    path = args.file
    if not os.path.exists(path):
        raise CliError(f"no such file: {path!r}")
    try:
        d = describe(path)
    except FormatError as e:
        print(f"wsq info: DEFECT: {' '.join(str(e).split())}", file=sys.stderr)
        if args.json:
            print(json.dumps({"file": os.path.abspath(path), "ok": False, "defect": str(e)}))
        return 1
    except (ValueError, OSError) as e:
        raise CliError(f"cannot read {path!r}: {_one_line(e)}") from None
    if args.json:
        print(json.dumps(_json_safe(dict(d, ok=True))))
    else:
        print(format_info(d))
    return 0


def _cmd_bench(args) -> int:
    from wsq.kernels import microbench as _microbench

    shape = None
    if args.matmul is not None:
        try:
            shape = tuple(int(v) for v in args.matmul.lower().split("x"))
        except ValueError:
            shape = ()
        if len(shape) != 2 or min(shape) < 1:
            raise CliError(f"--matmul must be OUTxIN (e.g. 4096x4096), got {args.matmul!r}")
    if args.n < 1:
        raise CliError(f"--n must be >= 1, got {args.n}")
    rows, info = _microbench.run(
        quick=True, n=args.n, shape=shape, say=None if args.json else print
    )
    if args.json:
        print(json.dumps(_json_safe({"machine": info, "rows": rows})))
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="wsq", description="Structure-agnostic weight-sharing compression for PyTorch models."
    )
    ap.add_argument("--traceback", action="store_true", help="show full tracebacks of errors")
    sub = ap.add_subparsers(dest="command", metavar="{compress,info,bench}")
    sub.required = True

    c = sub.add_parser(
        "compress",
        help="search, merge and entropy-code a model (no SPEC: the embedded digits default)",
        description="Search the Pareto front (NSGA-II), merge the best solutions' bins, entropy-"
        "code, print the paper-style table and write front.csv/json/png, summary.json and "
        "model.wsq into --out. SPEC: 'module:function' or 'path/to/file.py:function' returning "
        "(model, evaluate) or (model, evaluate, test_evaluate); 'minilm' for all-MiniLM-L6-v2 "
        "(needs wsq[hf]); none: a small CNN on scikit-learn's digits.",
    )
    c.add_argument("spec", nargs="?", metavar="SPEC")
    c.add_argument("--out", default="wsq-out", help="output directory (default ./wsq-out)")
    c.add_argument("--k-min", type=int, help="smallest k searched (default 2)")
    c.add_argument("--k-max", type=int, help="largest k searched, also the Random UB k (1024)")
    c.add_argument("--pop", type=int, help="NSGA-II population (default 100)")
    c.add_argument("--gens", type=int, help="NSGA-II generations (default 100)")
    c.add_argument("--seed", type=int, help="seed of the search and of the digits split (0)")
    c.add_argument("--tolerance", type=float, help="allowed drop below the baseline (0)")
    c.add_argument(
        "--metric", choices=("accuracy", "agreement", "kl"),
        help="digits default only: accuracy (default), agreement or -KL to the original model",
    )  # fmt: skip
    c.add_argument("--coder", choices=("auto", "ans", "huffman"), help="file coder (auto)")
    c.add_argument("--variables", help="decision variables: 'k' (default) or 'k,clip'")
    c.add_argument(
        "--merge-top", type=int, help="how many of the best front solutions to merge (3)"
    )
    c.add_argument(
        "--merge-evals", type=int, help="at most this many evaluations per merge (no limit)"
    )
    c.add_argument("--quiet", action="store_true", help="no progress, no table")
    c.add_argument("--json", action="store_true", help="print the summary as JSON only")
    c.set_defaults(func=_cmd_compress)

    i = sub.add_parser("info", help="describe a wsq file and verify its checksums")
    i.add_argument("file", metavar="FILE")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=_cmd_info)

    b = sub.add_parser("bench", help="a few seconds of kernel microbenchmarks")
    b.add_argument("--n", type=int, default=2_000_000, help="weights for the pass rows (2M)")
    b.add_argument("--matmul", help="LUT matmul shape OUTxIN (default 4096x4096)")
    b.add_argument("--json", action="store_true", help="print JSON")
    b.set_defaults(func=_cmd_bench)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wsq`` console script; returns the exit code."""
    ap = _parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:  # argparse's usage errors (code 2) and --help (code 0)
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.func(args)
    except CliError as e:
        if args.traceback:
            raise
        print(f"wsq: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wsq: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `wsq info f.wsq | head`: the reader left, nothing is wrong
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
