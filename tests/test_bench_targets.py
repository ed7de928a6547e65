"""bench/_targets.py: issues 10 and 19's verdicts read off a run's rows (synthetic rows, no timing)."""

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


def _mm(shape, bits, batch, isa, fp32, **cols):
    row = {"kernel": f"lut_matmul {shape} b={bits} batch={batch}", "isa": isa}
    row["vs torch fp32"] = fp32
    row.update({k.replace("_", " "): v for k, v in cols.items()})
    return row


def _by_target(rows, info):
    return {
        (v["target"].split(" (")[0], v["shape"], v["isa"]): v for v in T.kernel_targets(rows, info)
    }


def test_matmul_goals_per_width_shape_and_level():
    rows = [
        _mm("4096x4096", 2, 1, "avx512", 9.0, **{"vs b=4": 1.40}),
        _mm("4096x4096", 3, 1, "avx512", 9.0, **{"vs b=4": 0.90}),
        _mm("4096x4096", 6, 1, "avx512", 3.1),
        _mm("4096x4096", 10, 1, "avx512", 1.4),
        _mm("11008x4096", 4, 1, "avx512", 9.0, **{"vs int8 dyn": 1.6, "vs int4 wo": 1.4}),
        _mm("384x384", 5, 32, "avx512", 0.9),
        _mm("384x384", 9, 1, "avx512", 0.5),  # no small-layer goal above 8 bits
        _mm("4096x4096", 13, 64, "avx512", 0.85),
        _mm("4096x4096", 4, 1, "avx2", 5.0, **{"vs int8 dyn": 1.3}),
        _mm("4096x4096", 8, 1, "avx2", 1.4),
        _mm("64x96", 4, 1, "avx512", 9.0),  # not one of the shapes
    ]
    got = _by_target(rows, AVX512_CPU)
    assert len(got) == 10
    v = got[("b=2 time <= 0.75x b=4 time", "4096x4096 b=2 batch 1", "avx512")]
    assert v["verdict"] == "met" and v["how"] == "native"
    assert got[("b=3 time <= b=4 time", "4096x4096 b=3 batch 1", "avx512")]["verdict"] == "missed"
    assert got[("b=5,6 >= 3x fp32", "4096x4096 b=6 batch 1", "avx512")]["verdict"] == "met"
    assert got[("b=9..12 >= 1.5x fp32", "4096x4096 b=10 batch 1", "avx512")]["verdict"] == "missed"
    big4 = "11008x4096 b=4 batch 1"
    assert got[("b=4 >= 1.5x dynamic int8", big4, "avx512")]["verdict"] == "met"
    assert got[("b=4 >= 1.5x int4 weight-only", big4, "avx512")]["verdict"] == "missed"
    small = ("small layer b=2..8 >= 1x fp32", "384x384 b=5 batch 32", "avx512")
    assert got[small]["verdict"] == "missed"
    big = ("batch >= 64 >= 0.8x fp32", "4096x4096 b=13 batch 64", "avx512")
    assert got[big]["verdict"] == "met"
    v = got[("AVX2 b=4 >= 1.2x dynamic int8", "4096x4096 b=4 batch 1", "avx2")]
    assert v["verdict"] == "met" and v["how"] == "forced (CPU has avx512)"
    assert got[("AVX2 b=8 >= 1.5x fp32", "4096x4096 b=8 batch 1", "avx2")]["verdict"] == "missed"
    # native goals hold the CPU's best level only: the forced AVX2 rows get only the AVX2 goals
    assert not [k for k in got if k[2] == "avx2" and not k[0].startswith("AVX2")]
    # on an AVX2-only CPU the same AVX2 rows are native, and hold both kinds of goal
    on_avx2 = _by_target(rows[8:10], AVX2_CPU)
    assert {v["how"] for v in on_avx2.values()} == {"native"}
    assert ("b=8 >= dynamic int8", "4096x4096 b=8 batch 1", "avx2") not in on_avx2  # no column


def test_emulated_rows_are_not_timings_and_get_no_verdict():
    rows = [_mm("4096x4096", 4, 1, "avx2", 5.2, **{"vs int8 dyn": 1.4})]
    emulated = dict(AVX2_CPU, emulated_cpu="Haswell-v4")
    got = T.kernel_targets(rows, emulated)
    assert len(got) == 2  # the native b=4 goal and the AVX2 one: the level is this CPU's best
    for v in got:
        assert v["how"].startswith("emulated") and "not a timing" in v["how"]
        assert v["verdict"] == "not a timing"
    bins = [
        {"kernel": "torch copy_ into warm buffer", "n": 100, "ms": 10.0},
        {"kernel": "bin pass into warm index buffer k=256", "n": 100, "ms": 12.5, "x copy_": 0.5},
    ]
    assert {v["verdict"] for v in T.kernel_targets(bins, emulated)} == {"not a timing"}
    dec = [{"variant": "wsq4", "x fp32": 5.0, "x int8": 2.0}]
    ok = [{"variant": "wsq4", "tokens equal": True}]
    assert {v["verdict"] for v in T.decode_targets(dec, ok, emulated)} == {"not a timing"}


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


def test_decode_goals_need_equal_tokens():
    rows = [
        {"variant": "fp32", "x fp32": 1.0},
        {"variant": "wsq4", "x fp32": 4.1, "x int8": 1.1},
        {"variant": "wsq8", "x fp32": 3.0},
    ]
    ok = [{"variant": "wsq4", "tokens equal": True}, {"variant": "wsq8", "tokens equal": True}]
    got = {" ".join(v["target"].split()[1:5]): v for v in T.decode_targets(rows, ok, AVX512_CPU)}
    assert (
        got["wsq4 tokens/s x fp32"]["verdict"] == "met"
        and got["wsq4 tokens/s x fp32"]["measured"] == 4.1
    )
    assert got["wsq4 tokens/s x int8"]["verdict"] == "missed"
    assert got["wsq8 tokens/s x fp32"]["verdict"] == "missed" and "wsq8 tokens/s x int8" not in got
    bad = [{"variant": "wsq4", "tokens equal": False}]
    assert T.decode_targets(rows[:2], bad, AVX2_CPU)[0]["verdict"] == "missed (tokens differ)"
    assert T.decode_targets(rows[:2], [], AVX2_CPU)[0]["verdict"] == "not validated"
    assert T.decode_targets(rows[:1], ok, AVX2_CPU) == []
