"""Hugging Face transformers integration: wsq as a ``quant_method`` of transformers.

Importing this module (``import wsq.hf``; ``import wsq`` alone never imports transformers) registers
the quantization config :class:`WsqConfig` and the quantizer :class:`WsqHfQuantizer` under the name
``"wsq"`` with ``transformers.quantizers.auto``. Then:

* ``wsq.hf.save_pretrained(compressed, directory)`` writes ``config.json`` (the model's config with
  ``quantization_config``: the method and its chosen parameters, each tensor's in-memory width,
  tied names) and the wsq file itself as ``model.safetensors`` (it is a safetensors file; the
  entropy-coded streams and the one shared codebook are its tensors);
* ``AutoModelForCausalLM.from_pretrained(directory)`` (any ``AutoModel*`` or model class) builds
  the model on the meta device, loads every uncompressed tensor, then decodes the wsq file into
  wsq's layers (``wsq.nn``) in place: the dense weights of the compressed tensors are never held.
  ``wsq.hf.compressed(model)`` gives the :class:`wsq.Compressed` behind such a model.

How loading fits transformers' loader: before the weights are read, each compressed parameter's
slot is emptied (``None``, so transformers neither expects it in the checkpoint nor allocates and
initialises it) and the file's wsq tensors are marked as expected extras; after transformers has
loaded the rest and built the non-persistent buffers, ``wsq.load`` decodes the file into a copy of
the model whose module tree then replaces the model's own.

Limits (clear errors, not silent fallbacks): transformers outside the tested range
(:data:`TESTED_TRANSFORMERS`); a ``device_map`` that spreads the model over several devices or
onto disk; a ``dtype=`` other than the saved one (``wsq.FormatError`` listing the
tensors; load as saved, then ``model.to(dtype)``: wsq's layers compute in it from the same
float32 tables); a ``quantization_config=WsqConfig()`` used to compress while loading (compress with
``wsq.compress`` / ``wsq.tune`` first); a sharded or non-safetensors checkpoint. A model loaded this
way saves with :func:`save_pretrained` (``model.save_pretrained`` raises, since transformers would
write the packed buffers, not a wsq file).
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import torch

import wsq

try:
    import transformers
    from transformers.quantizers.auto import register_quantization_config, register_quantizer
    from transformers.quantizers.base import HfQuantizer
    from transformers.utils.quantization_config import QuantizationConfigMixin
except ImportError as e:  # pragma: no cover - exercised only without transformers
    raise ImportError(
        "wsq.hf needs transformers: pip install 'wsq[hf]' (transformers "
        ">=5.25,<5.26, the range wsq.hf is tested on)"
    ) from e

__all__ = ["WsqConfig", "WsqHfQuantizer", "save_pretrained", "compressed", "TESTED_TRANSFORMERS"]

QUANT_METHOD = "wsq"
WEIGHTS_NAME = "model.safetensors"
# The transformers releases this module's hooks were tested against (the loader's internals it
# relies on, e.g. which hooks run before and after the weights are read, changed across 4.x/5.x).
TESTED_TRANSFORMERS = ((5, 25), (5, 25))
# the wsq file's own tensors (wsq.container: the codebook and one coded stream per tensor)
_WSQ_KEYS = r"(^|\.)wsq\.(codebook|idx\..*)$"


def _version(v: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", v)
    if m is None:
        raise ImportError(f"wsq.hf: cannot read the transformers version {v!r}")
    return int(m.group(1)), int(m.group(2))


def _check_transformers() -> None:
    lo, hi = TESTED_TRANSFORMERS
    have = _version(transformers.__version__)
    if not lo <= have <= hi:
        raise ImportError(
            f"wsq.hf is tested with transformers {lo[0]}.{lo[1]}.x to {hi[0]}.{hi[1]}.x; found "
            f"{transformers.__version__} (its loader hooks differ): pip install "
            f"'transformers>={lo[0]}.{lo[1]},<{hi[0]}.{hi[1] + 1}'"
        )


_check_transformers()


def _json_number(x: Any) -> Any:
    """float/int for JSON (None and non-finite floats as None)."""
    if x is None:
        return None
    x = float(x)
    return x if x == x and abs(x) != float("inf") else None


@register_quantization_config(QUANT_METHOD)
class WsqConfig(QuantizationConfigMixin):
    """The ``quantization_config`` of a wsq checkpoint (config.json); written by
    :func:`save_pretrained`, read by transformers when it loads the directory.

    Args:
        widths: canonical parameter name -> the index width (bits, 1..16) that tensor is held at
            in memory (the narrowest for the values it uses).
        tied: canonical name -> its other (tied) names, for tensors stored once under several names.
        method: how the file was made: "uniform" (k equal bins), "uniform+merge", "grid"
            (``wsq.tune``) or None when unknown (e.g. re-saved from a loaded file).
        params: the method's chosen parameters (k, lo, hi; the grid's scale; the merge's threshold
            and codebook sizes; tolerance when the caller gave it), JSON values.
        n_values: entries of the one shared codebook; bits_file: index width in the file.
        wsq_version: the wsq that wrote it.
    """

    def __init__(
        self,
        widths: dict[str, int] | None = None,
        tied: dict[str, list[str]] | None = None,
        method: str | None = None,
        params: dict[str, Any] | None = None,
        n_values: int | None = None,
        bits_file: int | None = None,
        wsq_version: str | None = None,
        quant_method: str = QUANT_METHOD,
        **unknown: Any,
    ) -> None:
        if quant_method != QUANT_METHOD:
            raise ValueError(f"quant_method must be {QUANT_METHOD!r}, got {quant_method!r}")
        if unknown:
            raise TypeError(
                f"WsqConfig got unknown fields {sorted(unknown)} (written by a newer wsq?)"
            )
        widths = {} if widths is None else widths
        if not isinstance(widths, dict) or not all(
            isinstance(k, str) and isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 16
            for k, b in widths.items()
        ):
            raise ValueError(f"widths must map parameter names to ints in 1..16, got {widths!r}")
        tied = {} if tied is None else tied
        if not isinstance(tied, dict) or not all(
            k in widths and isinstance(v, list) and all(isinstance(n, str) for n in v)
            for k, v in tied.items()
        ):
            raise ValueError(f"tied must map names of widths to lists of names, got {tied!r}")
        if method not in (None, "uniform", "uniform+merge", "grid"):
            raise ValueError(
                f"method must be 'uniform', 'uniform+merge', 'grid' or None, got {method!r}"
            )
        if params is not None and not isinstance(params, dict):
            raise TypeError(f"params must be a dict or None, got {type(params).__name__}")
        self.quant_method = QUANT_METHOD
        self.method = method
        self.params = {} if params is None else dict(params)
        self.widths = dict(widths)
        self.tied = {k: list(v) for k, v in tied.items()}
        self.n_values = n_values
        self.bits_file = bits_file
        self.wsq_version = wsq_version

    def names(self) -> list[str]:
        """Every compressed parameter name, tied ones included."""
        out = []
        for n in self.widths:
            out.append(n)
            out.extend(self.tied.get(n, []))
        return out

    @classmethod
    def from_compressed(cls, c: wsq.Compressed, *, tolerance: float | None = None) -> WsqConfig:
        """The config describing `c` (what :func:`save_pretrained` writes)."""
        params: dict[str, Any] = {}
        tune = getattr(c, "tune_info", None)
        merge = getattr(c, "merge_info", None)
        if tune is not None:
            method = "grid"
            params.update(
                scale=_json_number(tune.get("scale")),
                metric=_json_number(tune.get("metric")),
                evaluations=tune.get("evaluations"),
            )
        elif merge is not None:
            method = "uniform+merge"
            params.update(
                n_before=merge.get("n_before"),
                n_after=merge.get("n_after"),
                baseline=_json_number(merge.get("baseline")),
                threshold=_json_number(merge.get("threshold")),
                metric=_json_number(merge.get("metric_after")),
            )
        elif c.k is not None:
            method = "uniform"
        else:
            method = None
        if c.k is not None:
            params.update(k=int(c.k), lo=_json_number(c.lo), hi=_json_number(c.hi))
        if tolerance is not None:
            params["tolerance"] = _json_number(tolerance)
        q = c.quantized
        return cls(
            widths={n: int(p.bits) for n, p in q.items()},
            tied={n: list(p.names[1:]) for n, p in q.items() if len(p.names) > 1},
            method=method,
            params=params,
            n_values=int(c.codebook.numel()),
            bits_file=int(c.bits),
            wsq_version=wsq.__version__,
        )


def _single_device(device_map: Any) -> None:
    """A device_map wsq can honour puts the whole model on one device (not disk)."""
    if device_map is None:
        return
    if isinstance(device_map, (str, torch.device, int)):
        devices = {str(device_map)}
    elif isinstance(device_map, dict):
        devices = {str(d) for d in device_map.values()}
    else:
        raise TypeError(
            f"device_map must be None, a device or a dict, got {type(device_map).__name__}"
        )
    if "disk" in devices or len(devices) > 1:
        raise ValueError(
            f"device_map={device_map!r}: a wsq model loads whole onto one device (its layers "
            "share one codebook and its file is decoded in one piece); pass device_map=None, "
            "a device such as 'cpu', or a dict that maps every module to the same device"
        )


@register_quantizer(QUANT_METHOD)
class WsqHfQuantizer(HfQuantizer):
    """Loads a directory written by :func:`save_pretrained` (see the module docstring)."""

    requires_calibration = True

    def __init__(self, quantization_config: WsqConfig, **kwargs: Any) -> None:
        if not kwargs.get("pre_quantized", True):
            raise ValueError(
                "quantization_config=WsqConfig(...) cannot compress a model while it loads: "
                "compress it with wsq.compress / wsq.tune, write it with wsq.hf.save_pretrained, "
                "then from_pretrained that directory"
            )
        super().__init__(quantization_config, **kwargs)
        self.compressed: wsq.Compressed | None = None
        self._path: str | None = None
        self._slots: list[tuple[torch.nn.Module, str, torch.nn.Parameter]] = []
        self._order: dict[int, list[str]] = {}
        self._tied_keys: dict[str, str] = {}
        self._device: str | None = None

    def validate_environment(self, *args: Any, **kwargs: Any) -> None:
        _single_device(kwargs.get("device_map"))
        device_map = kwargs.get("device_map")
        if isinstance(device_map, dict):
            device_map = next(iter(device_map.values()), None)
        self._device = None if device_map is None else str(device_map)

    def is_serializable(self) -> bool:
        # transformers would write the packed buffers as a plain state dict, which no loader reads
        # back; the message of transformers' ValueError points to the logger, this says the fix
        from transformers.utils import logging

        logging.get_logger(__name__).warning(
            "a wsq model saves with wsq.hf.save_pretrained(model, directory), not "
            "model.save_pretrained"
        )
        return False

    @property
    def is_trainable(self) -> bool:
        return False

    def _process_model_before_weight_loading(self, model, checkpoint_files=None, **kwargs):
        files = list(checkpoint_files or [])
        if len(files) != 1 or not files[0].endswith(".safetensors"):
            raise ValueError(
                f"a wsq checkpoint is one {WEIGHTS_NAME} (the wsq file), found {files}"
            )
        self._path = files[0]
        cfg = self.quantization_config
        names = cfg.names()
        if not names:
            raise ValueError("quantization_config.widths names no compressed parameter")
        self._slots = []
        for name in names:
            path, _, attr = name.rpartition(".")
            try:
                mod = model.get_submodule(path) if path else model
            except AttributeError:
                raise ValueError(
                    f"quantization_config names {name!r}, which is not a parameter of "
                    f"{type(model).__name__}"
                ) from None
            if mod is model:
                raise ValueError(
                    f"{name!r}: a parameter of the model's root module cannot be loaded in place"
                )
            p = mod._parameters.get(attr)
            if not isinstance(p, torch.nn.Parameter):
                raise ValueError(
                    f"quantization_config names {name!r}, which is not a parameter of "
                    f"{type(model).__name__}"
                )
            self._slots.append((mod, attr, p))
        # tied names share one Parameter (transformers builds them untied on the meta device and
        # ties them after loading), so the template wsq.load sees has the saved tie groups
        first = {n: i for i, n in enumerate(names)}
        for canon, others in cfg.tied.items():
            for n in others:
                mod, attr, _ = self._slots[first[n]]
                self._slots[first[n]] = (mod, attr, self._slots[first[canon]][2])
        self._order = {}
        for mod, attr, p in self._slots:
            # out of state_dict() (transformers neither expects nor allocates it), yet readable as
            # `mod.<attr>` (a meta tensor flagged as initialised: init code that reaches it from a
            # parent module, e.g. GPT-2's scaled c_proj init, skips it)
            self._order.setdefault(id(mod), list(mod._parameters))
            if attr in mod._parameters:
                del mod._parameters[attr]
            p._is_hf_initialized = True
            mod.__dict__[attr] = p
        gone = set(names)
        self._tied_keys = dict(model.all_tied_weights_keys)  # restored once wsq ties them
        model.all_tied_weights_keys = {
            t: s for t, s in model.all_tied_weights_keys.items() if t not in gone and s not in gone
        }
        extra = set(model._keys_to_ignore_on_load_unexpected or ())
        model._keys_to_ignore_on_load_unexpected = extra | {_WSQ_KEYS}
        return model

    def _process_model_after_weight_loading(self, model, **kwargs):
        if self._path is None:
            raise RuntimeError("wsq quantizer: the weights were never prepared for loading")
        for mod, attr, p in self._slots:  # wsq.load's template needs the dense names (meta)
            mod.__dict__.pop(attr, None)
            mod._parameters[attr] = p
        for mod, _, _ in self._slots:  # the original order: state_dict() keys as saved
            order = self._order.pop(id(mod), None)
            if order is not None:
                mod._parameters = {k: mod._parameters[k] for k in order}
        self._slots = []
        if getattr(model, "hf_quantizer", None) is self:
            del model.hf_quantizer  # not copied into the template's deep copy; set again below
        c = wsq.load(self._path, model)
        loaded = c.model
        model._modules = loaded._modules
        model._parameters = loaded._parameters
        model._buffers = loaded._buffers
        model._non_persistent_buffers_set = loaded._non_persistent_buffers_set
        c.model = model
        model.all_tied_weights_keys = self._tied_keys
        model.hf_quantizer = self
        if self._device is not None and self._device != "cpu":
            model.to(self._device)
        self.compressed = c
        return model


def compressed(model: torch.nn.Module) -> wsq.Compressed:
    """The :class:`wsq.Compressed` behind a model that ``from_pretrained`` loaded through wsq."""
    q = getattr(model, "hf_quantizer", None)
    if not isinstance(q, WsqHfQuantizer) or q.compressed is None:
        raise ValueError(
            f"model ({type(model).__name__}) was not loaded by from_pretrained from a wsq "
            "checkpoint (did the process import wsq.hf before loading?)"
        )
    return q.compressed


def save_pretrained(
    model: Any,
    save_directory: str | os.PathLike,
    *,
    tolerance: float | None = None,
    coder: str = "auto",
) -> None:
    """Write a Hugging Face directory that ``from_pretrained`` loads compressed.

    Args:
        model: a :class:`wsq.Compressed` whose model is a transformers ``PreTrainedModel`` (from
            ``wsq.compress`` / ``wsq.tune`` / ``wsq.merge`` / ``wsq.load``), or a model that
            ``from_pretrained`` loaded through wsq.
        save_directory: created if missing; ``config.json`` (with ``quantization_config``),
            ``generation_config.json`` when the model has one, and ``model.safetensors`` (the wsq
            file, exactly what ``wsq.save`` writes) go in it.
        tolerance: the tolerance the file was tuned to, recorded in the config (optional).
        coder: as in :func:`wsq.save`.
    """
    c = model if isinstance(model, wsq.Compressed) else compressed(model)
    net = c.model
    if not isinstance(net, transformers.PreTrainedModel):
        raise TypeError(
            f"model must be a wsq.Compressed of a transformers PreTrainedModel, got one of "
            f"{type(net).__name__}"
        )
    if not isinstance(save_directory, (str, os.PathLike)):
        raise TypeError(
            f"save_directory must be a str or os.PathLike, got {type(save_directory).__name__}"
        )
    save_directory = os.fspath(save_directory)
    if os.path.isfile(save_directory):
        raise ValueError(f"save_directory {save_directory!r} is a file; give a directory")
    if tolerance is not None and (
        isinstance(tolerance, bool) or not isinstance(tolerance, (int, float))
    ):
        raise TypeError(f"tolerance must be a number or None, got {type(tolerance).__name__}")
    os.makedirs(save_directory, exist_ok=True)
    config = copy.deepcopy(net.config)
    config.quantization_config = WsqConfig.from_compressed(c, tolerance=tolerance)
    dtypes = {p.dtype for p in c.quantized.values()}
    if len(dtypes) == 1:
        config.dtype = next(iter(dtypes))
    wsq.save(c, os.path.join(save_directory, WEIGHTS_NAME), coder=coder)
    config.save_pretrained(save_directory)
    gen = getattr(net, "generation_config", None)
    if gen is not None and net.can_generate():
        gen.save_pretrained(save_directory)
