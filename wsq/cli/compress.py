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

from wsq.cli.method_runs import Guarded, NotReached, run_grid, run_lloyd, run_uniform
from wsq.cli.settings import Settings
from wsq.cli.specs import CliError, Spec, _describe, _one_line
from wsq.cli.table import fixed_bytes, table_row
from wsq.search.result import json_safe


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


def run_compress(spec: Spec, st: Settings, out: str, say: Callable[[str], None], progress: bool):
    """The whole pipeline; returns the summary dict (also written to out/summary.json).

    Every file is written into a temporary folder inside ``out`` and moved into place only when
    the whole run succeeded, so a failure (an evaluate that raises, no method within the
    tolerance) leaves nothing half-written in ``out``.
    """
    import wsq

    t_start = time.perf_counter()
    model = spec.model
    evaluate = Guarded(spec.evaluate, "evaluate")
    test = Guarded(spec.test, "test evaluate") if spec.test is not None else None

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
    ub = wsq.compress(model, st.uniform.k_max)
    ub_stats = ub.stats(st.coder)
    original = ub_stats["original_bytes"]
    n_weights = ub_stats["n_weights"]
    rows = [
        {"method": "Baseline", "val": base_val, "test": base_test, "k": None, "n_bins": n_weights,
         "bits": 8.0 * (original - sum(t.numel() * t.element_size()
                                       for t in ub.rest_state().values())) / n_weights,
         "mem_bits": 8.0 * (original - sum(t.numel() * t.element_size()
                                           for t in ub.rest_state().values())) / n_weights,
         "cr": 1.0},
        {"method": f"Random UB k={st.uniform.k_max}", "val": val_of(ub.model),
         "test": test_of(ub.model), "k": st.uniform.k_max, "n_bins": ub_stats["n_bins"],
         "bits": float(ub.bits), "mem_bits": ub.memory()["bits_memory"],
         "cr": original / fixed_bytes(ub)},
    ]  # fmt: skip
    rows = [table_row(r["method"], [r]) for r in rows]
    del ub
    ctx = {"evaluate": evaluate, "val_of": val_of, "test_of": test_of, "base_val": base_val,
           "original": original}  # fmt: skip
    parts, failed = {}, {}
    methods = st.methods
    for method in methods:
        try:
            if method == "uniform":
                parts[method] = run_uniform(spec, st, ctx, say, progress)
            elif method == "lloyd":
                parts[method] = run_lloyd(spec, st, ctx, say)
            else:
                parts[method] = run_grid(spec, st, ctx, say)
        except NotReached as e:
            failed[method] = str(e)
            say(f"{method}: nothing within --tolerance {st.tolerance}: {e}")
    if not parts:
        raise CliError(
            f"the evaluate callable never reached baseline {base_val:.6g} - --tolerance "
            f"{st.tolerance:g}: raise --tolerance ("
            + "; ".join(f"{m}: {_clip(why, 90)}" for m, why in failed.items())
            + ")"
        )
    for method in methods:
        if method in parts:
            rows += parts[method]["rows"]

    # the chosen model (all passed the validation bar in memory): --prefer file, the smallest file
    # with the chosen coder, ties to the smaller running model; memory, the other way round
    def file_of(it):
        return it[st.coder]["file_bytes"]

    def held_of(it):
        return it["memory"]["param_bytes_compressed"]

    order = (file_of, held_of) if st.prefer == "file" else (held_of, file_of)
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
        floor = base_val - st.bar
        best, reloaded, rejected = _first_that_reloads(spec, cands, tmp, st.coder, val_of, floor,
                                                       say)  # fmt: skip
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
            "settings": st.summary(),
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
                       "coder": st.coder, **best["memory"]},
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


def _first_that_reloads(spec, cands, tmp, coder, val_of, floor, say):
    """Save the smallest candidate into tmp/model.wsq, load it back from those bytes into the
    SPEC's architecture and score it: the file is kept only if the loaded model is within the
    tolerance (the candidates were scored in memory). Else the next smallest, and so on.
    Returns (candidate, its reloaded score, the rejected ones)."""
    import wsq

    path = os.path.join(tmp, "model.wsq")
    rejected = []
    for it in cands:
        wsq.save(it["model"], path, coder=coder)
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
