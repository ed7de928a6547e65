"""What the `wsq` subcommands share: the SPEC that names a model and its evaluate (the embedded
digits default, minilm, pylm, effnet, or module:function / path.py:function), the defaults, the one-line
errors (CliError) and the output-folder and JSON helpers. wsq.cli.main (argument parsing, info,
bench) and wsq.cli.compress (the compress pipeline) both import it; neither imports the other's
internals.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import tempfile
import time
from collections.abc import Callable

DEFAULTS = {
    "k_min": 2,
    "k_max": 1024,
    "pop": 100,
    "gens": 100,
    "seed": 0,
    "tolerance": 0.0,
    "margin": 0.0,
    "metric": "accuracy",
    "coder": "auto",
    "variables": "k",
    "merge_top": 3,
    "merge_evals": None,
    "method": "auto",
    "prefer": "file",
    "grid_iters": 10,
}
# Built-in specs bring settings that suit their size (flags given on the command line win).
_SPEC_DEFAULTS = {
    # the digits default: half a point of validation accuracy (360 images: one image is 0.28)
    "": {"tolerance": 0.005},
    "minilm": {
        "k_min": 64,
        "k_max": 4096,
        "pop": 12,
        "gens": 6,
        "tolerance": 0.01,
        "merge_top": 1,
        "merge_evals": 200,
    },
    # -log(perplexity) per byte: 0.01 nats allows ~1% more perplexity on the decision files;
    # each evaluation runs the 10.8M-parameter model over 8k bytes (seconds on 2 cores)
    "pylm": {
        "k_min": 16,
        "k_max": 1024,
        "pop": 10,
        "gens": 6,
        "tolerance": 0.01,
        "merge_top": 1,
        "merge_evals": 60,
    },
    # top-1 agreement with the fp32 EfficientNet-Lite0 on 64 decision crops (one crop is 0.016;
    # 0.02 is out of the grid's reach on these crops); each evaluation runs 64 224x224 images
    "effnet": {
        "k_min": 64,
        "k_max": 1024,
        "pop": 8,
        "gens": 4,
        "tolerance": 0.05,
        "merge_top": 1,
        "merge_evals": 30,
    },
}


class CliError(Exception):
    """A usage error: reported as one line, exit code 2."""


# ----------------------------------------------------------------------------- specs


class Spec:
    """What ``wsq compress`` works on: a model, the decision evaluate, an optional report one."""

    def __init__(
        self,
        name: str,
        model,
        evaluate: Callable,
        test: Callable | None,
        metric: str,
        probe: Callable | None = None,
    ) -> None:
        self.name, self.model, self.metric = name, model, metric
        self.evaluate, self.test = evaluate, test
        self.probe = probe  # a smooth proxy for the grid method's sensitivities (None: evaluate)
        # decision inputs for wsq.correct_bias (a CNN with BatchNorms); None: no bias correction
        self.bias_inputs = None


def _digits_spec(seed: int, metric: str, say: Callable[[str], None]) -> Spec:
    from wsq import metrics
    from wsq.examples import digits as _digits

    if importlib.util.find_spec("sklearn") is None:
        raise CliError(
            "the built-in digits default needs scikit-learn: pip install 'wsq[demo]' "
            "(or pip install scikit-learn)"
        )
    t0 = time.perf_counter()
    model, path = _digits.load_or_train(seed)
    where = f"cached at {path}" if path else "cache directory not writable, not cached"
    say(f"digits CNN ({sum(p.numel() for p in model.parameters())} parameters) ready in "
        f"{time.perf_counter() - t0:.1f} s, {where}")  # fmt: skip
    d = _digits.splits(seed)
    if metric == "accuracy":
        val, test = metrics.accuracy(d["val"]), metrics.accuracy(d["test"])
    elif metric == "agreement":
        val, test = metrics.agreement(model, d["val"][0]), metrics.agreement(model, d["test"][0])
    else:
        val, test = metrics.kl(model, d["val"][0]), metrics.kl(model, d["test"][0])
    # accuracy on 360 images moves in steps of 1/360: the grid method probes its per-tensor
    # sensitivities with -KL to the original on the same validation inputs instead
    return Spec("digits", model, val, test, metric, probe=metrics.kl(model, d["val"][0]))


def _minilm_spec() -> Spec:
    from wsq.examples import minilm as _minilm

    missing = _minilm.available()
    if missing is not None:
        raise CliError(
            f"the minilm spec needs the hf extra ({missing} is not installed): pip install 'wsq[hf]'"
        )
    model, val, test = _minilm.spec()
    return Spec("minilm", model, val, test, "cosine")


def _pylm_spec() -> Spec:
    from wsq.examples import pylm as _pylm

    if importlib.util.find_spec("transformers") is None:
        raise CliError(
            "the pylm spec needs the hf extra (transformers is not installed): pip install 'wsq[hf]'"
        )
    model, val, test = _pylm.spec()
    return Spec("pylm", model, val, test, "-log perplexity")


def _effnet_spec(say: Callable[[str], None]) -> Spec:
    from wsq import equalize
    from wsq.examples import effnet as _effnet

    missing = _effnet.available()
    if missing is not None:
        raise CliError(
            f"the effnet spec needs the cnn extra ({missing} is not installed): "
            "pip install 'wsq[cnn]'"
        )
    model, val, test, probe, inputs = _effnet.spec()
    # per-channel ranges folded into the BatchNorms (the same function): the methods then see
    # every channel at one range; the file stores the folded BatchNorm values
    model, info = equalize(model, inputs[:2], stat="std")
    say(f"effnet: EfficientNet-Lite0, {len(info['pairs'])} conv layers equalized into their "
        f"BatchNorm (outputs unchanged to {info['check']:.1g})")  # fmt: skip
    spec = Spec("effnet", model, val, test, "agreement", probe=probe)
    spec.bias_inputs = inputs  # the grid also runs with bias correction (wsq.tune_equalized)
    return spec


def _import_spec(spec: str) -> Callable:
    target, sep, fn_name = spec.rpartition(":")
    if not sep or not target or not fn_name.isidentifier():
        raise CliError(
            f"bad SPEC {spec!r}: expected 'module:function' or 'path/to/file.py:function' (or the "
            "built-in 'minilm', 'pylm' or 'effnet')"
        )
    if target.endswith(".py") or os.sep in target or (os.altsep and os.altsep in target):
        if not os.path.isfile(target):
            raise CliError(f"bad SPEC {spec!r}: file {target!r} does not exist")
        name = "wsq_spec_" + os.path.splitext(os.path.basename(target))[0].replace("-", "_")
        try:
            mod_spec = importlib.util.spec_from_file_location(name, target)
            if mod_spec is None or mod_spec.loader is None:
                raise ImportError("not a Python source file")
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = module  # so classes defined there pickle for executors
            mod_spec.loader.exec_module(module)
        except Exception as e:  # the user's file: any error is a bad SPEC
            sys.modules.pop(name, None)
            raise CliError(f"bad SPEC {spec!r}: importing {target!r} failed: {_one_line(e)}") from e
    else:
        try:
            module = importlib.import_module(target)
        except Exception as e:
            raise CliError(
                f"bad SPEC {spec!r}: cannot import module {target!r}: {_one_line(e)}"
            ) from e
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise CliError(f"bad SPEC {spec!r}: {target!r} has no function {fn_name!r}")
    return fn


def _user_spec(spec: str) -> Spec:
    import torch

    fn = _import_spec(spec)
    try:
        out = fn()
    except Exception as e:
        raise CliError(f"bad SPEC {spec!r}: {fn.__name__}() raised {_one_line(e)}") from e
    if (
        not isinstance(out, (tuple, list))
        or len(out) not in (2, 3)
        or not isinstance(out[0], torch.nn.Module)
        or not callable(out[1])
        or (len(out) == 3 and out[2] is not None and not callable(out[2]))
    ):
        raise CliError(
            f"bad SPEC {spec!r}: the function must return (model, evaluate) or (model, evaluate, "
            f"test_evaluate), got {_describe(out)}"
        )
    return Spec(spec, out[0], out[1], out[2] if len(out) == 3 else None, "evaluate")


def _describe(v) -> str:
    if isinstance(v, (tuple, list)):
        return f"a {type(v).__name__} of ({', '.join(type(x).__name__ for x in v)})"
    return f"a {type(v).__name__}"


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


# ----------------------------------------------------------------------------- output dir


def _prepare_out(out: str) -> str:
    out = os.path.abspath(os.path.expanduser(out))
    if os.path.exists(out) and not os.path.isdir(out):
        raise CliError(f"cannot write to --out {out!r}: it exists and is not a directory")
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".wsq-write-test-"):
            pass
    except OSError as e:
        raise CliError(f"cannot write to --out {out!r}: {e.strerror or e}") from None
    return out
