"""The pipeline of ``wsq compress`` (see wsq.cli): both methods at one tolerance, the table, the
chosen file re-scored from its own bytes, the all-or-nothing writes into --out."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable

from wsq.cli.specs import CliError, Spec, _describe, _one_line
from wsq.search.result import json_safe


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
        **{k: rng(k) for k in ("val", "test", "k", "n_bins", "bits", "mem_bits", "cr")},
    }


def _fmt_range(r, fmt: str) -> str:
    if r is None:
        return "-"
    a, b = (format(v, fmt) for v in r)
    return a if a == b else f"{a}-{b}"


def format_table(summary: dict) -> str:
    """The paper-style table of a ``wsq compress`` summary."""
    cols = ["Method", "Val", "Test", "k", "shared values", "avg bits", "mem bits", "CR"]
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
                _fmt_range(r.get("mem_bits"), ".2f"),
                _fmt_range(r["cr"], ".2f"),
            ]
        )
    w = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(cols)) + " |"
    sep = "|" + "|".join("-" * (x + 2) for x in w) + "|"
    body = ["| " + " | ".join(r[i].ljust(w[i]) for i in range(len(cols))) + " |" for r in rows]
    return "\n".join([line, sep, *body])


class _NotReached(Exception):
    """A method found no model within the tolerance (the message says what it tried)."""


class _Guarded:
    """The SPEC's evaluate with errors that name it: an exception it raises becomes a CliError
    (so the run stops cleanly, nothing half-written in --out)."""

    def __init__(self, fn: Callable, name: str) -> None:
        self.fn, self.name = fn, name

    def __call__(self, model):
        try:
            return self.fn(model)
        except CliError:
            raise
        except Exception as e:
            raise CliError(f"the {self.name} callable raised {_one_line(e)}") from e


def _uniform(spec, opts, ctx, say, progress) -> dict:
    """The paper's pipeline: NSGA-II over k, merge the best front solutions, entropy-code."""
    from wsq.core.merge import merge
    from wsq.search import search

    t0 = time.perf_counter()
    say(
        f"uniform: NSGA-II pop {opts['pop']} x {opts['gens']} generations, k in "
        f"[{opts['k_min']}, {opts['k_max']}], variables {opts['variables']}, seed {opts['seed']}"
    )
    res = search(
        spec.model, ctx["evaluate"], k_min=opts["k_min"], k_max=opts["k_max"],
        pop_size=opts["pop"], generations=opts["gens"], seed=opts["seed"],
        variables=opts["variables"], coder=opts["coder"], progress=progress,
    )  # fmt: skip
    # the margin keeps every decision that much inside the tolerance (see --margin)
    tol = opts["tolerance"] - opts.get("margin", 0.0)
    ok = [s for s in res.front if s.drop <= tol]
    if not ok:
        best = min((s.drop for s in res.front), default=math.nan)
        bar = f"--tolerance {opts['tolerance']}" + (
            f" - --margin {opts['margin']}" if opts.get("margin") else ""
        )
        raise _NotReached(
            f"no front solution of {res.n_evaluations} evaluations is within {bar} "
            f"(smallest drop {best:.4g})"
        )
    chosen_set = sorted(ok, key=lambda s: (s.bits, s.drop))[: opts["merge_top"]]
    val_of, test_of, original = ctx["val_of"], ctx["test_of"], ctx["original"]
    pre, merged = [], []
    for s in chosen_set:
        c = res.compress(s)
        pre.append({"k": s.k, "n_bins": s.n_bins, "val": val_of(c.model), "test": test_of(c.model),
                    "bits": float(c.bits), "mem_bits": c.memory()["bits_memory"],
                    "cr": original / _fixed_bytes(c)})  # fmt: skip
        m = merge(
            c, ctx["evaluate"], tolerance=tol, baseline=ctx["base_val"],
            max_evals=opts["merge_evals"], progress=progress,
        )  # fmt: skip
        del c
        info = m.merge_info
        say(
            f"merge of k={s.k}: {info['n_before']} -> {info['n_after']} shared values in "
            f"{info['evaluations']} evaluations ({info['decisions']} pair decisions)"
        )
        item = {"method": "uniform", "k": s.k, "n_bins": info["n_after"], "val": val_of(m.model),
                "test": test_of(m.model), "model": m, "merge": info,
                "memory": _memory(m)}  # fmt: skip
        for coder in ("huffman", "ans", opts["coder"]):
            item[coder] = _coded(m, coder)
        merged.append(item)

    def view(items, bits_of, cr_of):
        return [{"k": it["k"], "n_bins": it["n_bins"], "val": it["val"], "test": it["test"],
                 "bits": bits_of(it), "mem_bits": it["memory"]["bits_memory"],
                 "cr": cr_of(it)} for it in items]  # fmt: skip

    rows = [_row("MO-UB front", pre)]
    rows.append(
        _row("+ Merge", view(merged, lambda it: float(it["model"].bits),
                             lambda it: original / _fixed_bytes(it["model"])))
    )  # fmt: skip
    for coder, label in (("huffman", "+ Huffman"), ("ans", "+ ANS")):
        rows.append(
            _row(label, view(merged, lambda it, c=coder: it[c]["bits"],
                             lambda it, c=coder: it[c]["cr"]))
        )  # fmt: skip
    return {"rows": rows, "candidates": merged, "search": res,
            "seconds": time.perf_counter() - t0}  # fmt: skip


def _coded(c, coder: str) -> dict:
    st = c.stats(coder)
    return {"bits": st["bits_entropy"], "file_bytes": st["file_bytes"], "cr": st["cr"]}


def _memory(c) -> dict:
    """What the loaded model holds (each tensor at its own width): the figures the summary keeps."""
    m = c.memory()
    keep = ("bits_memory", "param_bytes_compressed", "param_bytes_dense", "cr_memory", "widths")
    return {k: m[k] for k in keep}


def _probe(spec, ctx, gq, who: str, say):
    """Each pooled tensor's sensitivity (wsq.core.grid.probe_sensitivity) with the SPEC's probe, or
    its evaluate when it has none."""
    from wsq.core import grid

    t0 = time.perf_counter()
    probe = _Guarded(spec.probe, "probe") if spec.probe is not None else ctx["evaluate"]
    pbase = ctx["base_val"] if spec.probe is None else grid.score(probe, spec.model, "probe")
    if not math.isfinite(pbase):
        raise CliError(f"the probe callable returned {pbase} on the original model")
    sens = grid.probe_sensitivity(gq, probe, pbase)
    say(f"{who}: probed {len(sens)} tensors in {time.perf_counter() - t0:.1f} s")
    return sens


def _coded_rows(items: list[dict]) -> list[dict]:
    """Table rows of the grid / Lloyd candidates: each with both coders' file sizes."""
    return [
        _row(f"{it['label']} + {coder_label}",
             [{"k": None, "n_bins": it["n_bins"], "val": it["val"], "test": it["test"],
               "bits": it[coder]["bits"], "mem_bits": it["memory"]["bits_memory"],
               "cr": it[coder]["cr"]}])
        for it in items
        for coder, coder_label in (("huffman", "Huffman"), ("ans", "ANS"))
    ]  # fmt: skip


def _grid(spec, opts, ctx, say) -> dict:
    """wsq.tune at the tolerance, plain and rate-aware rounding (one probe shared by both)."""
    import wsq
    from wsq.core import grid

    t0 = time.perf_counter()
    gq = grid.GridQuantizer(spec.model)
    sens = _probe(spec, ctx, gq, "grid", say)
    items, notes, start = [], [], None
    bias_inputs = getattr(spec, "bias_inputs", None)
    variants = [("Grid steps", 0.0), ("Grid steps + rate-aware", 1.0)]
    if bias_inputs is not None:  # a CNN spec: the grid again, with bias correction per candidate
        variants.append(("Grid steps + rate-aware + bias", 1.0))
    for label, rd in variants:
        try:
            if label.endswith("+ bias"):
                c = wsq.tune_equalized(
                    spec.model, ctx["evaluate"], bias_inputs, rd=rd, baseline=ctx["base_val"],
                    tolerance=opts["tolerance"] - opts.get("margin", 0.0), sensitivities=sens,
                    iters=opts["grid_iters"], start_scale=start,
                )  # fmt: skip
            else:
                c = wsq.tune(
                    spec.model, ctx["evaluate"], tolerance=opts["tolerance"], rd=rd,
                    margin=opts.get("margin", 0.0), baseline=ctx["base_val"], sensitivities=sens,
                    quantizer=gq,
                    iters=opts["grid_iters"], start_scale=start,
                )  # fmt: skip
        except ValueError as e:
            notes.append(f"{label}: {e}")
            say(f"grid: {label}: {e}")
            continue
        info = c.tune_info
        start = info["scale"]
        item = {"method": "grid", "label": label, "k": None, "rd": rd, "scale": info["scale"],
                "n_bins": int(c.codebook.numel()), "val": ctx["val_of"](c.model),
                "test": ctx["test_of"](c.model), "model": c,
                "evaluations": info["evaluations"], "memory": _memory(c)}  # fmt: skip
        for coder in ("huffman", "ans", opts["coder"]):
            item[coder] = _coded(c, coder)
        say(
            f"grid: {label}: {item['n_bins']} shared values, "
            f"{item[opts['coder']]['bits']:.3f} bits/w, CR {item[opts['coder']]['cr']:.2f}x, "
            f"val {item['val']:.4f} ({info['evaluations']} evaluations)"
        )
        items.append(item)
    if not items:
        raise _NotReached("; ".join(notes))
    rows = _coded_rows(items)
    return {"rows": rows, "candidates": items, "notes": notes,
            "seconds": time.perf_counter() - t0}  # fmt: skip


# Memory budgets (bits per weight, indices and tables) --method lloyd tries, smallest first.
LLOYD_BUDGETS = (2.0, 3.0, 4.0, 5.0, 6.0, 8.0)


def _lloyd(spec, opts, ctx, say) -> dict:
    """wsq.lloyd_tables at rising memory budgets (one probe shared by all): the smallest budget
    whose model stays within the tolerance, and the next one up."""
    import wsq
    from wsq.core import grid

    t0 = time.perf_counter()
    sens = _probe(spec, ctx, grid.GridQuantizer(spec.model), "lloyd", say)
    floor = ctx["base_val"] - opts["tolerance"] + opts.get("margin", 0.0)
    items, notes = [], []
    for budget in LLOYD_BUDGETS:
        label = f"Lloyd tables <= {budget:g} bits/w in memory"
        try:
            c = wsq.lloyd_tables(
                spec.model, budget=budget, evaluate=ctx["evaluate"], sensitivities=sens
            )
        except ValueError as e:  # the tables alone need more (a small model): a larger budget
            notes.append(f"{label}: {e}")
            say(f"lloyd: {label}: {e}")
            continue
        val = ctx["val_of"](c.model)
        if not val >= floor:  # NaN fails
            notes.append(f"{label}: val {val:.6g} < {floor:.6g}")
            say(f"lloyd: {label}: val {val:.4f}, below {floor:.4f}")
            continue
        item = {"method": "lloyd", "label": label, "k": None, "budget": budget,
                "n_bins": int(c.codebook.numel()), "val": val, "test": ctx["test_of"](c.model),
                "model": c, "memory": _memory(c)}  # fmt: skip
        for coder in ("huffman", "ans", opts["coder"]):
            item[coder] = _coded(c, coder)
        say(
            f"lloyd: {label}: {item['memory']['bits_memory']:.3f} bits/w in memory, "
            f"{item[opts['coder']]['bits']:.3f} in the file, val {val:.4f}"
        )
        items.append(item)
        if len(items) == 2:  # the next budget up may code smaller (--prefer file)
            break
    if not items:
        raise _NotReached("; ".join(notes))
    rows = _coded_rows(items)
    return {"rows": rows, "candidates": items, "notes": notes,
            "seconds": time.perf_counter() - t0}  # fmt: skip


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


def run_compress(spec: Spec, opts: dict, out: str, say: Callable[[str], None], progress: bool):
    """The whole pipeline; returns the summary dict (also written to out/summary.json).

    Every file is written into a temporary folder inside ``out`` and moved into place only when
    the whole run succeeded, so a failure (an evaluate that raises, no method within the
    tolerance) leaves nothing half-written in ``out``.
    """
    import wsq

    t_start = time.perf_counter()
    model = spec.model
    evaluate = _Guarded(spec.evaluate, "evaluate")
    test = _Guarded(spec.test, "test evaluate") if spec.test is not None else None

    def val_of(m) -> float:
        import torch

        with torch.no_grad():
            v = evaluate(m)
        try:
            return float(v)
        except (TypeError, ValueError):
            raise CliError(f"the evaluate callable returned {_describe(v)}, not a float") from None

    def test_of(m) -> float | None:
        import torch

        if test is None:
            return None
        with torch.no_grad():
            return float(test(m))

    base_val, base_test = val_of(model), test_of(model)
    if not math.isfinite(base_val):
        raise CliError(
            f"the evaluate callable returned {base_val} on the original model; it must be finite"
        )
    # Random UB: the paper's fixed k = 1024 (here --k-max) binning, for reference
    ub = wsq.compress(model, opts["k_max"])
    ub_stats = ub.stats(opts["coder"])
    original = ub_stats["original_bytes"]
    n_weights = ub_stats["n_weights"]
    rows = [
        {"method": "Baseline", "val": base_val, "test": base_test, "k": None, "n_bins": n_weights,
         "bits": 8.0 * (original - sum(t.numel() * t.element_size()
                                       for t in ub.rest_state().values())) / n_weights,
         "mem_bits": 8.0 * (original - sum(t.numel() * t.element_size()
                                           for t in ub.rest_state().values())) / n_weights,
         "cr": 1.0},
        {"method": f"Random UB k={opts['k_max']}", "val": val_of(ub.model),
         "test": test_of(ub.model), "k": opts["k_max"], "n_bins": ub_stats["n_bins"],
         "bits": float(ub.bits), "mem_bits": ub.memory()["bits_memory"],
         "cr": original / _fixed_bytes(ub)},
    ]  # fmt: skip
    rows = [_row(r["method"], [r]) for r in rows]
    del ub
    ctx = {"evaluate": evaluate, "val_of": val_of, "test_of": test_of, "base_val": base_val,
           "original": original}  # fmt: skip
    parts, failed = {}, {}
    methods = ("uniform", "grid") if opts["method"] == "auto" else (opts["method"],)
    for method in methods:
        try:
            if method == "uniform":
                parts[method] = _uniform(spec, opts, ctx, say, progress)
            elif method == "lloyd":
                parts[method] = _lloyd(spec, opts, ctx, say)
            else:
                parts[method] = _grid(spec, opts, ctx, say)
        except _NotReached as e:
            failed[method] = str(e)
            say(f"{method}: nothing within --tolerance {opts['tolerance']}: {e}")
    if not parts:
        raise CliError(
            f"the evaluate callable never reached baseline {base_val:.6g} - --tolerance "
            f"{opts['tolerance']:g}: raise --tolerance ("
            + "; ".join(f"{m}: {_clip(why, 90)}" for m, why in failed.items())
            + ")"
        )
    for method in methods:
        if method in parts:
            rows += parts[method]["rows"]

    # the chosen model (all passed the validation bar in memory): --prefer file, the smallest file
    # with the chosen coder, ties to the smaller running model; memory, the other way round
    def file_of(it):
        return it[opts["coder"]]["file_bytes"]

    def held_of(it):
        return it["memory"]["param_bytes_compressed"]

    order = (file_of, held_of) if opts["prefer"] == "file" else (held_of, file_of)
    cands = sorted(
        (it for p in parts.values() for it in p["candidates"]),
        key=lambda it: (order[0](it), order[1](it), -it["val"]),
    )
    res = parts["uniform"]["search"] if "uniform" in parts else None
    names = ["model.wsq", "summary.json"]
    if res is not None:
        names[1:1] = ["front.csv", "front.json", "front.png"]
    tmp = tempfile.mkdtemp(dir=out, prefix=".wsq-tmp-")
    try:
        floor = base_val - opts["tolerance"] + opts.get("margin", 0.0)
        best, reloaded, rejected = _first_that_reloads(spec, cands, tmp, opts, val_of, floor, say)
        size = os.path.getsize(os.path.join(tmp, "model.wsq"))
        if res is not None:
            res.to_csv(os.path.join(tmp, "front.csv"))
            res.to_json(os.path.join(tmp, "front.json"))
            res.plot(os.path.join(tmp, "front.png"),
                     title=f"wsq compress {spec.name}: Pareto front (uniform)")  # fmt: skip
        path = os.path.join(out, "model.wsq")
        summary = {
            "spec": spec.name,
            "metric": spec.metric,
            "settings": dict(opts),
            "baseline": {"val": base_val, "test": base_test},
            "rows": rows,
            "methods": {m: {"seconds": p["seconds"]} for m, p in parts.items()},
            "failed": failed,
            "merged": [{k: v for k, v in it.items() if k != "model"}
                       for it in parts.get("uniform", {}).get("candidates", [])],
            "grid": [{k: v for k, v in it.items() if k != "model"}
                     for it in parts.get("grid", {}).get("candidates", [])],
            "lloyd": [{k: v for k, v in it.items() if k != "model"}
                      for it in parts.get("lloyd", {}).get("candidates", [])],
            "chosen": {"method": best["method"], "k": best["k"], "n_bins": best["n_bins"],
                       "val": best["val"], "val_reloaded": reloaded, "test": best["test"],
                       "file": path,
                       "file_bytes": size, "original_bytes": original, "cr": original / size,
                       "coder": opts["coder"], **best["memory"]},
            "rejected_on_reload": rejected,
            "files": {n: os.path.join(out, n) for n in names},
            "seconds": time.perf_counter() - t_start,
        }  # fmt: skip
        if res is not None:
            summary["search"] = {"evaluations": res.n_evaluations, "front_size": len(res.front),
                                 "hypervolume": res.hypervolume(),
                                 "seconds": parts["uniform"]["seconds"]}  # fmt: skip
        with open(os.path.join(tmp, "summary.json"), "w") as f:
            json.dump(json_safe(summary), f, indent=1, allow_nan=False)
            f.write("\n")
        try:
            _publish(tmp, out, names)
        except OSError as e:
            raise CliError(
                f"cannot move the results into --out {out!r}: {e.strerror or e}; it holds what it "
                "held before this run"
            ) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


# Everything `wsq compress` writes into --out: a run replaces all of them (one that it does not
# write this time, e.g. front.* before a --method grid run, is removed), other files stay.
OUTPUTS = ("model.wsq", "front.csv", "front.json", "front.png", "summary.json")


def _first_that_reloads(spec, cands, tmp, opts, val_of, floor, say):
    """Save the smallest candidate into tmp/model.wsq, load it back from those bytes into the
    SPEC's architecture and score it: the file is kept only if the loaded model is within the
    tolerance (the candidates were scored in memory). Else the next smallest, and so on.
    Returns (candidate, its reloaded score, the rejected ones)."""
    import wsq

    path = os.path.join(tmp, "model.wsq")
    rejected = []
    for it in cands:
        wsq.save(it["model"], path, coder=opts["coder"])
        got = val_of(wsq.load(path, spec.model).model)
        if got >= floor:
            return it, got, rejected
        rejected.append({"method": it["method"], "k": it["k"], "n_bins": it["n_bins"],
                         "val": it["val"], "val_reloaded": got,
                         "file_bytes": os.path.getsize(path)})  # fmt: skip
        say(f"{it['method']} file of {os.path.getsize(path)} bytes scores {got:.6g} when loaded "
            f"back from its bytes (in memory {it['val']:.6g}), below {floor:.6g}: not kept")  # fmt: skip
    worst = rejected[0]
    raise CliError(
        f"no compressed file kept its score when loaded back from its bytes ({len(rejected)} "
        f"tried; the smallest: {worst['val_reloaded']:.6g} reloaded vs {worst['val']:.6g} in "
        f"memory, below baseline - --tolerance = {floor:.6g}); nothing written"
    )


def _publish(staging: str, out: str, names: list[str]) -> None:
    """Move the staged files into out as a whole: an earlier run's outputs (OUTPUTS) are set
    aside first and dropped only once every new file is in place; a failure part-way puts them
    back, so out holds either the earlier run's files or this run's, never a mix."""
    backup = tempfile.mkdtemp(dir=out, prefix=".wsq-old-")
    old = [n for n in OUTPUTS if os.path.lexists(os.path.join(out, n))]
    moved: list[str] = []
    placed: list[str] = []
    try:
        for n in old:
            os.replace(os.path.join(out, n), os.path.join(backup, n))
            moved.append(n)
        for n in names:
            os.replace(os.path.join(staging, n), os.path.join(out, n))
            placed.append(n)
    except BaseException:
        for n in placed:
            os.replace(os.path.join(out, n), os.path.join(staging, n))
        for n in moved:
            os.replace(os.path.join(backup, n), os.path.join(out, n))
        os.rmdir(backup)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def run_checkpoint(spec: str, checkpoint: str, k: int, out: str, coder: str, say) -> dict:
    """``wsq compress SPEC --checkpoint PATH --k K``: uniform binning at k straight from a
    safetensors checkpoint (one file, Hugging Face shards + index, or their folder), never
    holding the dense model. SPEC's function returns the model to fill (or a tuple whose first
    item is it); it runs under wsq.empty_parameters(), so its parameters stay on the meta device.
    The file is loaded back from its bytes and its indices compared with the compressed model's
    before out receives model.wsq and summary.json (as a whole, like run_compress)."""
    import torch

    import wsq
    from wsq.cli.specs import _import_spec

    fn = _import_spec(spec)

    def template() -> torch.nn.Module:
        try:
            with wsq.empty_parameters():
                m = fn()
        except Exception as e:
            raise CliError(f"bad SPEC {spec!r}: {fn.__name__}() raised {_one_line(e)}") from e
        m = m[0] if isinstance(m, (tuple, list)) and m else m
        if not isinstance(m, torch.nn.Module):
            raise CliError(
                f"bad SPEC {spec!r}: with --checkpoint the function must return the model (an "
                f"nn.Module, or a tuple starting with it), got {_describe(m)}"
            )
        return m

    t0 = time.perf_counter()
    tmp = tempfile.mkdtemp(dir=out, prefix=".wsq-tmp-")
    try:
        path = os.path.join(tmp, "model.wsq")
        say(f"compressing {checkpoint} at k={k} (one tensor at a time)")
        try:
            c = wsq.compress_checkpoint(checkpoint, template(), k, out=path, coder=coder)
        except (ValueError, TypeError, OSError, wsq.FormatError) as e:
            raise CliError(f"--checkpoint {checkpoint!r}: {_one_line(e)}") from e
        back = wsq.load(path, template())  # re-read from its bytes before it is published
        if not torch.equal(c.codebook, back.codebook):
            raise CliError("the written file does not load back to the same codebook")
        for name, q in c.quantized.items():
            if not torch.equal(q.packed, back.quantized[name].packed):
                raise CliError(f"{name}: the written file does not load back to the same indices")
        del back
        s = c.stats()
        summary = {
            "checkpoint": os.path.abspath(checkpoint), "spec": spec, "method": "uniform", "k": k,
            "n_bins": int(c.codebook.numel()), "file": os.path.join(out, "model.wsq"),
            "file_bytes": os.path.getsize(path), "original_bytes": int(s["original_bytes"]),
            "cr": s["original_bytes"] / os.path.getsize(path),
            "seconds": time.perf_counter() - t0,
        }  # fmt: skip
        with open(os.path.join(tmp, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        _publish(tmp, out, ["model.wsq", "summary.json"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary
