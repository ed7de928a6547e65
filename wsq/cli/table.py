"""The summary table of ``wsq compress``: one row per method (each column's range over its
models), the fixed-width store the paper's CR counts, and the paper-style text table."""

from __future__ import annotations

__all__ = ["fixed_bytes", "table_row", "format_table"]


def fixed_bytes(c) -> int:
    """Bytes of a fixed-width (not entropy-coded) store: packed indices + float32 codebook + every
    uncompressed tensor (no header)."""
    from wsq.kernels import ops

    packed = sum(ops.packed_bytes(q.numel, c.bits) for q in c.quantized.values())
    rest = sum(t.numel() * t.element_size() for t in c.rest_state().values())
    return packed + 4 * int(c.codebook.numel()) + rest


def table_row(method: str, items: list[dict]) -> dict:
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
