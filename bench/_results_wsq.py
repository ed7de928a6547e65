"""wsq's rows of bench/results.py: the paper's protocol (Table I) and wsq's sensitivity-aware steps.

Paper protocol (arXiv 2501.03095, Table I), decisions on the task's decision data only:
Baseline; Random UB (k = 1024, no search); MO-UB (NSGA-II over k: the front solutions within the
tolerance, as (min, max)); + Merge (wsq.merge of each, same tolerance); + Huffman / + ANS (the
merged models' wsq files with that coder). Rows before entropy coding are sized as real files of
the paper's fixed-length form (indices packed at ceil(log2 n) bits), the others as wsq files.
Also: NSGA-II against the sweep strategy at the same number of evaluations (hypervolume).

Beyond the paper (wsq.core.grid, public as wsq.tune): one shared grid with a per-tensor step from measured sensitivities,
the scale tuned by bisection on the decision metric; optionally rate-aware assignment.
"""

from __future__ import annotations

import copy
import math
import os
import time

import numpy as np
import torch
from _results_peers import dense_file_bytes, original_bytes, packed_file_bytes

import wsq
from wsq.core import grid


def _eval(fn, model) -> float:
    with torch.no_grad():
        return float(fn(model))


def _point(c: wsq.Compressed, task, directory: str, *, report: bool = True) -> dict:
    """Sizes (packed file, wsq files per coder) and metrics of one Compressed."""
    st = c.stats("auto")
    out = {
        "n_bins": st["n_bins"],
        "bits_fixed": st["bits_fixed"],
        "bits": st["bits_entropy"],
        "entropy_bound": st["entropy_bound"],
        "file_bytes": st["file_bytes"],
        "cr": st["cr"],
        "original_bytes": st["original_bytes"],
        "packed_file_bytes": packed_file_bytes(c, directory),
        "decide": _eval(task.decide, c.model),
    }
    out["cr_packed"] = st["original_bytes"] / out["packed_file_bytes"]
    for coder in ("huffman", "ans"):
        s = c.stats(coder)
        out[f"file_bytes_{coder}"] = s["file_bytes"]
        out[f"bits_{coder}"] = s["bits_entropy"]
        out[f"cr_{coder}"] = s["cr"]
    if report:
        out["report"] = _eval(task.report, c.model)
    return out


def check_file(c: wsq.Compressed, task, directory: str) -> dict:
    """Save, reload and re-score: the saved size must equal stats()['file_bytes'] and the loaded
    model must compute what was saved (self-validation of every headline figure)."""
    path = os.path.join(directory, "check.wsq")
    wsq.save(c, path)
    size = os.path.getsize(path)
    if size != c.stats()["file_bytes"]:
        raise AssertionError(f"saved file is {size} bytes, stats() says {c.stats()['file_bytes']}")
    loaded = wsq.load(path, copy.deepcopy(task.model))
    a, b = _eval(task.decide, c.model), _eval(task.decide, loaded.model)
    os.unlink(path)
    if a != b:
        raise AssertionError(f"loaded model scores {b}, saved one {a}")
    return {"saved_bytes": size, "reload_decide": b}


def paper_protocol(task, cfg: dict, directory: str, log=print) -> dict:
    """Rows Baseline ... + ANS, the search fronts and the NSGA-II vs sweep comparison."""
    model, tol = task.model, task.tolerance_search
    out: dict = {"rows": [], "fronts": {}}
    rows = out["rows"]

    t0 = time.perf_counter()
    base_d, base_r = _eval(task.decide, model), _eval(task.report, model)
    orig = original_bytes(model)
    dense = dense_file_bytes(model, directory)
    n_pool = wsq.compress(model, 2).n_weights
    rows.append(dict(method="Baseline", decide=base_d, report=base_r, k=None, n_bins=n_pool,
                     bits=32.0, file_bytes=dense, cr=orig / dense, time_s=0.0))  # fmt: skip
    out["baseline"] = {"decide": base_d, "report": base_r, "original_bytes": orig,
                       "dense_file_bytes": dense, "n_pooled": n_pool}  # fmt: skip
    log(f"  baseline decide={base_d:.5f} report={base_r:.5f} ({time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    c = wsq.compress(model, 1024)
    t_c = time.perf_counter() - t0
    p = _point(c, task, directory)
    rows.append(dict(method="Random UB", decide=p["decide"], report=p["report"], k=1024,
                     n_bins=p["n_bins"], bits=p["bits_fixed"], file_bytes=p["packed_file_bytes"],
                     cr=p["cr_packed"], time_s=t_c))  # fmt: skip
    log(
        f"  random UB k=1024: n={p['n_bins']} decide={p['decide']:.5f} CR(packed)={p['cr_packed']:.2f}"
    )

    # ---- MO-UB -> + Merge: the paper's protocol (wsq.paper_protocol, as `wsq compress` runs it);
    # each merged front solution is measured before its merge (the MO-UB row)
    mo = []

    def measure(s, c) -> None:
        p = _point(c, task, directory)
        p.update(k=s.k, time_s=0.0)
        mo.append(p)

    t0 = time.perf_counter()
    proto = wsq.paper_protocol(
        model, task.decide, tolerance=tol, method=wsq.Uniform(k_max=cfg["k_max"]),
        pop_size=cfg["pop"], generations=cfg["gens"], seed=0, merge_top=cfg["merge_max"],
        merge_evals=cfg["merge_evals"], baseline=base_d, random_ub=False,  # the paper's k=1024 row
        before_merge=measure,
    )  # fmt: skip
    res = proto.search
    t_search = proto.timings["search_s"]
    log(f"  NSGA-II: {res.n_evaluations} evaluations, front {len(res.front)}, {t_search:.1f} s "
        f"(protocol {time.perf_counter() - t0:.1f} s)")  # fmt: skip
    t0 = time.perf_counter()
    sweep = wsq.search(model, task.decide, method=wsq.Uniform(k_max=cfg["k_max"]),
                       strategy=wsq.Sweep(budget=res.n_evaluations), pop_size=cfg["pop"],
                       progress=False)  # fmt: skip
    t_sweep = time.perf_counter() - t0
    drops = [s.drop for s in res.history + sweep.history if math.isfinite(s.drop)]
    bits = [s.bits for s in res.history + sweep.history if math.isfinite(s.bits)]
    ref = (max(max(drops), 0.0) * 1.1 + 1e-9, max(bits) * 1.1)
    out["hypervolume"] = {
        "ref": list(ref), "nsga2": res.hypervolume(ref), "sweep": sweep.hypervolume(ref),
        "evaluations": {"nsga2": res.n_evaluations, "sweep": sweep.n_evaluations},
        "seconds": {"nsga2": t_search, "sweep": t_sweep},
        "front_sizes": {"nsga2": len(res.front), "sweep": len(sweep.front)},
    }  # fmt: skip
    log(f"  sweep: {sweep.n_evaluations} evaluations; HV nsga2={out['hypervolume']['nsga2']:.5g} "
        f"sweep={out['hypervolume']['sweep']:.5g}")  # fmt: skip
    out["fronts"]["wsq uniform (NSGA-II front)"] = [
        dict(k=s.k, n_bins=s.n_bins, decide=s.metric, bits=s.bits, cr=s.cr) for s in res.front
    ]
    out["fronts"]["wsq uniform (sweep front)"] = [
        dict(k=s.k, n_bins=s.n_bins, decide=s.metric, bits=s.bits, cr=s.cr) for s in sweep.front
    ]

    # held-out scores of a spread of front points (for the plot); compress time per k
    front = [s for s in res.front if s.drop <= cfg["report_drop"]]
    pick = _spread(front, cfg["report_points"])
    pts = []
    for s in pick:
        t0 = time.perf_counter()
        c = res.compress(s)
        t_c = time.perf_counter() - t0
        pts.append(dict(k=s.k, n_bins=s.n_bins, decide=s.metric, report=_eval(task.report, c.model),
                        bits=c.stats()["bits_entropy"], cr=c.stats()["cr"], time_s=t_c))  # fmt: skip
    out["fronts"]["wsq uniform (front, held-out scored)"] = pts

    merged = []
    for s, m in zip(proto.chosen, proto.merged, strict=True):
        q = _point(m, task, directory)
        q.update(k=s.k, time_s=proto.timings["merge_s"] / len(proto.merged),
                 merge_info=m.merge_info)  # fmt: skip
        merged.append((q, m))
        log(f"  k={s.k}: n={s.n_bins} decide={s.metric:.5f} -> merged n={q['n_bins']} "
            f"decide={q['decide']:.5f} report={q['report']:.5f} bits(auto)={q['bits']:.3f} "
            f"CR={q['cr']:.2f} ({m.merge_info['evaluations']} evals)")  # fmt: skip
    if not proto.chosen:  # report the closest instead of nothing, unmerged, and say so
        s = min(res.front, key=lambda s: s.drop)
        out["mo_ub_note"] = f"no front solution within the tolerance {tol}; closest shown unmerged"
        c = res.compress(s)
        measure(s, c)
        merged.append((dict(mo[-1], merge_info={}), c))
    rows.append(_range_row("MO-UB", mo, "bits_fixed", "packed_file_bytes", "cr_packed",
                           t_search))  # fmt: skip
    mq = [q for q, _ in merged]
    rows.append(_range_row("+ Merge", mq, "bits_fixed", "packed_file_bytes", "cr_packed",
                           sum(q["time_s"] for q in mq)))  # fmt: skip
    rows.append(
        _range_row("+ Huffman", mq, "bits_huffman", "file_bytes_huffman", "cr_huffman", 0.0)
    )
    rows.append(_range_row("+ ANS", mq, "bits_ans", "file_bytes_ans", "cr_ans", 0.0))
    out["mo_ub"] = mo
    out["merged"] = mq
    best_q, best_m = min(merged, key=lambda qm: qm[0]["file_bytes"])
    out["headline_paper"] = dict(best_q, check=check_file(best_m, task, directory))
    out["timings"] = {"search_s": t_search, "sweep_s": t_sweep,
                      "search_eval_ms": res.timings.get("eval_ms"),
                      "search_hist_ms": res.timings.get("hist_ms"),
                      "search_write_ms": res.timings.get("write_ms")}  # fmt: skip
    out["_search"] = res
    return out


def _spread(items: list, m: int) -> list:
    """At most m items, evenly spread over the list (first and last kept)."""
    if len(items) <= m:
        return list(items)
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, m)).astype(int))
    return [items[i] for i in idx]


def _range_row(method, pts, bits_key, bytes_key, cr_key, time_s) -> dict:
    def rng(key):
        v = [p[key] for p in pts if p.get(key) is not None]
        return (min(v), max(v)) if v else (None, None)

    return dict(method=method, decide=rng("decide"), report=rng("report"), k=rng("k"),
                n_bins=rng("n_bins"), bits=rng(bits_key), file_bytes=rng(bytes_key),
                cr=rng(cr_key), time_s=time_s)  # fmt: skip


# ----------------------------------------------------------------------------- beyond the paper


def sensitivity_steps(task, cfg: dict, directory: str, log=print) -> dict:
    """wsq.core.grid on `task`: probe, then per variant (rate-aware strength rd) tune the scale to the
    tolerance on the decision data; the best variant gets a small front over scales."""
    model, tol = task.model, task.tolerance_search
    out: dict = {"variants": {}}
    t_all = time.perf_counter()
    gq = grid.GridQuantizer(model)
    probe = task.probe if task.probe is not None else task.decide
    t0 = time.perf_counter()
    probe_base = _eval(probe, model)
    sens = grid.probe_sensitivity(gq, probe, probe_base, rel_step=cfg.get("probe_step", 0.5))
    t_probe = time.perf_counter() - t0
    out["sensitivity"] = {e.name: float(s / e.numel) for e, s in zip(gq.entries, sens, strict=True)}
    out["probe_s"] = t_probe
    log(f"  probed {len(sens)} tensors in {t_probe:.1f} s")
    base = _eval(task.decide, model)

    def plan_of(scale: float, rd: float) -> grid.GridPlan:
        return grid.plan_for(grid.allocate(gq.numel, sens, scale), rd=rd)

    start = None
    best = None
    for rd in cfg["rd_variants"]:
        name = "sensitivity steps" + (f" + rate-aware (rd={rd:g})" if rd else "")
        try:
            c = grid.tune(
                model, task.decide, tolerance=tol, baseline=base, sensitivities=sens, rd=rd,
                iters=cfg["tune_iters"], start_drop=cfg["probe_drop_guess"], start_scale=start,
                quantizer=gq,
            )  # fmt: skip
            info = c.tune_info
        except ValueError as e:
            out["variants"][name] = {"note": str(e)}
            log(f"  {name}: {e}")
            continue
        plan = info["plan"]
        p = _point(c, task, directory)
        p.update(method=name, rd=rd, scale=info["scale"], probe_s=t_probe, tune_s=info["tune_s"],
                 time_s=t_probe + info["tune_s"], evaluations=len(sens) + 1 + len(info["trace"]),
                 delta0=plan.delta0, mult=list(plan.mult), trace=info["trace"])  # fmt: skip
        out["variants"][name] = p
        log(f"  {name}: n={p['n_bins']} bits={p['bits']:.3f} CR={p['cr']:.2f} "
            f"decide={p['decide']:.5f} report={p['report']:.5f} ({len(info['trace'])} tuning "
            f"evals, {info['tune_s']:.1f} s)")  # fmt: skip
        if best is None or p["cr"] > best[0]["cr"]:
            best = (p, c)
        start = info["scale"]
    if best is None:
        out["note"] = "no scale met the tolerance"
        return out
    p, c = best
    p["check"] = check_file(c, task, directory)
    out["headline"] = p
    del c, best
    # a front over scales around the tuned one (held-out scored, real file sizes)
    front = []
    for f in cfg["front_scales"]:
        plan = plan_of(p["scale"] * f, p["rd"])
        cf = gq.compress(gq.quantize(plan))
        q = _point(cf, task, directory)
        q.update(method=f"{p['method']}, scale x{f:g}", scale=p["scale"] * f)
        front.append(q)
        del cf
    out["front"] = front
    out["time_s"] = time.perf_counter() - t_all
    return out
