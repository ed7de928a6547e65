"""The language-model page of bench/results.py: wsq.examples.pylm, perplexity against bits/weight.

Every row is measured in the run that writes the page: held-out perplexity per byte (the ``test``
files of wsq.examples.pylm), the decision perplexity (``val`` files: the only data any tune sees),
bits per pooled weight in memory (what the model holds: indices or codes plus tables, scales and
codebooks) and in the file (a real file on disk: 8 x its bytes / pooled weights, every tensor of
the model counted, the same entropy coder for every method's codes).

wsq rows: wsq.compress at several k (uniform bins, one shared codebook); the grid method
(wsq.tune) at tolerances and at in-memory budgets (the scale bisected until the widths the
tensors need fit the budget: no evaluation decides it). Peers, with their scales counted:
round-to-nearest int4/int3 per group of 128 (symmetric with an fp16 scale, and torch's int4 layout:
asymmetric with a bf16 scale and zero per group), NF4 (bitsandbytes' normal-float codebook) with
a per-block absmax, and per-tensor k-means (exact 1-D Lloyd) with 16 and 8 centroids.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import torch
from _results_peers import _rest_tensors, _stream, kmeans1d, nearest, write_safetensors

import wsq
from wsq.core import grid
from wsq.core.pool import collect_pool
from wsq.core.tables import lloyd_tables

# bitsandbytes' NF4 code (the 16 quantiles of N(0, 1), normalised to [-1, 1], with an exact 0)
NF4 = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171066284, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
)  # fmt: skip

CONFIG = dict(
    uniform_ks=[8, 16, 32, 256],
    # (tolerance, margin): ln(1.01), ln(1.05) are the 1% and 5% perplexity bars
    tunes=[(0.00995, 0.0), (0.00995, 0.003)],
    budgets=[4.0, 3.0],  # bits/weight in memory
    table_bits=[4, 3],
    table_budgets=[4.0, 3.0, 2.5],
    rd=1.0,
    tune_iters=8,
)
QUICK = dict(
    uniform_ks=[16],
    tunes=[(0.7, 0.05)],  # the tiny model's grid stalls ~0.6 nats below fp32
    budgets=[4.0],
    table_bits=[4],
    table_budgets=[4.0],
    tune_iters=3,
)


class PylmTask:
    """wsq.examples.pylm with its decision (val files) and held-out (test files) metrics."""

    def __init__(self, recipe=None, directory: str | None = None) -> None:
        from wsq.examples import pylm

        self.recipe = recipe or pylm.Recipe()
        self.model, self.decide, self.report = pylm.spec(self.recipe, directory=directory)
        self.data = {
            "decide": f"val files {', '.join(pylm.FILES['val'])}: {self.recipe.eval_windows} "
            f"windows of {self.recipe.seq} bytes",
            "report": f"test files {', '.join(pylm.FILES['test'])}: {self.recipe.eval_windows} "
            f"windows of {self.recipe.seq} bytes (never used for a decision)",
            "train": f"{len(pylm.FILES['train'])} other stdlib files",
        }

    def ppl(self, model) -> tuple[float, float]:
        with torch.no_grad():
            return math.exp(-float(self.decide(model))), math.exp(-float(self.report(model)))


# ----------------------------------------------------------------------------- peers


def group_rtn(w: torch.Tensor, bits: int, group: int, *, sym: bool):
    """Round-to-nearest per `group` consecutive weights of each row. Symmetric: fp16 scale =
    absmax / (2**(bits-1) - 1), codes -qmax..qmax. Asymmetric (torch's int4 layout): bf16 scale
    (max - min) / (2**bits - 1) and bf16 zero, codes 0..2**bits - 1. The stored (rounded) scales
    are the ones that dequantize. Returns (codes int64 >= 0, [scale tensors], dequantized)."""
    g = w.reshape(-1, group).float()
    if sym:
        qmax = (1 << (bits - 1)) - 1
        s = (g.abs().amax(1, keepdim=True) / qmax).clamp_min(1e-8).half()
        sf = s.float()
        q = torch.clamp(torch.round(g / sf), -qmax, qmax)
        return (q + qmax).long(), [s], (q * sf).reshape(w.shape)
    top = (1 << bits) - 1
    lo, hi = g.amin(1, keepdim=True), g.amax(1, keepdim=True)
    s = ((hi - lo) / top).clamp_min(1e-8).bfloat16()
    z = lo.bfloat16()
    sf, zf = s.float(), z.float()
    q = torch.clamp(torch.round((g - zf) / sf), 0, top)
    return q.long(), [s, z], (q * sf + zf).reshape(w.shape)


def nf4(w: torch.Tensor, block: int, scale_dtype: torch.dtype):
    """NF4: per `block` consecutive weights an absmax scale (stored in `scale_dtype`), each weight
    the nearest of the 16 NF4 values times it. Returns (codes, [absmax], dequantized)."""
    g = w.reshape(-1, block).float()
    a = g.abs().amax(1, keepdim=True).clamp_min(1e-8).to(scale_dtype)
    af = a.float()
    code = np.asarray(NF4)
    q = nearest((g / af).reshape(-1), code).long().reshape(g.shape)
    return q, [a], (torch.as_tensor(code, dtype=torch.float32)[q] * af).reshape(w.shape)


def kmeans_tensor(w: torch.Tensor, k: int):
    """Per-tensor exact 1-D k-means: (codes, [fp32 codebook], dequantized)."""
    c, _ = kmeans1d(w.reshape(-1).numpy(), k)
    q = nearest(w.reshape(-1), c).long()
    tab = torch.as_tensor(c, dtype=torch.float32)
    return q, [tab], tab[q].reshape(w.shape)


LAYOUT = {4: "torch's int4 layout", 3: "torch's int4 layout's scale + zero, at 3 bits"}


def peer_specs() -> list[tuple[str, dict, object]]:
    """(label, params, fn(w) -> (codes, scale tensors, dequantized)) of every peer row."""
    out = []
    for b in (4, 3):
        out.append((f"RTN int{b}, group 128, symmetric, fp16 scale", dict(bits=b, group=128),
                    lambda w, b=b: group_rtn(w, b, 128, sym=True)))  # fmt: skip
        out.append((f"RTN int{b}, group 128, asymmetric bf16 scale + zero ({LAYOUT[b]})",
                    dict(bits=b, group=128), lambda w, b=b: group_rtn(w, b, 128, sym=False)))  # fmt: skip
    out.append(("NF4, block 64, fp32 absmax (bitsandbytes without double quantization)",
                dict(bits=4, block=64), lambda w: nf4(w, 64, torch.float32)))  # fmt: skip
    out.append(("NF4, block 128, fp16 absmax", dict(bits=4, block=128),
                lambda w: nf4(w, 128, torch.float16)))  # fmt: skip
    for k in (16, 8):
        out.append((f"k-means per tensor, {k} centroids (exact 1-D Lloyd, fp32 codebooks)",
                    dict(k=k), lambda w, k=k: kmeans_tensor(w, k)))  # fmt: skip
    return out


def peer_row(task: PylmTask, label: str, params: dict, fn, directory: str, n_symbols: int) -> dict:
    """Quantize every pooled tensor with fn, write the real file (codes as wsq.entropy streams,
    scales/codebooks in their stored dtype, every other tensor), score on a working copy."""
    import copy

    t0 = time.perf_counter()
    pool = collect_pool(task.model)
    work = copy.deepcopy(task.model)
    tensors: dict[str, torch.Tensor] = {}
    mem_bits = 0
    pooled = set()
    n = 0
    with torch.no_grad():
        for e, p, dst in zip(
            pool.entries, pool.tensors(task.model), pool.tensors(work), strict=True
        ):
            codes, scales, deq = fn(p.detach().float().reshape(e.shape))
            dst.copy_(deq.reshape(dst.shape).to(dst.dtype))
            width = int(params.get("bits") or math.ceil(math.log2(params["k"])))
            mem_bits += e.numel * width
            tensors["codes." + e.name] = _stream(codes.reshape(-1), n_symbols)
            for j, s in enumerate(scales):
                s = s.reshape(-1).contiguous()
                tensors[f"scale{j}." + e.name] = s
                mem_bits += s.numel() * s.element_size() * 8
            pooled.update(e.names)
            n += e.numel
    tensors.update(_rest_tensors(task.model, pooled))
    fb = write_safetensors(tensors, {"method": label}, directory, "peer")
    val, test = task.ppl(work)
    return dict(method=label, family="peer", params=params, bits_memory=mem_bits / n,
                bits_file=8 * fb / n, file_bytes=fb, val_ppl=val, test_ppl=test,
                time_s=time.perf_counter() - t0, decided_on="-")  # fmt: skip


# ----------------------------------------------------------------------------- wsq


def wsq_row(
    task: PylmTask, c: wsq.Compressed, label: str, params: dict, t0: float, **extra
) -> dict:
    st = c.stats()
    val, test = task.ppl(c.model)
    return dict(method=label, family="wsq", params=params, bits_memory=st["bits_memory"],
                bits_file=8 * st["file_bytes"] / st["n_weights"], file_bytes=st["file_bytes"],
                val_ppl=val, test_ppl=test, n_bins=st["n_bins"], widths=st["widths"],
                time_s=time.perf_counter() - t0, **extra)  # fmt: skip


def memory_bits_of(gq: grid.GridQuantizer, res: grid.GridResult) -> float:
    """Bits per pooled weight a grid result holds in memory (each tensor at the width its values
    need plus its float32 table), from the per-stream histograms (no model is built)."""
    from wsq.nn import held_bytes

    hist = np.asarray(res.per_stream)
    used, numel = (hist > 0).sum(1), hist.sum(1)
    return (
        8 * sum(held_bytes(int(m), int(v)) for m, v in zip(numel, used, strict=True)) / numel.sum()
    )


def grid_at_budget(gq, sens, budget: float, rd: float, start: float, iters: int = 14):
    """The finest scale (largest file, best quality) whose in-memory bits fit `budget`: bracket
    and bisect on the bits alone (no evaluation). Returns (scale, plan, bits)."""

    def bits_at(scale: float) -> tuple[float, object]:
        plan = grid.plan_for(grid.allocate(gq.numel, sens, scale), rd=rd)
        try:
            res = gq.quantize(plan)
        except ValueError:
            return math.inf, plan
        return memory_bits_of(gq, res), plan

    # bits fall as the scale grows; find fits(hi) and not fits(lo)
    lo = hi = start
    b, _ = bits_at(start)
    if b <= budget:
        while True:
            lo /= 2
            if bits_at(lo)[0] > budget:
                break
    else:
        while True:
            hi *= 2
            if bits_at(hi)[0] <= budget:
                break
    a, z = math.log(lo), math.log(hi)
    for _ in range(iters):
        mid = 0.5 * (a + z)
        if bits_at(math.exp(mid))[0] <= budget:
            z = mid
        else:
            a = mid
    scale = math.exp(z)
    bits, plan = bits_at(scale)
    return scale, plan, bits


def run(task: PylmTask, cfg: dict, directory: str, log=print, partial: str | None = None) -> dict:
    """Every row of the page (fp32, wsq's methods, the peers) and the grid's probe; with
    `partial`, the rows so far are rewritten there (JSON) after each one."""
    import json

    rows: list[dict] = []

    def add(r: dict) -> None:
        r["test_rel"] = r["test_ppl"] / rows[0]["test_ppl"] - 1 if rows else 0.0
        rows.append(r)
        if partial:
            with open(partial, "w") as f:
                json.dump(rows, f, indent=1, default=str)
        log(f"  {r['method']:<60} mem {r['bits_memory']:6.3f} file {r['bits_file']:6.3f} "
            f"val {r['val_ppl']:.4f} test {r['test_ppl']:.4f} ({r['test_rel'] * 100:+.2f}%)")  # fmt: skip

    t0 = time.perf_counter()
    val, test = task.ppl(task.model)
    dense = write_safetensors(_rest_tensors(task.model, set()), {"method": "dense"}, directory, "d")
    n = wsq.compress(task.model, 2).n_weights
    add(dict(method="fp32 (uncompressed)", family="baseline", params={}, bits_memory=32.0,
             bits_file=8 * dense / n, file_bytes=dense, val_ppl=val, test_ppl=test,
             time_s=time.perf_counter() - t0, decided_on="-"))  # fmt: skip
    base_val = -math.log(val)
    for k in cfg["uniform_ks"]:
        t0 = time.perf_counter()
        c = wsq.compress(task.model, k)
        add(wsq_row(task, c, f"wsq uniform bins, k={k}", {"k": k}, t0, decided_on="-"))
        del c
    for label, params, fn in peer_specs():
        ns = 1 << int(params.get("bits") or math.ceil(math.log2(params["k"])))
        add(peer_row(task, label, params, fn, directory, ns))
    # the grid method: one probe (decision data), shared by every tune and budget below
    t0 = time.perf_counter()
    gq = grid.GridQuantizer(task.model)
    sens = grid.probe_sensitivity(gq, task.decide, base_val)
    probe_s = time.perf_counter() - t0
    log(f"  probed {len(sens)} tensors in {probe_s:.0f} s")
    for budget in cfg["budgets"]:
        t0 = time.perf_counter()
        scale, plan, bits = grid_at_budget(gq, sens, budget, cfg["rd"], 1e-4)
        c = gq.compress(gq.quantize(plan))
        add(wsq_row(task, c, f"wsq grid at a budget of {budget:g} bits/w in memory",
                    {"budget": budget, "rd": cfg["rd"]}, t0, scale=scale,
                    decided_on="val (probe only)"))  # fmt: skip
        del c
    # Lloyd tables on the shared codebook (wsq.core.tables): one width, or widths at a budget
    for b in cfg["table_bits"]:
        t0 = time.perf_counter()
        c = lloyd_tables(task.model, bits=b)
        add(wsq_row(task, c, f"wsq Lloyd tables, {b} bits every tensor", {"bits": b}, t0,
                    decided_on="-"))  # fmt: skip
        del c
    for budget in cfg["table_budgets"]:
        t0 = time.perf_counter()
        c = lloyd_tables(task.model, budget=budget, sensitivities=sens, evaluate=task.decide)
        add(wsq_row(task, c, f"wsq Lloyd tables at a budget of {budget:g} bits/w in memory",
                    {"budget": budget}, t0, decided_on="val (probe, spread or flat)",
                    table_widths=c.tables_info["widths"], chosen=c.tables_info["chosen"],
                    val_scores=c.tables_info["scores"]))  # fmt: skip
        del c
    start = None
    for tol, margin in cfg["tunes"]:
        t0 = time.perf_counter()
        label = f"wsq.tune (grid), tolerance {tol:g}" + (f", margin {margin:g}" if margin else "")
        try:
            c = grid.tune(task.model, task.decide, tolerance=tol, margin=margin, rd=cfg["rd"],
                         baseline=base_val, sensitivities=sens, quantizer=gq,
                         iters=cfg["tune_iters"], start_scale=start)  # fmt: skip
        except ValueError as e:
            log(f"  {label}: {e}")
            continue
        info = c.tune_info
        start = info["scale"]
        add(wsq_row(task, c, label, {"tolerance": tol, "margin": margin, "rd": cfg["rd"]}, t0,
                    decided_on="val", scale=info["scale"],
                    evaluations=info["evaluations"] + len(sens)))  # fmt: skip
        del c
    return {"rows": rows, "probe_s": probe_s, "n_pooled": n, "sensitivities": sens.tolist()}


# ----------------------------------------------------------------------------- verdicts and page


def _best(rows, family: str, max_bits: float, key: str = "bits_memory"):
    ok = [r for r in rows if r["family"] == family and r[key] <= max_bits + 1e-9]
    return min(ok, key=lambda r: r["test_ppl"]) if ok else None


def goals(rows: list[dict]) -> list[tuple[str, bool, str]]:
    """The issue's goals on held-out perplexity, with figures: (goal, met, detail). The wsq row
    of a goal is the best held-out one within the goal's bits; the int4 peers hold more bits
    (their scales), so 'ahead at equal bits' is checked with wsq at <= 4.0 against them."""
    fp = rows[0]["test_ppl"]
    out = []
    int4 = [r for r in rows if r["method"].startswith("RTN int4, group 128")]
    for bar, pct in ((4.0, 1.0), (3.0, 5.0)):
        w = _best(rows, "wsq", bar)
        if w is None:
            out.append((f"<= {bar:g} bits/w in memory: held-out ppl within {pct:g}% of fp32", False,
                        "no wsq row at that budget"))  # fmt: skip
            continue
        rel = w["test_ppl"] / fp - 1
        out.append(
            (
                f"<= {bar:g} bits/w in memory: held-out ppl within {pct:g}% of fp32 ({fp:.4f})",
                rel <= pct / 100,
                f"best wsq row: {w['method']}: {w['bits_memory']:.3f} bits/w, {w['test_ppl']:.4f} "
                f"({100 * rel:+.2f}%)",
            )
        )
        if bar != 4.0:
            continue
        for p in int4:
            out.append(
                (
                    f"<= 4 bits/w in memory: held-out ppl below {p['method']} "
                    f"({p['bits_memory']:.3f} bits/w)",
                    w["test_ppl"] < p["test_ppl"],
                    f"int4: {p['test_ppl']:.4f} ({100 * (p['test_ppl'] / fp - 1):+.2f}%); "
                    f"{w['method']}: {w['test_ppl']:.4f} ({100 * rel:+.2f}%) at "
                    f"{w['bits_memory']:.3f} bits/w",
                )
            )
    return out


def ahead(rows: list[dict]) -> list[str]:
    """Every peer that beats every wsq row at no more bits (in memory, then in the file); a
    difference below 0.00005 perplexity is a tie, not a lead."""
    out = []
    for key, what in (("bits_memory", "in memory"), ("bits_file", "in the file")):
        for p in [r for r in rows if r["family"] == "peer"]:
            w = _best(rows, "wsq", p[key], key)
            # equal to the page's 4 decimals is a tie (the same values held as float32 in a
            # table gathered from the shared codebook or in the peer's own table)
            if w is None or w["test_ppl"] > p["test_ppl"] + 5e-5:
                out.append(
                    f"{what}: {p['method']} ({p[key]:.3f} bits/w, held-out {p['test_ppl']:.4f}) is "
                    "ahead of every wsq row at no more bits"
                    + (
                        f" (best: {w['method']}, {w['test_ppl']:.4f})"
                        if w
                        else " (none that small)"
                    )
                )
    return out


def table(rows: list[dict]) -> str:
    L = ["| method | bits/w in memory | bits/w in file | val ppl (decision) | held-out ppl | "
         "held-out vs fp32 | decided on | time |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in sorted(rows, key=lambda r: (r["family"] != "baseline", -r["bits_memory"])):
        L.append(f"| {r['method']} | {r['bits_memory']:.3f} | {r['bits_file']:.3f} | "
                 f"{r['val_ppl']:.4f} | **{r['test_ppl']:.4f}** | {100 * r['test_rel']:+.2f}% | "
                 f"{r['decided_on']} | {r['time_s']:.0f} s |")  # fmt: skip
    return "\n".join(L)


def markdown(recipe: str, data: dict, res: dict, machine: str, total_s: float, quick: bool) -> str:
    rows = res["rows"]
    L = ["# wsq results: pylm (a byte-level LLaMA, held-out perplexity against bits/weight)", ""]
    L.append(f"Machine: {machine}. Whole run: {total_s / 60:.1f} min"
             + (" (QUICK settings: not the committed results)" if quick else "") + ".")  # fmt: skip
    L += [
        "",
        f"Model: wsq.examples.pylm, recipe {recipe}; {res['n_pooled']:,} pooled weights "
        f"(every >= 2-D tensor). Decision data: {data['decide']}. Held-out: "
        f"{data['report']}. Training: {data['train']}. Perplexity is per byte.",
        "",
    ]
    L += ["## Goals (held-out perplexity)", "", "| goal | met | measured |", "|---|---|---|"]
    for g, met, d in goals(rows):
        L.append(f"| {g} | {'yes' if met else '**no**'} | {d} |")
    L += ["", "## Every row", "", table(rows), ""]
    L.append(
        "Bits in memory: what the model holds per pooled weight -- wsq: each tensor's indices at "
        "the width its values need plus its float32 table (Compressed.stats()['bits_memory']); "
        "peers: b-bit codes plus every scale, zero or codebook in its stored dtype. Bits in the "
        "file: 8 x the bytes of a real file on disk / pooled weights (wsq files via wsq.save; "
        "peers as safetensors files of their codes coded by wsq.entropy's auto coder, their "
        "scales/codebooks and every other tensor of the model), so the fp32 row is a little over "
        "32. wsq.tune rows decide the scale on the val files only (`decided on`); the grid rows "
        "at a budget use the val files only for the probe, and the scale is set by the bits alone; "
        "the Lloyd-table rows at a budget use them for the probe and to keep the better of the "
        "spread allocation (widths floor(B)-1..floor(B)+1 from the probed sensitivities) and the "
        "flat one (floor(B) bits, the least sensitive tensors one bit narrower where the tables "
        "do not fit). "
        f"The grid's probe: {len(res['sensitivities'])} evaluations, {res['probe_s']:.0f} s, "
        "shared by every grid row (its time is not in their time column)."
    )
    L += ["", "## Decision data against held-out data", ""]
    L += honesty(rows)
    L += ["", "## Where a peer is ahead", ""]
    a = ahead(rows)
    L += [f"- {x}" for x in a] if a else ["- No peer is ahead of every wsq row at no more bits."]
    L += ["", "![front](pylm_front.png)", ""]
    return "\n".join(L)


def honesty(rows: list[dict]) -> list[str]:
    """One line per row decided on the val files: its perplexity change there and held out."""
    fp = rows[0]
    out = []
    for r in rows:
        if r["decided_on"] == "-" or r["family"] != "wsq":
            continue
        dv = r["val_ppl"] / fp["val_ppl"] - 1
        extra = ""
        p = r.get("params", {})
        if "tolerance" in p:
            bar = math.exp(p["tolerance"] - p.get("margin", 0.0)) - 1
            extra = (
                f"; the tune's bar: val within {100 * bar:+.2f}% (tolerance {p['tolerance']:g} "
                f"nats, margin {p.get('margin', 0.0):g}); held out "
                + ("within" if r["test_rel"] <= math.exp(p["tolerance"]) - 1 else "**outside**")
                + f" the tolerance's {100 * (math.exp(p['tolerance']) - 1):.2f}%"
            )
        out.append(
            f"- {r['method']}: val {100 * dv:+.2f}%, held-out {100 * r['test_rel']:+.2f}%{extra}."
        )
    return out or ["- No row was decided on the val files."]


def rewrite(out: str) -> None:
    """Rewrite <out>/pylm.md and pylm_front.png (and the verdicts in pylm.json) from the measured
    rows in <out>/pylm.json: the page's wording can change without measuring again."""
    import json

    path = os.path.join(out, "pylm.json")
    with open(path) as f:
        result = json.load(f)
    rows = result["rows"]
    result["goals"] = [dict(goal=g, met=m, detail=d) for g, m, d in goals(rows)]
    result["ahead"] = ahead(rows)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    md = markdown(result["recipe"], result["data"], result, result["machine"], result["total_s"],
                  result["quick"])  # fmt: skip
    with open(os.path.join(out, "pylm.md"), "w") as f:
        f.write(md + "\n")
    plot(os.path.join(out, "pylm_front.png"), rows)


def plot(path: str, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fp = rows[0]["test_ppl"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), sharey=True)
    for ax, key, name in ((axes[0], "bits_memory", "in memory"), (axes[1], "bits_file", "file")):
        for fam, mk in (("wsq", "o"), ("peer", "s")):
            pts = [r for r in rows if r["family"] == fam and r[key] <= 9]
            ax.scatter([r[key] for r in pts], [r["test_ppl"] for r in pts], marker=mk, label=fam)
            for r in pts:
                ax.annotate(r["method"][:28], (r[key], r["test_ppl"]), fontsize=5)
        for f, ls in ((1.0, "-"), (1.01, "--"), (1.05, ":")):
            ax.axhline(fp * f, color="grey", lw=0.8, ls=ls)
        ax.set_xlabel(f"bits per pooled weight ({name})")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out perplexity per byte (lines: fp32, +1%)")
    axes[0].set_ylim(fp * 0.995, fp * 1.03)  # the +5% line and worse rows fall off the top
    axes[0].legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> str:
    """CPU model (/proc/cpuinfo), the ISA wsq's kernels ran at (wsq.info), cores, threads."""
    import platform

    from _timing import machine as _machine

    m = _machine()
    return (
        f"{m['cpu']} ({platform.machine()}), wsq kernels at ISA {m['isa']} (CPU's best: "
        f"{m['isa_detected']}), {os.cpu_count()} cores, {m['threads']} torch threads; torch "
        f"{m['torch']}, Python {platform.python_version()}"
    )


def page(out: str, *, quick: bool, log=print, directory: str | None = None) -> dict:
    """Measure every row and write <out>/pylm.json, pylm.md and pylm_front.png."""
    import json
    import shutil
    import tempfile

    cfg = dict(CONFIG, **(QUICK if quick else {}))
    t_all = time.perf_counter()
    torch.manual_seed(0)
    task = PylmTask(None if not quick else _quick_recipe(), directory)
    tmp = tempfile.mkdtemp(prefix="wsq_results_")
    try:
        os.makedirs(out, exist_ok=True)
        partial = os.path.join(out, "pylm.partial.json")  # the rows so far, if the run dies
        res = run(task, cfg, tmp, log, partial=partial)
        os.unlink(partial)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - t_all
    mach = machine()
    os.makedirs(out, exist_ok=True)
    checks = goals(res["rows"])
    for g, met, d in checks:
        log(f"goal: {g}: {'MET' if met else 'MISSED'} ({d})")
    result = dict(model="pylm", quick=quick, config=cfg, machine=mach, data=task.data,
                  recipe=str(task.recipe), goals=[dict(goal=g, met=m, detail=d) for g, m, d in checks],
                  ahead=ahead(res["rows"]), total_s=total, **res)  # fmt: skip
    with open(os.path.join(out, "pylm.json"), "w") as f:
        json.dump(result, f, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    with open(os.path.join(out, "pylm.md"), "w") as f:
        f.write(markdown(str(task.recipe), task.data, res, mach, total, quick) + "\n")
    plot(os.path.join(out, "pylm_front.png"), res["rows"])
    return result


def _quick_recipe():
    from wsq.examples import pylm

    return pylm.TINY
