"""The ``wsq`` command: ``wsq compress [SPEC]``, ``wsq info [FILE]``, ``wsq bench``.

``wsq compress`` runs wsq's methods on one model at the same tolerance: the baseline, a k=1024
binning (the paper's "Random UB" row), the uniform method (NSGA-II search over k, the merge of the
best front solutions, entropy coding) and the grid method (wsq.tune: per-tensor steps on one shared
grid, plain and rate-aware); ``--method auto`` (default) keeps the smaller file, once it has been
loaded back from its own bytes and scored within the tolerance (else the next smaller). It prints
the paper-style table with both methods' rows and writes summary.json, the chosen compressed file
(model.wsq) and, when the uniform method ran, front.csv/json/png into --out, as a whole at the end:
a failed run leaves --out as it was, and a run replaces every output of an earlier one (front.*
of a uniform run does not stay beside a later grid-only result); other files in --out stay.
Every decision (which solutions, which merges, which file) uses the validation evaluate only; the
test evaluate is only reported.

Exit codes: 0 success; 1 ``wsq info`` found a defective file; 2 usage errors (a bad SPEC, an
unwritable --out, a missing extra, a tolerance never reached), each reported as one short line on
stderr (at most ERROR_CHARS characters; --traceback shows the whole exception).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence

from wsq.cli.settings import build_settings
from wsq.cli.specs import (
    _SPEC_DEFAULTS,
    DEFAULTS,
    CliError,
    _digits_spec,
    _effnet_spec,
    _minilm_spec,
    _one_line,
    _prepare_out,
    _pylm_spec,
    _user_spec,
)
from wsq.search.result import json_safe

__all__ = ["main"]

ERROR_CHARS = 300  # the longest error line printed; the detail is for --traceback

# ----------------------------------------------------------------------------- info


def describe(path: str) -> dict:
    """Everything ``wsq info`` reports about a wsq file, after validating it completely (every
    checksum verified, every stream decoded). Raises wsq.FormatError naming the defect."""
    import numpy as np

    from wsq import container
    from wsq import nn as wnn
    from wsq.io import reader

    h, codebook, symbols, plain = reader.parse(path, model_state=None, max_elements=None)
    size = os.path.getsize(path)
    tensors, q_bytes, stream_bytes, numel_total, held = [], 0, 0, 0, 0
    hist = np.zeros(h.n, dtype=np.int64)
    for q in h.quantized:
        sym = symbols.pop(q.name)
        own = np.bincount(sym.astype(np.int64), minlength=h.n)[: h.n]
        hist += own
        values = int((own > 0).sum())
        item = container.itemsize(container.DTYPES[q.dtype])
        q_bytes += q.numel * item
        stream_bytes += q.nbytes
        numel_total += q.numel
        held += wnn.held_bytes(q.numel, values)
        tensors.append({"name": q.name, "tied": list(q.names[1:]), "shape": list(q.shape),
                        "dtype": q.dtype, "numel": q.numel, "coder": q.coder,
                        "stream_bytes": q.nbytes,
                        "bits_per_weight": 8 * q.nbytes / q.numel if q.numel else 0.0,
                        "values": values,
                        "bits_memory": wnn.held_width(values)})  # fmt: skip
    plain_bytes = sum(t.numel() * t.element_size() for t in plain.values())
    p = hist[hist > 0] / max(1, hist.sum())
    coders = sorted({t["coder"] for t in tensors})
    original = q_bytes + plain_bytes
    return {
        "file": os.path.abspath(path),
        "file_bytes": size,
        "format": f"{container.FORMAT} v{container.VERSION}",
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
        "memory_bits_per_weight": 8 * held / numel_total if numel_total else 0.0,
        "memory_bytes": held + plain_bytes,
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
        f"coders: {', '.join(d['coders']) or '-'}); loaded, they hold "
        f"{d['memory_bits_per_weight']:.3f} bits/weight (each at its own index width)",
    ]
    w = max([len(t["name"]) for t in d["quantized"]] + [4])
    for t in d["quantized"]:
        tied = f"  (tied: {', '.join(t['tied'])})" if t["tied"] else ""
        lines.append(
            f"    {t['name']:<{w}}  {'x'.join(map(str, t['shape'])):>14} {t['dtype']:>4}  "
            f"{t['coder']:<7} {t['stream_bytes']:>9} B  {t['bits_per_weight']:6.3f} b/w  "
            f"{t['values']:>5} values at {t['bits_memory']:>2} bits{tied}"
        )
    lines.append(
        f"  {d['plain_tensors']} uncompressed tensors, {d['plain_bytes']} bytes; original "
        f"{d['original_bytes']} bytes -> CR {d['cr']:.2f}x; loaded: {d['memory_bytes']} bytes "
        f"({d['original_bytes'] / d['memory_bytes']:.2f}x smaller)"
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- commands


def _cmd_compress_checkpoint(args, say) -> int:
    """``wsq compress SPEC --checkpoint PATH --k K``: no evaluation, no search (see run_checkpoint)."""
    if args.checkpoint is None or args.k is None:
        raise CliError("--checkpoint and --k go together: compress a checkpoint at k bins")
    if args.spec is None:
        raise CliError(
            "--checkpoint needs a SPEC: 'module:function' returning the model to fill (built "
            "without its dense weights)"
        )
    if not 2 <= args.k <= 65536:
        raise CliError(f"--k must be in 2..65536, got {args.k}")
    search_only = ("k_min", "k_max", "pop", "gens", "tolerance", "margin", "method", "prefer",
                   "grid_iters", "metric", "variables", "merge_top", "merge_evals")  # fmt: skip
    given = [n for n in search_only if getattr(args, n, None) is not None]
    if given:
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        raise CliError(f"{flags}: not used with --checkpoint (uniform bins at --k, no search)")
    if not os.path.exists(args.checkpoint):
        raise CliError(f"--checkpoint {args.checkpoint!r} does not exist")
    from wsq.cli.compress import run_checkpoint

    existed = os.path.isdir(os.path.abspath(os.path.expanduser(args.out)))
    out = _prepare_out(args.out)
    try:
        summary = run_checkpoint(args.spec, args.checkpoint, args.k, out, args.coder or "auto", say)
    except BaseException:
        if not existed and not os.listdir(out):
            os.rmdir(out)
        raise
    if args.json:
        print(json.dumps(json_safe(summary), allow_nan=False))
    elif args.quiet:
        print(summary["file"])
    else:
        print(f"wrote {summary['file']}: {summary['file_bytes']} bytes, CR {summary['cr']:.2f}, "
              f"{summary['n_bins']} codebook entries, {summary['seconds']:.1f} s")  # fmt: skip
    return 0


def _cmd_compress(args) -> int:
    quiet = args.quiet or args.json
    # bars redraw with carriage returns: on a terminal they animate, in a log they are noise
    progress = not quiet and sys.stderr.isatty()

    def say(msg: str) -> None:
        if not quiet:
            print(msg, flush=True)

    if args.checkpoint is not None or args.k is not None:
        return _cmd_compress_checkpoint(args, say)
    spec_key = args.spec
    if spec_key in ("wsq:minilm", "minilm"):
        spec_key = "minilm"
    elif spec_key in ("wsq:pylm", "pylm"):
        spec_key = "pylm"
    elif spec_key in ("wsq:effnet", "effnet"):
        spec_key = "effnet"
    elif spec_key in (None, "digits", "wsq:digits"):
        spec_key = None
    opts = dict(DEFAULTS)
    opts.update(_SPEC_DEFAULTS.get(spec_key or "", {}))
    for k in DEFAULTS:
        v = getattr(args, k)
        if v is not None:
            opts[k] = v
    settings = build_settings(opts)
    if spec_key is not None and args.metric is not None:
        raise CliError(
            "--metric applies to the built-in digits default; a SPEC brings its own evaluate"
        )
    if spec_key not in (None, "minilm", "pylm", "effnet") and args.tolerance is None:
        # a SPEC's evaluate has units wsq cannot know: a default of 0 suits only a metric that can
        # stay exactly equal (accuracy); a continuous one (cosine, -loss) never does, and the
        # search would run to the end for nothing. Asked for here, before any work.
        raise CliError(
            "a SPEC needs --tolerance: the drop below its baseline that its evaluate allows, in "
            "its units (e.g. 0.005 for accuracy, 0.001 for a cosine similarity; 0 keeps only "
            "models that score at least the baseline)"
        )
    from wsq.cli.compress import run_compress
    from wsq.cli.table import format_table

    existed = os.path.isdir(os.path.abspath(os.path.expanduser(args.out)))
    out = _prepare_out(args.out)
    try:
        if spec_key is None:
            spec = _digits_spec(settings.seed, settings.metric, say)
        elif spec_key == "minilm":
            spec = _minilm_spec()
        elif spec_key == "pylm":
            spec = _pylm_spec()
        elif spec_key == "effnet":
            spec = _effnet_spec(say)
        else:
            spec = _user_spec(spec_key)
        summary = run_compress(spec, settings, out, say, progress=progress)
    except BaseException:
        if not existed and not os.listdir(out):
            os.rmdir(out)  # a folder this run created stays only when the run succeeded
        raise
    if args.json:
        print(json.dumps(json_safe(summary), allow_nan=False))
    elif args.quiet:
        print(summary["chosen"]["file"])  # where the file went: the one line --quiet keeps
    else:
        c = summary["chosen"]
        print()
        print(f"wsq compress {spec.name} ({spec.metric}; decisions on validation data, test only "
              f"reported; {summary['seconds']:.0f} s)")  # fmt: skip
        print(format_table(summary))
        print(
            "avg bits and CR: fixed-width indices for Random UB, MO-UB and + Merge; entropy-coded "
            "file sizes for + Huffman, + ANS and the Grid rows (wsq.tune: per-tensor steps on one "
            "shared grid, tuned to the tolerance) and Lloyd rows (wsq.lloyd_tables: each tensor's "
            "own values at a memory budget); mem bits: bits per weight the loaded model "
            "holds (each tensor's indices at its own width plus its table)"
        )
        if summary["baseline"]["test"] is None:
            print(
                "no held-out figure: the SPEC returned no test evaluate, so every Val figure is "
                "on the data the tolerance was decided on (return (model, evaluate, "
                "test_evaluate) for an honest Test column)"
            )
        margin = summary["settings"].get("margin", 0.0)
        print(
            "decisions kept val >= baseline - tolerance + margin = "
            f"{summary['baseline']['val']:.4f} - {summary['settings']['tolerance']:g} + {margin:g}"
        )
        for m, why in summary["failed"].items():
            print(f"method {m}: nothing within the tolerance ({why})")
        k = f"k={c['k']}, " if c["k"] is not None else ""
        print(
            f"saved {c['file']} (method {c['method']}): {k}{c['n_bins']} shared values, "
            f"{c['file_bytes']} bytes (CR {c['cr']:.2f}x); in memory {c['bits_memory']:.2f} "
            f"bits/weight ({c['cr_memory']:.2f}x smaller than dense), val {c['val']:.4f}"
            + (f", test {c['test']:.4f}" if c["test"] is not None else "")
        )
        print("also written: " + ", ".join(n for n in summary["files"] if n != "model.wsq"))
    return 0


def _build_info(as_json: bool) -> int:
    """``wsq info`` without FILE: this installation's build (both compiled modules, loaded)."""

    from wsq._info import info

    d = info()
    problems = []
    for key, name in (("cpu_module", "wsq._C"), ("cuda_module", "wsq._cuda")):
        try:
            d[key] = importlib.import_module(name).__file__
        except ImportError as e:
            d[key] = None
            if key == "cpu_module" or d["cuda_built"]:  # present but not loadable: a broken install
                problems.append(f"{name}: {_one_line(e)}")
    if as_json:
        print(json.dumps(json_safe(dict(d, ok=not problems, problems=problems))))
    else:
        for k, v in d.items():
            print(f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}")
        for p in problems:
            print(f"wsq info: DEFECT: {p}", file=sys.stderr)
    return 1 if problems else 0


def _cmd_info(args) -> int:
    from wsq.errors import FormatError

    if args.file is None:
        return _build_info(args.json)
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
        print(json.dumps(json_safe(dict(d, ok=True))))
    else:
        print(format_info(d))
    return 0


def _cmd_bench(args) -> int:
    from wsq.cli import bench

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
    rows, info = bench.run(quick=True, n=args.n, shape=shape, say=None if args.json else print)
    if args.json:
        print(json.dumps(json_safe({"machine": info, "rows": rows})))
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="wsq", description="Structure-agnostic weight-sharing compression for PyTorch models."
    )
    from wsq._info import __version__

    ap.add_argument("--version", action="version", version=f"wsq {__version__}")
    ap.add_argument("--traceback", action="store_true", help="show full tracebacks of errors")
    sub = ap.add_subparsers(dest="command", metavar="{compress,info,bench}")
    sub.required = True

    c = sub.add_parser(
        "compress",
        help="search, merge and entropy-code a model (no SPEC: the embedded digits default)",
        description="Compress with the paper's uniform method (NSGA-II over k, merge, entropy "
        "coding) and the grid method (wsq.tune) at the same --tolerance, keep the smaller file, "
        "print the paper-style table with both methods' rows and write model.wsq, summary.json "
        "(and front.csv/json/png from the uniform search) into --out. SPEC: 'module:function' or 'path/to/file.py:function' returning "
        "(model, evaluate) or (model, evaluate, test_evaluate); 'minilm' for all-MiniLM-L6-v2 "
        "(needs wsq[hf]); 'pylm' for a LLaMA-shaped byte LM trained on the Python standard library "
        "(wsq.examples.pylm, held-out perplexity; needs wsq[hf]); 'effnet' for the pretrained ImageNet "
        "EfficientNet-Lite0, equalized, judged by top-1 agreement on skimage photos (needs "
        "wsq[cnn]); none: a small CNN on scikit-learn's digits.",
    )
    c.add_argument("spec", nargs="?", metavar="SPEC")
    c.add_argument("--out", default="wsq-out", help="output directory (default ./wsq-out)")
    c.add_argument("--k-min", type=int, help="smallest k searched (default 2)")
    c.add_argument("--k-max", type=int, help="largest k searched, also the Random UB k (1024)")
    c.add_argument("--pop", type=int, help="NSGA-II population (default 100)")
    c.add_argument("--gens", type=int, help="NSGA-II generations (default 100)")
    c.add_argument("--seed", type=int, help="seed of the search and of the digits split (0)")
    c.add_argument(
        "--tolerance", type=float,
        help="allowed drop below the baseline, in the evaluate's units (digits default 0.005, "
        "minilm 0.01, pylm 0.01 nats/byte, effnet 0.05; a SPEC must set it)",
    )  # fmt: skip
    c.add_argument(
        "--margin", type=float,
        help="keep the validation score at least this much better than --tolerance requires "
        "(0 <= margin <= tolerance; default 0): a small validation set flatters the model a "
        "tune stops at, and the margin is the room left for that noise on held-out data",
    )  # fmt: skip
    c.add_argument(
        "--method", choices=("auto", "grid", "uniform", "lloyd"),
        help="grid: per-tensor steps on one shared grid (wsq.tune); uniform: the paper's NSGA-II "
        "over k + merge; lloyd: each tensor's own Lloyd values drawn into the shared codebook "
        "(wsq.lloyd_tables), the smallest memory budget of 2..8 bits/w within the tolerance; "
        "auto (default): uniform and grid, keep the best by --prefer",
    )  # fmt: skip
    c.add_argument(
        "--prefer", choices=("file", "memory"),
        help="which model to keep among those within the tolerance: file (default): the smallest "
        "file, ties to the smaller running model; memory: the smallest running model (bytes the "
        "loaded model holds), ties to the smaller file",
    )  # fmt: skip
    c.add_argument("--grid-iters", type=int, help="grid: evaluations tuning each scale (10)")
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
    c.add_argument(
        "--quiet", action="store_true", help="no progress, no table: only the saved file's path"
    )
    c.add_argument(
        "--checkpoint", metavar="PATH",
        help="compress a safetensors checkpoint (a file, HF shards' index, or their folder) "
        "without loading its dense weights: SPEC's function returns the model to fill (built "
        "under wsq.empty_parameters), uniform bins at --k, no evaluation",
    )  # fmt: skip
    c.add_argument("--k", type=int, help="with --checkpoint: the number of bins (2..65536)")
    c.add_argument("--json", action="store_true", help="print the summary as JSON only")
    c.set_defaults(func=_cmd_compress)

    i = sub.add_parser(
        "info", help="describe a wsq file and verify its checksums; without FILE, this build"
    )
    i.add_argument("file", metavar="FILE", nargs="?", default=None)
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=_cmd_info)

    b = sub.add_parser("bench", help="a few seconds of kernel microbenchmarks")
    b.add_argument("--n", type=int, default=2_000_000, help="weights for the pass rows (2M)")
    b.add_argument("--matmul", help="LUT matmul shape OUTxIN (default 4096x4096)")
    b.add_argument("--json", action="store_true", help="print JSON")
    b.set_defaults(func=_cmd_bench)
    return ap


def _short_line(msg: str) -> str:
    msg = " ".join(msg.split())
    if len(msg) <= ERROR_CHARS:
        return msg
    return msg[: ERROR_CHARS - 40].rstrip() + " ... (--traceback shows all)"


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
        print(f"wsq: error: {_short_line(str(e))}", file=sys.stderr)
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
