"""wsq.search checkpoints: a run killed at any point resumes with no finished evaluation lost or
recomputed, and ends with the same front as an uninterrupted run."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from _search_digits import Accuracy, Logged, count_lines, digits, trained_cnn

import wsq
from wsq.search import search

TESTS = os.path.dirname(os.path.abspath(__file__))
RUN = {"pop_size": 8, "generations": 4, "seed": 5, "progress": False}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # tiny models: one thread is faster than two contending ones (restored afterwards)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def cnn():
    return trained_cnn()


@pytest.fixture(scope="module")
def acc():
    return Accuracy()


@pytest.fixture(scope="module")
def reference(cnn, acc):
    return search(cnn, acc, **RUN)


def _sig(r):
    return [(s.x, s.metric, s.bits, s.generation) for s in r.history]


class _Stop(Exception):
    pass


class _StopAt(Logged):
    """Raises _Stop instead of finishing the call made after `at` finished calls (once)."""

    def __init__(self, inner, log, at):
        super().__init__(inner, log)
        self.at, self.fired = at, False

    def __call__(self, model):
        if not self.fired and count_lines(self.log) >= self.at:
            self.fired = True
            raise _Stop
        return super().__call__(model)


@pytest.mark.parametrize("at", [3, 9, 17, 24])
def test_interrupted_run_resumes_exactly(tmp_path, cnn, acc, reference, at):
    """Stopped mid-generation (3, 17), at the first candidate of a generation (9) or late (24):
    the resumed run has the uninterrupted history and front, and evaluate finished exactly
    1 (baseline) + n_evaluations times over both runs."""
    log = str(tmp_path / "calls")
    ckpt = str(tmp_path / "ck") + "/"
    ev = _StopAt(acc, log, at)
    with pytest.raises(_Stop):
        search(cnn, ev, checkpoint=ckpt, **RUN)
    done_before = count_lines(log)
    assert done_before == at
    r = search(cnn, ev, checkpoint=ckpt, **RUN)
    assert _sig(r) == _sig(reference)
    assert [s.x for s in r.front] == [s.x for s in reference.front]
    assert r.n_requested == reference.n_requested
    assert count_lines(log) == 1 + reference.n_evaluations  # nothing recomputed
    # a finished checkpoint: running again evaluates nothing
    again = search(cnn, ev, checkpoint=ckpt, **RUN)
    assert _sig(again) == _sig(reference) and count_lines(log) == 1 + reference.n_evaluations


def test_sigkill_subprocess_resumes(tmp_path, cnn, reference):
    """A real kill -9 mid-run (after N finished evaluations), then a rerun of the same command."""
    from safetensors.torch import save_file

    weights = str(tmp_path / "cnn.safetensors")
    save_file({k: v.contiguous() for k, v in cnn.state_dict().items()}, weights)
    x, y = digits("val")  # shipped as a file: the child skips importing scikit-learn
    save_file({"x": x, "y": y}, str(tmp_path / "val.safetensors"))
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, os, signal, sys
            sys.path.insert(0, {TESTS!r})
            import torch
            torch.set_num_threads(1)
            from safetensors.torch import load_file
            from _search_digits import Accuracy, count_lines, small_cnn
            import wsq

            model = small_cnn()
            model.load_state_dict(load_file(sys.argv[1]))
            model.eval()
            val = load_file(os.path.join(os.path.dirname(sys.argv[1]), "val.safetensors"))
            acc = Accuracy(val["x"], val["y"])
            log, kill_after = sys.argv[2], int(sys.argv[3])

            def evaluate(m):
                if kill_after >= 0 and count_lines(log) >= kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)
                v = acc(m)
                with open(log, "a") as f:
                    f.write("1\\n")
                return v

            r = wsq.search(model, evaluate, checkpoint=sys.argv[4], **{RUN!r})
            print(json.dumps([[list(s.x), s.metric, s.bits, s.generation] for s in r.history]))
            """
        )
    )
    log, ckpt = str(tmp_path / "calls"), str(tmp_path / "ck")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    cmd = [sys.executable, str(script), weights, log]
    p = subprocess.run(cmd + ["13", ckpt], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]
    assert count_lines(log) == 13
    assert os.path.exists(ckpt + ".json") and os.path.exists(ckpt + ".evals.jsonl")
    p = subprocess.run(cmd + ["-1", ckpt], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    hist = [(tuple(x), m, b, g) for x, m, b, g in json.loads(p.stdout.strip().splitlines()[-1])]
    assert hist == _sig(reference)
    assert count_lines(log) == 1 + reference.n_evaluations


def test_extend_generations_and_sweep_resume(tmp_path, cnn, acc, reference):
    log = str(tmp_path / "calls")
    ev = Logged(acc, log)
    ckpt = str(tmp_path / "ext")
    short = search(cnn, ev, checkpoint=ckpt, **{**RUN, "generations": 2})
    assert short.generations == 2
    longer = search(cnn, ev, checkpoint=ckpt, **RUN)
    assert _sig(longer) == _sig(reference)
    assert count_lines(log) == 1 + reference.n_evaluations

    sweep = {"strategy": wsq.Sweep(budget=20), "pop_size": 8, "progress": False}
    plain = search(cnn, acc, **sweep)
    stop = _StopAt(acc, str(tmp_path / "sweep_calls"), 11)
    with pytest.raises(_Stop):
        search(cnn, stop, checkpoint=tmp_path / "sw", **sweep)
    resumed = search(cnn, stop, checkpoint=tmp_path / "sw", **sweep)
    assert _sig(resumed) == _sig(plain)
    assert count_lines(str(tmp_path / "sweep_calls")) == 1 + 20


def test_checkpoint_files_and_guards(tmp_path, cnn, acc):
    ckpt = tmp_path / "g"
    log = str(tmp_path / "calls")
    r = search(cnn, Logged(acc, log), checkpoint=ckpt, **{**RUN, "generations": 2})
    meta = json.loads((tmp_path / "g.json").read_text())
    assert meta["format"] == "wsq-search-checkpoint" and meta["generation"] == 2
    npzs = glob.glob(str(tmp_path / "g.g*.npz"))
    assert len(npzs) == 1  # older snapshots removed
    with np.load(npzs[0], allow_pickle=False) as z:  # no object arrays anywhere
        assert z["cache_x"].shape == (r.n_evaluations, 1) and z["cache_x"].dtype == np.int64
        assert z["pop_x"].shape[1] == 1
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]

    with pytest.raises(ValueError, match="pop_size"):
        search(cnn, acc, checkpoint=ckpt, **{**RUN, "pop_size": 10})
    with pytest.raises(ValueError, match="seed"):
        search(cnn, acc, checkpoint=ckpt, **{**RUN, "seed": 6})

    # a torn last journal line (killed mid-write) is ignored
    with open(tmp_path / "g.evals.jsonl", "a") as f:
        f.write('{"x": [17], "v": [0.5, 1.')
    n = count_lines(log)
    search(cnn, Logged(acc, log), checkpoint=ckpt, **{**RUN, "generations": 2})
    assert count_lines(log) == n  # finished: nothing evaluated

    # resume=False starts over (every candidate evaluated again)
    search(cnn, Logged(acc, log), checkpoint=ckpt, resume=False, **{**RUN, "generations": 2})
    assert count_lines(log) == n + 1 + r.n_evaluations

    # a damaged snapshot is refused, not silently replaced
    npz = glob.glob(str(tmp_path / "g.g*.npz"))[0]
    with open(npz, "r+b") as f:
        f.seek(40)
        b = f.read(1)
        f.seek(40)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(wsq.FormatError, match="checksum"):
        search(cnn, acc, checkpoint=ckpt, **{**RUN, "generations": 2})
    (tmp_path / "g.json").write_text("{not json")
    with pytest.raises(wsq.FormatError, match="JSON"):
        search(cnn, acc, checkpoint=ckpt, **{**RUN, "generations": 2})
