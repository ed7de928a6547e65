"""Drop-in layers that run on packed codebook indices, each tensor at its own width.

A compressed model (made by :func:`wsq.compress` or :func:`wsq.load`) keeps its module tree; each module
owning a compressed parameter has its class swapped in place (the way torch.nn.utils.parametrize does):

* ``nn.Linear`` -> :class:`Linear` (fused LUT matmul straight from the packed indices);
* ``nn.Conv1d/2d/3d``, ``nn.ConvTranspose1d/2d/3d`` -> :class:`Conv1d` ... :class:`ConvTranspose3d`
  (dequantize, then torch's own conv with every hyperparameter of the original module);
* ``nn.Embedding`` -> :class:`Embedding` (gathers only the looked-up rows), ``nn.EmbeddingBag`` ->
  :class:`EmbeddingBag`;
* any other owner (``MultiheadAttention.in_proj_weight``, LSTM/GRU/RNN weights, raw ``nn.Parameter`` s
  of custom modules, subclasses that override ``forward``) -> a subclass of its own class in which
  each compressed parameter is a read-only property that dequantizes on access. The dense parameter
  is removed, never stored. RNN modules see dequantized weights in ``_flat_weights`` during forward
  only.

Each compressed parameter ``<p>`` is held as two buffers of its owner:

* ``<p>_packed``: uint8, ``numel * b`` bits LSB-first, where ``b`` is the narrowest width for the
  values THIS tensor uses (a layer that uses 3 of the model's 400 shared values is held at 2 bits);
* ``<p>_table``: float32 ``(2**b,)``, the values it uses (a gather of the model's shared codebook,
  ascending) padded with NaN. The width is the table's length: ``b = log2(table.numel())``.

The model's ONE shared codebook (what a file stores) is the sorted union of every tensor's values
(:attr:`wsq.Compressed.codebook`); each tensor's dequantized weights are bit-identical to indexing
that codebook. Both buffers are persistent, so a state dict carries each tensor's values with its
indices and a load, whole or partial, is exact for the tensors it names and leaves every other one
bit-identical (see ``_Quantized._load_from_state_dict``). Tied parameters share both buffers (the
same tensor objects) across their owners, also after ``.to(device)``, ``.cuda()``, ``.half()``...;
dtype conversions change the dtype a layer computes in, never its float32 table.

``module.weight`` (or any compressed attribute) returns a freshly dequantized tensor of the original
shape in the layer's compute dtype: reading works as before, assigning raises, and in-place changes
to the returned tensor do not reach the model.
"""

from wsq.nn.layers import (
    Conv1d,
    Conv2d,
    Conv3d,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
    Embedding,
    EmbeddingBag,
    Linear,
    is_quantized,
    quantize_module_,
)
from wsq.nn.state import ModelState
from wsq.nn.tables import (
    PACKED_SUFFIX,
    TABLE_SUFFIX,
    held_bytes,
    held_width,
    table_bits,
    table_size,
)

__all__ = [
    "Linear",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "Embedding",
    "EmbeddingBag",
    "ModelState",
    "is_quantized",
    "quantize_module_",
    "table_bits",
    "held_bytes",
    "held_width",
    "table_size",
    "PACKED_SUFFIX",
    "TABLE_SUFFIX",
]
