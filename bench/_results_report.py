"""Tables, target checks and front plots of bench/results.py (markdown + PNG)."""

from __future__ import annotations

import math
import os


def _f(v, prec: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, (tuple, list)):
        a, b = v
        if a is None:
            return "-"
        sa, sb = _f(a, prec), _f(b, prec)
        return sa if sa == sb else f"{sa}-{sb}"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{prec}f}"
    return str(v)


def _t(v) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f} s"
    if v >= 1:
        return f"{v:.1f} s"
    return f"{v * 1e3:.1f} ms"


def paper_table(rows: list[dict], metric: str) -> str:
    head = (
        f"| Method | {metric}, decision data | {metric}, held-out | k | n bins | avg bits | "
        "CR (file) | time |\n|---|---|---|---|---|---|---|---|"
    )
    out = [head]
    for r in rows:
        out.append(
            f"| {r['method']} | {_f(r['decide'])} | {_f(r['report'])} | {_f(r['k'])} | "
            f"{_f(r['n_bins'])} | {_f(r['bits'], 2)} | {_f(r['cr'], 2)} | {_t(r.get('time_s'))} |"
        )
    return "\n".join(out)


def points_table(points: list[dict], metric: str, *, extra: str | None = None) -> str:
    head = (
        f"| Method | k | n bins | {metric}, decision | {metric}, held-out | bits/w (coded) | "
        "CR (file) | time | notes |\n|---|---|---|---|---|---|---|---|---|"
    )
    out = [head]
    for p in points:
        out.append(
            f"| {p['method']} | {_f(p.get('k'))} | {_f(p.get('n_bins'))} | {_f(p['decide'])} | "
            f"{_f(p.get('report'))} | {_f(p['bits'], 3)} | {_f(p['cr'], 2)} | "
            f"{_t(p.get('time_s'))} | {p.get('notes', '')} |"
        )
    return "\n".join(out)


def best_at(points: list[dict], max_bits: float, key: str = "decide") -> float | None:
    """Best metric among points with bits <= max_bits (a front read as a step function)."""
    v = [p[key] for p in points if p["bits"] <= max_bits + 1e-12 and p.get(key) is not None]
    return max(v) if v else None


def plot(path: str, title: str, metric: str, series: dict[str, list[dict]], target=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.6), sharex=True, sharey=True)
    markers = "o^sDvP*Xh<>"
    colors = plt.get_cmap("tab20").colors  # one color per series, the same in both panels
    for ax, key, name in ((axes[0], "decide", "decision data"), (axes[1], "report", "held-out")):
        for i, (label, pts) in enumerate(series.items()):
            pts = [p for p in pts if p.get(key) is not None]
            if not pts:
                continue
            pts = sorted(pts, key=lambda p: p["bits"])
            ax.plot(
                [p["bits"] for p in pts], [p[key] for p in pts], marker=markers[i % len(markers)],
                color=colors[(2 * i) % 20 + (i // 10) % 2], ms=4, lw=1, label=label,
            )  # fmt: skip
        if target is not None:
            ax.axhline(target, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("coded bits per pooled weight (same entropy coder for all)")
        ax.set_title(f"{title}: {name}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric)
    lo = [p[k] for pts in series.values() for p in pts for k in ("decide", "report") if p.get(k)]
    if lo:
        top = max(lo)
        floor = target - 4 * (top - target) if target is not None else min(lo)
        axes[0].set_ylim(max(min(lo), floor), top + 0.1 * (top - floor) + 1e-6)
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    fig.legend([handles[x] for x in labels], labels, fontsize=7, loc="lower center",
               ncol=4, frameon=False)  # fmt: skip
    fig.tight_layout(rect=(0, 0.05 + 0.035 * math.ceil(len(labels) / 4), 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
