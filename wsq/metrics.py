"""Built-in evaluators: ``evaluate(model) -> float``, higher is better, for wsq.search and wsq.merge.

* :func:`accuracy` -- top-1 accuracy over labelled data (a DataLoader or ``(inputs, labels)``).
* Data-free fidelity against the ORIGINAL model's outputs on given inputs (no labels needed):
  :func:`agreement` (top-1 agreement), :func:`kl` (minus the mean KL divergence, so higher is
  better and 0 is perfect) and :func:`cosine` (mean cosine similarity of the outputs, e.g. sentence
  embeddings).

Every evaluator runs the model under ``torch.no_grad()`` in eval mode and restores each module's
train/eval flag afterwards. Reference outputs are computed ONCE, when the evaluator is built. The
evaluators are plain picklable objects (no closures), so they can be shipped to executor workers.

Inputs may be a tensor (split along dim 0 into batches of ``batch_size``), a mapping of tensors
(e.g. a tokenizer's output; called as ``model(**batch)``, every tensor split along dim 0), or a
tuple/list of tensors (called as ``model(*batch)``). Inputs are moved to the model's device
(``device=None``: the device of the model's first parameter or buffer) batch by batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["accuracy", "agreement", "kl", "cosine", "Accuracy", "Agreement", "KL", "Cosine"]

OutputFn = Callable[[object], Tensor]


# ----------------------------------------------------------------------------- helpers


def _check_model(model) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def _batch_size(v) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"batch_size must be an int, got {type(v).__name__}")
    if v < 1:
        raise ValueError(f"batch_size must be >= 1, got {v}")
    return v


def _device(v) -> torch.device | None:
    if v is None:
        return None
    try:
        return torch.device(v)
    except (TypeError, RuntimeError):
        raise ValueError(f"device must be a torch.device or a device string, got {v!r}") from None


def _output_fn(v) -> OutputFn | None:
    if v is not None and not callable(v):
        raise TypeError(f"output_fn must be callable or None, got {type(v).__name__}")
    return v


def _model_device(model: torch.nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _len0(inputs) -> int:
    """Samples along dim 0 of a tensor / mapping / sequence of tensors (all must agree)."""
    if isinstance(inputs, Tensor):
        tensors = [inputs]
    elif isinstance(inputs, Mapping):
        tensors = [v for v in inputs.values() if isinstance(v, Tensor)]
    elif isinstance(inputs, (tuple, list)):
        tensors = [v for v in inputs if isinstance(v, Tensor)]
    else:
        raise TypeError(
            f"inputs must be a tensor, a mapping of tensors or a tuple of tensors, got "
            f"{type(inputs).__name__}"
        )
    if not tensors:
        raise ValueError("inputs hold no tensor")
    sizes = {t.shape[0] if t.dim() else None for t in tensors}
    if None in sizes or len(sizes) != 1:
        raise ValueError(f"inputs: every tensor needs the same size along dim 0, got {sizes}")
    n = sizes.pop()
    if n == 0:
        raise ValueError("inputs hold 0 samples")
    return n


def _slice(inputs, i: int, j: int, device: torch.device):
    def cut(v):
        return v[i:j].to(device, non_blocking=True) if isinstance(v, Tensor) else v

    if isinstance(inputs, Tensor):
        return cut(inputs)
    if isinstance(inputs, Mapping):
        return {k: cut(v) for k, v in inputs.items()}
    return type(inputs)(cut(v) for v in inputs)


def _call(model: torch.nn.Module, batch):
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def _as_tensor(out, output_fn: OutputFn | None, what: str) -> Tensor:
    if output_fn is not None:
        out = output_fn(out)
    if not isinstance(out, Tensor):
        raise TypeError(
            f"{what} returned {type(out).__name__}, not a tensor; pass output_fn= to extract "
            "the output tensor (e.g. output_fn=lambda o: o.logits)"
        )
    return out


class _EvalMode:
    """Context: no_grad + eval mode, restoring every module's own training flag afterwards."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __enter__(self):
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.grad = torch.no_grad()
        self.grad.__enter__()
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        for m, flag in self.flags:
            m.training = flag
        self.grad.__exit__(*exc)
        return False


def _outputs(model, inputs, n: int, batch_size: int, device, output_fn, what: str):
    """Yields (start, stop, output tensor) batch by batch, under _EvalMode."""
    dev = device if device is not None else _model_device(model)
    with _EvalMode(model):
        for i in range(0, n, batch_size):
            j = min(n, i + batch_size)
            out = _as_tensor(_call(model, _slice(inputs, i, j, dev)), output_fn, what)
            if out.dim() == 0 or out.shape[0] != j - i:
                raise ValueError(
                    f"{what}: output of shape {tuple(out.shape)} for a batch of {j - i} samples; "
                    "outputs must have one row per sample along dim 0"
                )
            yield i, j, out


# ----------------------------------------------------------------------------- accuracy


class Accuracy:
    """Top-1 accuracy of ``model`` on labelled data; see :func:`accuracy`."""

    def __init__(self, data, *, batch_size: int = 1024, device=None, output_fn=None) -> None:
        self.batch_size = _batch_size(batch_size)
        self.device = _device(device)
        self.output_fn = _output_fn(output_fn)
        if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[1], Tensor):
            x, y = data
            n = _len0(x)
            if y.dim() != 1 or y.shape[0] != n:
                raise ValueError(
                    f"labels must be a 1-D tensor of {n} class indices, got shape {tuple(y.shape)}"
                )
            if y.is_floating_point() or y.is_complex():
                raise TypeError(f"labels must be integer class indices, got {y.dtype}")
            self.tensors: tuple | None = (x, y)
            self.loader = None
        elif isinstance(data, Iterable) and not isinstance(data, (Tensor, str, bytes, Mapping)):
            self.tensors, self.loader = None, data
        else:
            raise TypeError(
                "data must be (inputs, labels) tensors or an iterable of (inputs, labels) batches "
                f"such as a DataLoader, got {type(data).__name__}"
            )

    def _batches(self, model):
        dev = self.device if self.device is not None else _model_device(model)
        if self.tensors is not None:
            x, y = self.tensors
            n = y.shape[0]
            for i in range(0, n, self.batch_size):
                j = min(n, i + self.batch_size)
                yield _slice(x, i, j, dev), y[i:j]
        else:
            for b in self.loader:
                if not isinstance(b, (tuple, list)) or len(b) != 2:
                    raise TypeError("data batches must be (inputs, labels) pairs")
                yield _slice(b[0], 0, None, dev), b[1]

    def __call__(self, model: torch.nn.Module) -> float:
        _check_model(model)
        correct = total = 0
        with _EvalMode(model):
            for x, y in self._batches(model):
                out = _as_tensor(_call(model, x), self.output_fn, "model")
                if out.dim() != 2 or out.shape[0] != y.shape[0]:
                    raise ValueError(
                        f"model output of shape {tuple(out.shape)} is not (batch, classes) for "
                        f"{y.shape[0]} labels"
                    )
                correct += int((out.argmax(1).cpu() == y.cpu()).sum())
                total += int(y.shape[0])
        if total == 0:
            raise ValueError("data yielded no samples")
        return correct / total


def accuracy(
    data, *, batch_size: int = 1024, device=None, output_fn: OutputFn | None = None
) -> Accuracy:
    """An evaluator: the fraction of samples whose argmax output equals the label.

    Args:
        data: ``(inputs, labels)`` -- inputs a tensor (or mapping/tuple of tensors) with samples
            along dim 0, labels int (n,) -- or any iterable of ``(inputs, labels)`` batches, such
            as a torch DataLoader (iterated afresh on each call).
        batch_size: samples per forward when data are tensors.
        device: where inputs go (default: the model's device at call time).
        output_fn: extracts the (batch, classes) logits tensor from the model's output.

    Returns:
        ``evaluate(model) -> float`` in [0, 1].
    """
    return Accuracy(data, batch_size=batch_size, device=device, output_fn=output_fn)


# ----------------------------------------------------------------------------- fidelity


class _Fidelity:
    """Shared part of the data-free evaluators: inputs, batching, reference outputs computed once."""

    what = "reference_model"

    def __init__(self, reference_model, inputs, *, batch_size, device, output_fn) -> None:
        _check_model(reference_model)
        self.inputs = inputs
        self.n = _len0(inputs)
        self.batch_size = _batch_size(batch_size)
        self.device = _device(device)
        self.output_fn = _output_fn(output_fn)
        parts = []
        self.sample_shape: tuple[int, ...] = ()
        for _, _, out in _outputs(
            reference_model, inputs, self.n, self.batch_size, self.device, self.output_fn,
            "reference_model",
        ):  # fmt: skip
            self.sample_shape = tuple(out.shape[1:])
            parts.append(self._reference(out))
        self.ref = torch.cat(parts)

    def _reference(self, out: Tensor) -> Tensor:
        raise NotImplementedError

    def _score(self, out: Tensor, ref: Tensor) -> Tensor:
        """Per-sample scores (batch,) float64."""
        raise NotImplementedError

    def __call__(self, model: torch.nn.Module) -> float:
        _check_model(model)
        total = 0.0
        for i, j, out in _outputs(
            model, self.inputs, self.n, self.batch_size, self.device, self.output_fn, "model"
        ):
            if tuple(out.shape[1:]) != self.sample_shape:
                raise ValueError(
                    f"model output shape {tuple(out.shape[1:])} per sample differs from the "
                    f"reference's {self.sample_shape}"
                )
            ref = self.ref[i:j].to(out.device)
            total += float(self._score(out, ref).sum())
        return total / self.n


class Agreement(_Fidelity):
    """Top-1 agreement with a reference model; see :func:`agreement`."""

    def _reference(self, out: Tensor) -> Tensor:
        if out.dim() < 2:
            raise ValueError(
                f"reference output of shape {tuple(out.shape)} is not (batch, classes)"
            )
        return out.argmax(-1)

    def _score(self, out: Tensor, ref: Tensor) -> Tensor:
        return (out.argmax(-1) == ref).reshape(out.shape[0], -1).double().mean(1)


class KL(_Fidelity):
    """Minus the mean KL divergence KL(reference || model) in nats; see :func:`kl`."""

    def _reference(self, out: Tensor) -> Tensor:
        if out.dim() < 2:
            raise ValueError(
                f"reference output of shape {tuple(out.shape)} is not (batch, classes)"
            )
        return F.log_softmax(out.float(), dim=-1)

    def _score(self, out: Tensor, ref: Tensor) -> Tensor:
        logq = F.log_softmax(out.float(), dim=-1)
        kl = (ref.exp() * (ref - logq)).sum(-1)  # (batch, ...) nats
        return -kl.reshape(out.shape[0], -1).double().mean(1)


class Cosine(_Fidelity):
    """Mean cosine similarity of outputs with a reference model's; see :func:`cosine`."""

    def _reference(self, out: Tensor) -> Tensor:
        return out.float().reshape(out.shape[0], -1)

    def _score(self, out: Tensor, ref: Tensor) -> Tensor:
        return F.cosine_similarity(out.float().reshape(out.shape[0], -1), ref, dim=1).double()


def agreement(
    reference_model: torch.nn.Module,
    inputs,
    *,
    batch_size: int = 1024,
    device=None,
    output_fn: OutputFn | None = None,
) -> Agreement:
    """A data-free evaluator: the fraction of inputs on which ``model``'s top-1 class (argmax of
    the last dim) equals ``reference_model``'s.

    The reference's predictions are computed once, here. Inputs need no labels: any
    representative sample works. Returns ``evaluate(model) -> float`` in [0, 1] (1 = always agrees).
    """
    return Agreement(
        reference_model, inputs, batch_size=batch_size, device=device, output_fn=output_fn
    )


def kl(
    reference_model: torch.nn.Module,
    inputs,
    *,
    batch_size: int = 1024,
    device=None,
    output_fn: OutputFn | None = None,
) -> KL:
    """A data-free evaluator: ``-mean KL(softmax(reference) || softmax(model))`` over the inputs.

    The KL divergence (nats, over the last dim; averaged over samples and any middle dims) is
    negated so that higher is better, as wsq expects: a model identical to the reference scores 0,
    everything else < 0. A smooth proxy that ranks candidates more finely than accuracy.
    """
    return KL(reference_model, inputs, batch_size=batch_size, device=device, output_fn=output_fn)


def cosine(
    reference_model: torch.nn.Module,
    inputs,
    *,
    output_fn: OutputFn | None = None,
    batch_size: int = 256,
    device=None,
) -> Cosine:
    """A data-free evaluator: the mean over inputs of the cosine similarity between ``model``'s and
    ``reference_model``'s outputs (each sample's output flattened), in [-1, 1], 1 = same direction.

    For embedding models; ``output_fn`` extracts the tensor from the model's output (e.g. pooled
    sentence embeddings from a transformers output object).
    """
    return Cosine(
        reference_model, inputs, batch_size=batch_size, device=device, output_fn=output_fn
    )
