"""First held-out perplexity figures on wsq.examples.pylm (the README's table), until the model
joins bench/results.py: fp32, round-to-nearest int4/int3 with group-128 fp16 scales (fake-quantised
in place; bits in memory 4 + 16/128), wsq.compress at k=16 and k=8, and wsq.tune at tolerance 0.01
decided on the decision files. Prints one JSON line per row.

    python bench/pylm_first.py      # ~10 min on 2 busy cores once the model is cached
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import wsq  # noqa: E402
from wsq.examples import pylm  # noqa: E402


def rtn(model: torch.nn.Module, bits: int, group: int = 128) -> torch.nn.Module:
    """A copy with every >= 2-D weight rounded to symmetric `bits`-bit integers per `group`
    consecutive weights of a row, scale = max|w| / (2**(bits-1) - 1)."""
    m = copy.deepcopy(model)
    q = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() < 2:
                continue
            w = p.reshape(-1, group)  # every row of this model is a multiple of 128
            s = w.abs().amax(1, keepdim=True).clamp_min(1e-12) / q
            p.copy_((torch.clamp(torch.round(w / s), -q - 1, q) * s).reshape(p.shape))
    return m


def main() -> None:
    torch.set_num_threads(2)
    model, val_ev, test_ev = pylm.spec()

    def row(name, m, bits_mem, bits_file, **extra):
        r = dict(name=name, val_ppl=math.exp(-val_ev(m)), test_ppl=math.exp(-test_ev(m)),
                 bits_memory=bits_mem, bits_file=bits_file, **extra)  # fmt: skip
        print(json.dumps(r), flush=True)

    row("fp32", model, 32, 32)
    for b in (4, 3):
        row(f"RTN int{b} g128 (fp16 scales)", rtn(model, b), b + 16 / 128, None)
    for k in (16, 8):
        c = wsq.compress(model, k=k)
        s = c.stats()
        row(f"wsq.compress k={k}", c.model, s["bits_memory"], 8 * s["file_bytes"] / s["n_weights"])
    t = time.perf_counter()
    c = wsq.tune(model, val_ev, tolerance=0.01)
    s = c.stats()
    row("wsq.tune tolerance=0.01", c.model, s["bits_memory"], 8 * s["file_bytes"] / s["n_weights"],
        seconds=time.perf_counter() - t, evaluations=c.tune_info["evaluations"])  # fmt: skip


if __name__ == "__main__":
    main()
