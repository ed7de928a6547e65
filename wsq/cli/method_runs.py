"""Each method's run under ``wsq compress`` at one tolerance: uniform bins (NSGA-II search, then a
merge), the shared grid (probe, then a tune per rate weight) and Lloyd tables at memory budgets.
Each returns its table rows and candidates for the pipeline (wsq.cli.compress) to choose from."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from wsq.cli.specs import CliError, _one_line
from wsq.cli.table import fixed_bytes, table_row

__all__ = ["NotReached", "Guarded", "run_uniform", "run_grid", "run_lloyd", "LLOYD_BUDGETS"]


class NotReached(Exception):
    """A method found no model within the tolerance (the message says what it tried)."""


class Guarded:
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


def run_uniform(spec, st, ctx, say, progress) -> dict:
    """The paper's protocol (wsq.paper_protocol): NSGA-II over k, merge the best front solutions
    within the tolerance, entropy-code."""
    from wsq.protocol import paper_protocol

    t0 = time.perf_counter()
    u = st.uniform
    say(
        f"uniform: NSGA-II pop {st.pop} x {st.gens} generations, k in [{u.k_min}, {u.k_max}], "
        f"variables {u.variables}, seed {st.seed}"
    )
    val_of, test_of, original = ctx["val_of"], ctx["test_of"], ctx["original"]
    pre = []

    def measure(s, c) -> None:  # the MO-UB row: each chosen front solution before its merge
        pre.append({"k": s.k, "n_bins": s.n_bins, "val": val_of(c.model), "test": test_of(c.model),
                    "bits": float(c.bits), "mem_bits": c.memory()["bits_memory"],
                    "cr": original / fixed_bytes(c)})  # fmt: skip

    p = paper_protocol(
        spec.model, ctx["evaluate"], tolerance=st.tolerance, margin=st.margin, method=u,
        pop_size=st.pop, generations=st.gens, seed=st.seed, coder=st.coder,
        merge_top=st.merge_top, merge_evals=st.merge_evals, baseline=ctx["base_val"],
        random_ub=False, before_merge=measure, progress=progress,
    )  # fmt: skip
    res = p.search
    if not p.chosen:
        best = min((s.drop for s in res.front), default=math.nan)
        bar = f"--tolerance {st.tolerance}" + (f" - --margin {st.margin}" if st.margin else "")
        raise NotReached(
            f"no front solution of {res.n_evaluations} evaluations is within {bar} "
            f"(smallest drop {best:.4g})"
        )
    merged = []
    for s, m in zip(p.chosen, p.merged, strict=True):
        info = m.merge_info
        say(
            f"merge of k={s.k}: {info['n_before']} -> {info['n_after']} shared values in "
            f"{info['evaluations']} evaluations ({info['decisions']} pair decisions)"
        )
        item = {"method": "uniform", "k": s.k, "n_bins": info["n_after"], "val": val_of(m.model),
                "test": test_of(m.model), "model": m, "merge": info,
                "memory": _memory(m)}  # fmt: skip
        for coder in ("huffman", "ans", st.coder):
            item[coder] = _coded(m, coder)
        merged.append(item)

    def view(items, bits_of, cr_of):
        return [{"k": it["k"], "n_bins": it["n_bins"], "val": it["val"], "test": it["test"],
                 "bits": bits_of(it), "mem_bits": it["memory"]["bits_memory"],
                 "cr": cr_of(it)} for it in items]  # fmt: skip

    rows = [table_row("MO-UB front", pre)]
    rows.append(
        table_row("+ Merge", view(merged, lambda it: float(it["model"].bits),
                             lambda it: original / fixed_bytes(it["model"])))
    )  # fmt: skip
    for coder, label in (("huffman", "+ Huffman"), ("ans", "+ ANS")):
        rows.append(
            table_row(label, view(merged, lambda it, c=coder: it[c]["bits"],
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
    probe = Guarded(spec.probe, "probe") if spec.probe is not None else ctx["evaluate"]
    pbase = ctx["base_val"] if spec.probe is None else grid.score(probe, spec.model, "probe")
    if not math.isfinite(pbase):
        raise CliError(f"the probe callable returned {pbase} on the original model")
    sens = grid.probe_sensitivity(gq, probe, pbase)
    say(f"{who}: probed {len(sens)} tensors in {time.perf_counter() - t0:.1f} s")
    return sens


def _coded_rows(items: list[dict]) -> list[dict]:
    """Table rows of the grid / Lloyd candidates: each with both coders' file sizes."""
    return [
        table_row(f"{it['label']} + {coder_label}",
             [{"k": None, "n_bins": it["n_bins"], "val": it["val"], "test": it["test"],
               "bits": it[coder]["bits"], "mem_bits": it["memory"]["bits_memory"],
               "cr": it[coder]["cr"]}])
        for it in items
        for coder, coder_label in (("huffman", "Huffman"), ("ans", "ANS"))
    ]  # fmt: skip


def run_grid(spec, st, ctx, say) -> dict:
    """wsq.tune at the tolerance, plain and rate-aware rounding (one probe shared by both)."""
    import dataclasses

    import wsq
    from wsq.core import grid

    t0 = time.perf_counter()
    gq = grid.GridQuantizer(spec.model)
    sens = _probe(spec, ctx, gq, "grid", say)
    del gq  # each tune builds its own quantizer from the method object
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
                    tolerance=st.bar, sensitivities=sens, iters=st.grid.iters, start_scale=start,
                )  # fmt: skip
            else:
                method = dataclasses.replace(st.grid, rd=rd, sensitivities=tuple(sens),
                                             scale=start)  # fmt: skip
                c = wsq.tune(spec.model, ctx["evaluate"], method, tolerance=st.tolerance,
                             margin=st.margin, baseline=ctx["base_val"])  # fmt: skip
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
        for coder in ("huffman", "ans", st.coder):
            item[coder] = _coded(c, coder)
        say(
            f"grid: {label}: {item['n_bins']} shared values, "
            f"{item[st.coder]['bits']:.3f} bits/w, CR {item[st.coder]['cr']:.2f}x, "
            f"val {item['val']:.4f} ({info['evaluations']} evaluations)"
        )
        items.append(item)
    if not items:
        raise NotReached("; ".join(notes))
    rows = _coded_rows(items)
    return {"rows": rows, "candidates": items, "notes": notes,
            "seconds": time.perf_counter() - t0}  # fmt: skip


# Memory budgets (bits per weight, indices and tables) --method lloyd tries, smallest first.
LLOYD_BUDGETS = (2.0, 3.0, 4.0, 5.0, 6.0, 8.0)


def run_lloyd(spec, st, ctx, say) -> dict:
    """wsq.lloyd_tables at rising memory budgets (one probe shared by all): the smallest budget
    whose model stays within the tolerance, and the next one up."""
    import wsq
    from wsq.core import grid

    t0 = time.perf_counter()
    sens = _probe(spec, ctx, grid.GridQuantizer(spec.model), "lloyd", say)
    floor = ctx["base_val"] - st.bar
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
        for coder in ("huffman", "ans", st.coder):
            item[coder] = _coded(c, coder)
        say(
            f"lloyd: {label}: {item['memory']['bits_memory']:.3f} bits/w in memory, "
            f"{item[st.coder]['bits']:.3f} in the file, val {val:.4f}"
        )
        items.append(item)
        if len(items) == 2:  # the next budget up may code smaller (--prefer file)
            break
    if not items:
        raise NotReached("; ".join(notes))
    rows = _coded_rows(items)
    return {"rows": rows, "candidates": items, "notes": notes,
            "seconds": time.perf_counter() - t0}  # fmt: skip
