"""wsq.search benchmark: the paper's protocol (NSGA-II, pop 100 x 100 generations) on a digits CNN.

Trains a ~139k-parameter CNN on scikit-learn's bundled digits (offline, a few seconds), then:

1. validates: the search's objectives for a few k equal what wsq.compress + the file give (bits of
   the coded streams, the metric of the compressed model), so the timings below are of real work;
2. runs NSGA-II (--pop x --gens, k only: the paper's mode) and prints the time per evaluation split
   into binning (histogram + means + coded size), weight write (fused fake-quant into the one
   working copy) and evaluate, the search's own overhead (pymoo, cache, bookkeeping) and the total,
   against the 3-minute target;
3. with --compare: a sweep over k with the same number of evaluations, and NSGA-II with the range
   variable ("k", "clip"), compared by hypervolume at one reference point.

    python bench/search.py [--pop 100] [--gens 100] [--seed 0] [--compare] [--threads N]
                           [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from _timing import machine, write_json
from torch import nn

import wsq
from wsq.search import pareto_front, search

TARGET_S = 180.0  # the paper's protocol on the digits default: under 3 minutes on 2 cores


def digits_data() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"train", "val", "test"}: (x (n, 1, 8, 8) float32, y (n,) int64); load_digits, a fixed
    shuffle, 1100 / 350 / 347. The search sees only "val"; "test" re-scores the chosen solutions."""
    from sklearn.datasets import load_digits

    d = load_digits()
    perm = np.random.default_rng(0).permutation(len(d.target))
    x = torch.tensor(d.images[perm] / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target[perm], dtype=torch.int64)
    cuts = {"train": (0, 1100), "val": (1100, 1450), "test": (1450, len(y))}
    return {k: (x[a:b], y[a:b]) for k, (a, b) in cuts.items()}


def digits_cnn() -> nn.Module:
    """138,698 parameters: conv 1->16->32 (3x3), max-pool, linear 512->256->10."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )


def train(x: torch.Tensor, y: torch.Tensor, epochs: int = 12) -> nn.Module:
    torch.manual_seed(0)
    model = digits_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


class Accuracy:
    """evaluate(model) -> validation accuracy (the search's objective 1 is baseline - this)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __call__(self, model: nn.Module) -> float:
        return float((model(self.x).argmax(1) == self.y).float().mean())


def validate(model: nn.Module, acc: Accuracy) -> None:
    """The search's per-candidate numbers are those of the real compressed model and file."""
    r = search(model, acc, method=wsq.Uniform(k_min=4, k_max=512), strategy=wsq.Sweep(budget=4),
               progress=False)  # fmt: skip
    for s in r.history:
        c = r.compress(s)
        st = c.stats()
        slack = (3 * 64 + 1e-4 * st["n_weights"]) / st["n_weights"]  # ANS size bound (entropy.py)
        assert st["n_bins"] == s.n_bins, (s.k, st["n_bins"], s.n_bins)
        assert 0 <= s.bits - st["bits_entropy"] <= slack, (s.k, s.bits, st["bits_entropy"])
        with torch.no_grad():
            assert acc(c.model) == s.metric, (s.k, acc(c.model), s.metric)
        assert abs(s.cr / st["cr"] - 1) < 5e-3, (s.k, s.cr, st["cr"])


def run(model, acc, test, label: str, **kw) -> tuple[wsq.SearchResult, dict]:
    t0 = time.perf_counter()
    r = search(model, acc, **kw)
    wall = time.perf_counter() - t0
    t = r.timings
    n = r.n_evaluations
    per = t["hist_ms"] + t["write_ms"] + t["eval_ms"]
    overhead = wall - t["baseline_s"] - n * per / 1e3
    row = {
        "run": label,
        "requested": r.n_requested,
        "evaluated": n,
        "generations": r.generations,
        "hist_ms": t["hist_ms"],
        "write_ms": t["write_ms"],
        "eval_ms": t["eval_ms"],
        "overhead_s": overhead,
        "total_s": wall,
        "front": len(r.front),
        "hv": None,
        "hv_at_k_budget": None,
        "best_bits_no_drop": None,
        "best_test_acc": None,
        "test_hv": None,
    }
    if any(s.drop <= 0 for s in r.front):
        best = r.best(0.0)
        row["best_bits_no_drop"] = best.bits
        with torch.no_grad():
            row["best_test_acc"] = test(r.compress(best).model)
    return r, row


def test_hypervolume(r: wsq.SearchResult, test: Accuracy, ref: tuple[float, float]) -> float:
    """Hypervolume of the front re-scored on the held-out split: (test drop, bits) per solution.

    The search selects on the validation split; with many evaluations it can pick candidates
    that are lucky there. Re-scoring shows whether a front is better on data it never saw."""
    from pymoo.indicators.hv import HV

    pts = []
    for s in r.front:
        with torch.no_grad():
            pts.append((ref[0] - test(r.compress(s).model), s.bits))
    f = np.array([p for p in pts if p[0] < ref[0] and p[1] < ref[1]], dtype=np.float64)
    return float(HV(ref_point=np.array(ref))(f)) if len(f) else 0.0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pop", type=int, default=100, help="population (paper: 100)")
    ap.add_argument("--gens", type=int, default=100, help="generations (paper: 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--compare", action="store_true", help="also sweep and NSGA-II (k, clip)")
    ap.add_argument("--quick", action="store_true", help="pop 16 x 5 generations (a smoke run)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.pop, args.gens = 16, 5
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    data = digits_data()
    model = train(*data["train"])
    acc, test = Accuracy(*data["val"]), Accuracy(*data["test"])
    n_params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        base_test = test(model)
    print(
        f"digits CNN: {n_params} parameters, trained in {time.perf_counter() - t0:.1f} s, "
        f"accuracy {acc(model):.4f} on the search's validation split ({len(data['val'][1])} "
        f"images), {base_test:.4f} on the held-out test split ({len(data['test'][1])})"
    )
    validate(model, acc)
    print("validation: search bits / n_bins / metric / cr match wsq.compress and the file: OK")

    kw = {"pop_size": args.pop, "generations": args.gens, "seed": args.seed, "progress": False}
    results, rows = {}, []
    r, row = run(model, acc, test, "nsga2 (k)", **kw)
    results["nsga2_k"], _ = r, rows.append(row)
    if args.compare:
        r2, row2 = run(
            model, acc, test, "sweep (k)", strategy=wsq.Sweep(budget=r.n_evaluations), **kw
        )
        results["sweep_k"], _ = r2, rows.append(row2)
        r3, row3 = run(model, acc, test, "nsga2 (k, clip)", method=wsq.Uniform(clip=True), **kw)
        results["nsga2_k_clip"], _ = r3, rows.append(row3)
    ref = (r.baseline, 12.0)  # drop down to accuracy 0, up to 12 bits per weight
    for row, res in zip(rows, results.values(), strict=True):
        row["hv"] = res.hypervolume(ref)
        row["test_hv"] = test_hypervolume(res, test, (base_test, 12.0))
        # the same front restricted to the k-only run's number of evaluations (same budget)
        early = copy.copy(res)
        early.front = pareto_front(res.history[: r.n_evaluations])
        row["hv_at_k_budget"] = early.hypervolume(ref)

    print(f"\n{r.table(limit=25)}\n")
    head = (
        f"{'run':<16} {'requested':>9} {'evaluated':>9} {'hist ms':>8} {'write ms':>8} "
        f"{'eval ms':>8} {'overhead s':>10} {'total s':>8} {'front':>5} {'HV':>8} "
        f"{'HV@N':>8} {'test HV':>8} {'bits@0':>7} {'test acc':>8}"
    )
    print(head)
    for w in rows:
        b, ta = w["best_bits_no_drop"], w["best_test_acc"]
        print(
            f"{w['run']:<16} {w['requested']:>9} {w['evaluated']:>9} {w['hist_ms']:>8.3f} "
            f"{w['write_ms']:>8.3f} {w['eval_ms']:>8.3f} {w['overhead_s']:>10.2f} "
            f"{w['total_s']:>8.2f} {w['front']:>5} {w['hv']:>8.4f} {w['hv_at_k_budget']:>8.4f} "
            f"{w['test_hv']:>8.4f} "
            f"{'-' if b is None else f'{b:.3f}':>7} {'-' if ta is None else f'{ta:.4f}':>8}"
        )
    print(
        f"HV: hypervolume at ref (drop {ref[0]:.4f}, {ref[1]:.0f} bits); HV@N: of the front of the "
        f"first {r.n_evaluations} evaluations (the k-only budget); test HV: the front re-scored "
        f"on the held-out split; bits@0: fewest bits with no validation drop; test acc: that "
        f"solution on the held-out split (baseline {base_test:.4f})"
    )
    total = rows[0]["total_s"]
    verdict = "PASS" if total < TARGET_S else "FAIL"
    print(
        f"\npaper protocol ({args.pop} x {args.gens}) took {total:.1f} s: {verdict} "
        f"(target < {TARGET_S:.0f} s; hist = histogram + means + coded size; write = fake-quant "
        f"into the working copy; overhead = pymoo, cache and bookkeeping)"
    )
    info = machine()
    print(info)
    write_json(
        args.json,
        {
            "machine": info,
            "model_params": n_params,
            "baseline": r.baseline,
            "baseline_test": base_test,
            "pop": args.pop,
            "gens": args.gens,
            "seed": args.seed,
            "hv_ref": list(ref),
            "rows": rows,
            "target_s": TARGET_S,
            "pass": total < TARGET_S,
            "fronts": {k: [s.as_dict() for s in v.front] for k, v in results.items()},
        },
    )


if __name__ == "__main__":
    main()
