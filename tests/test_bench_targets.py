"""bench/_targets.py: issue 10's verdicts read off a run's rows (synthetic rows, no timing)."""

from __future__ import annotations

import importlib
import os
import sys

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def _targets():
    sys.path.insert(0, BENCH)
    try:
        return importlib.import_module("_targets")
    finally:
        sys.path.remove(BENCH)


T = _targets()
AVX512_CPU = {"isa": "avx512", "isa_detected": "avx512", "threads": 2}
AVX2_CPU = {"isa": "avx2", "isa_detected": "avx2", "threads": 2}


def _mm(shape, bits, batch, isa, fp32, int8=1.0):
    return {
        "kernel": f"lut_matmul {shape} b={bits} batch={batch}",
        "isa": isa,
        "vs torch fp32": fp32,
        "vs int8 dyn": int8,
    }


def test_matmul_goals_per_shape_level_and_how_run():
    rows = [
        _mm("4096x4096", 4, 1, "avx2", 5.2, int8=1.4),
        _mm("4096x4096", 4, 1, "avx512", 4.9, int8=1.6),
        _mm("11008x4096", 8, 1, "avx2", 3.0),
        _mm("4096x4096", 8, 64, "avx2", 0.79),
        _mm("4096x4096", 4, 8, "avx2", 9.0),  # batch 8: no goal
        _mm("64x96", 4, 1, "avx2", 9.0),  # not one of the shapes
    ]
    got = {(v["target"], v["shape"], v["isa"]): v for v in T.kernel_targets(rows, AVX512_CPU)}
    assert len(got) == 6
    v = got[("b=4 batch 1 vs torch fp32 >= 5x", "4096x4096", "avx2")]
    assert v["verdict"] == "met" and v["how"] == "forced (CPU has avx512)"
    assert got[("b=4 batch 1 vs int8 dyn >= 1.5x", "4096x4096", "avx2")]["verdict"] == "missed"
    v = got[("b=4 batch 1 vs torch fp32 >= 5x", "4096x4096", "avx512")]
    assert v["verdict"] == "missed" and v["how"] == "native"
    assert got[("b=4 batch 1 vs int8 dyn >= 1.5x", "4096x4096", "avx512")]["verdict"] == "met"
    assert got[("b=8 batch 1 vs torch fp32 >= 3x", "11008x4096", "avx2")]["verdict"] == "met"
    assert got[("b=8 batch 64 vs torch fp32 >= 0.8x", "4096x4096", "avx2")]["verdict"] == "missed"
    # the same AVX2 row taken on an AVX2-only CPU is native: the figure issue 10 asks for
    (v,) = [v for v in T.kernel_targets(rows[:1], AVX2_CPU) if "fp32" in v["target"]]
    assert v["how"] == "native"
    emulated = dict(AVX2_CPU, emulated_cpu="Haswell-v4")
    assert T.kernel_targets(rows[:1], emulated)[0]["how"].startswith("emulated")


def test_binning_goal_per_weight_and_in_bytes():
    rows = [
        {"kernel": "torch copy_ into warm buffer", "n": 100, "ms": 10.0},
        {"kernel": "bin pass into warm index buffer k=256", "n": 100, "ms": 12.5, "x copy_": 0.5},
    ]
    got = {v["target"]: v for v in T.kernel_targets(rows, AVX512_CPU)}
    per_weight = got["binning pass >= 0.7x warm copy_ (per weight)"]
    assert per_weight["measured"] == 0.8 and per_weight["verdict"] == "met"
    assert got["binning pass >= 0.7x warm copy_ (in bytes)"]["verdict"] == "missed"
    assert T.kernel_targets(rows[:1], AVX512_CPU) == []  # no pass timed: no verdict


def test_decode_goal_needs_equal_tokens():
    rows = [{"variant": "fp32", "x fp32": 1.0}, {"variant": "wsq4", "x fp32": 3.1}]
    ok = [{"variant": "wsq4", "tokens equal": True}]
    (v,) = T.decode_targets(rows, ok, AVX512_CPU)
    assert v["verdict"] == "met" and v["measured"] == 3.1
    (v,) = T.decode_targets(rows, [{"variant": "wsq4", "tokens equal": False}], AVX512_CPU)
    assert v["verdict"] == "missed (tokens differ)"
    assert T.decode_targets(rows, [], AVX512_CPU)[0]["verdict"] == "not validated"
    slow = [rows[0], {"variant": "wsq4", "x fp32": 2.4}]
    assert T.decode_targets(slow, ok, AVX2_CPU)[0]["verdict"] == "missed"
    assert T.decode_targets(rows[:1], ok, AVX2_CPU) == []
