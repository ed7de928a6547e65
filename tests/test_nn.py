"""wsq.nn drop-in layers, each against the original module run with the oracle's fake-quantized weights."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import wsq
from wsq.kernels import ops
from wsq.reference import fake_quant_model as reference_fake_quant

K = 24


def _to(v, device):
    return v.to(device) if isinstance(v, torch.Tensor) else v


def check(module: nn.Module, *inputs, exact: bool, device=None, k: int = K, **kw):
    """Compress `module` alone (moved to `device`, inputs too); its output must equal the
    fake-quantized original's. Exact on the CPU; on CUDA within 1e-5, since cuDNN and cuBLAS may
    pick different algorithms (TF32 included) for the two models."""
    device = torch.device("cpu") if device is None else device
    module = module.to(device)
    inputs = [_to(v, device) for v in inputs]
    kw = {n: _to(v, device) for n, v in kw.items()}
    c = wsq.compress(module, k)
    ref = reference_fake_quant(module, k)
    got, want = c.model(*inputs, **kw), ref(*inputs, **kw)
    assert got.device.type == device.type
    if exact and device.type == "cpu":
        assert torch.equal(got, want)
    else:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    return c


# ----------------------------------------------------------------------------- per layer type


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (53, 113), (7, 1025)])
def test_linear(shape, bias, device):
    lin = nn.Linear(shape[1], shape[0], bias=bias)
    c = check(lin, torch.randn(2, 3, shape[1]), exact=False, device=device)
    assert type(c.model) is wsq.nn.Linear
    # identity input gives the dequantized weight exactly (FLUTE's check)
    if not bias:
        eye = torch.eye(shape[1], device=device)
        assert torch.equal(c.model(eye), c.model.weight.T)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_linear_half(dtype, device):
    lin = nn.Linear(64, 32).to(device, dtype)
    c = wsq.compress(lin, K)
    ref = reference_fake_quant(lin, K)
    x = torch.randn(4, 64, dtype=dtype, device=device)
    exact = F.linear(x.double(), ref.weight.double(), ref.bias.double())
    one_ulp = torch.finfo(dtype).eps * exact.abs().max()
    with torch.no_grad():
        tol = 2 * (ref(x).double() - exact).abs().max() + 1e-6  # within 2x torch's own error
        y = c.model(x)
    assert y.dtype == dtype and c.model.weight.dtype == dtype
    assert (y.double() - exact).abs().max() <= tol
    y = c.model(x)  # bias requires grad: added after the kernel, one more rounding
    assert (y.double() - exact).abs().max() <= tol + one_ulp


def test_conv_nd(device):
    cases = [
        (nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2), (2, 4, 17)),
        (nn.Conv1d(3, 5, 4, padding="same", padding_mode="circular"), (2, 3, 11)),
        (nn.Conv2d(4, 8, 3, padding=2, groups=4, padding_mode="reflect", bias=False), (2, 4, 9, 7)),
        (nn.Conv2d(3, 5, (3, 2), stride=(2, 1), dilation=(1, 2), padding_mode="replicate", padding=1), (1, 3, 8, 8)),
        (nn.Conv3d(2, 4, 3, padding=1, stride=(1, 2, 1)), (1, 2, 5, 6, 7)),
    ]  # fmt: skip
    for mod, shape in cases:
        c = check(mod, torch.randn(shape), exact=True, device=device)
        assert type(c.model).__name__ == type(mod).__name__
        assert isinstance(c.model, type(mod)) and wsq.nn.is_quantized(c.model)


def test_conv_transpose_nd(device):
    cases = [
        (nn.ConvTranspose1d(4, 6, 3, stride=2, output_padding=1, groups=2), (2, 4, 9)),
        (nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, dilation=2, output_padding=1), (1, 4, 5, 6)),
        (nn.ConvTranspose3d(2, 3, 2, stride=2, bias=False), (1, 2, 3, 4, 2)),
    ]  # fmt: skip
    for mod, shape in cases:
        check(mod, torch.randn(shape), exact=True, device=device)
    # output_size argument is honoured
    mod = nn.ConvTranspose2d(3, 3, 3, stride=2)
    check(mod, torch.randn(1, 3, 4, 4), exact=True, device=device, output_size=[10, 10])


def test_embedding_padding_idx_and_max_norm(device):
    emb = nn.Embedding(50, 12, padding_idx=3)
    idx = torch.tensor([[0, 3, 49, 7], [3, 3, 1, 2]])
    c = check(emb, idx, exact=True, device=device)
    assert type(c.model) is wsq.nn.Embedding and c.model.padding_idx == 3
    check(emb, idx.to(torch.int32), exact=True, device=device)
    if device.type == "cpu":
        with pytest.raises(IndexError):
            c.model(torch.tensor([50]))
    else:  # the CUDA gather cannot raise without a sync: a NaN row (wsq/kernels/cuda.py)
        assert torch.isnan(c.model(torch.tensor([50], device=device))).all()
    emb = nn.Embedding(20, 8, max_norm=0.5).to(device)
    emb_copy = copy.deepcopy(emb)
    c = wsq.compress(emb_copy, K)
    ref = reference_fake_quant(emb, K)
    ids = torch.tensor([1, 5, 5], device=device)
    for _ in range(2):  # renormalisation happens on the fly, the stored indices never change
        packed = c.model.weight_packed.clone()
        assert torch.equal(c.model(ids), ref(ids))
        assert torch.equal(c.model.weight_packed, packed)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag(mode, device):
    bag = nn.EmbeddingBag(30, 6, mode=mode, padding_idx=0 if mode != "max" else None)
    inp = torch.tensor([1, 2, 4, 5, 4, 3, 2, 0])
    offsets = torch.tensor([0, 3, 5])
    check(bag, inp, offsets, exact=True, device=device)
    if mode == "sum":
        w = torch.rand(8)
        check(bag, inp, offsets, exact=True, device=device, per_sample_weights=w)


# ----------------------------------------------------------------------------- generic owners


class RawParam(nn.Module):
    def __init__(self):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(3, 4, 5))
        self.gain = nn.Parameter(torch.randn(5))

    def forward(self, x):
        return torch.einsum("bi,ijk->bjk", x, self.kernel) * self.gain


class OverridingLinear(nn.Linear):
    def forward(self, x):  # forward overridden: handled by the generic property, not wsq.nn.Linear
        return super().forward(x) * 2


def test_generic_raw_parameter(device):
    m = RawParam()
    c = check(m, torch.randn(2, 3), exact=True, device=device)
    assert "kernel" not in dict(c.model.named_parameters())
    assert isinstance(c.model, RawParam) and type(c.model) is not RawParam
    assert c.model.kernel.shape == (3, 4, 5) and not isinstance(c.model.kernel, nn.Parameter)
    assert c.model.gain is not None and isinstance(c.model.gain, nn.Parameter)


def test_generic_subclass_with_own_forward(device):
    m = OverridingLinear(6, 4)
    c = check(m, torch.randn(3, 6), exact=True, device=device)
    assert isinstance(c.model, OverridingLinear) and not isinstance(c.model, wsq.nn.Linear)


def test_subclass_keeping_forward_stays_instance():
    mha = nn.MultiheadAttention(8, 2)
    assert type(mha.out_proj) is not nn.Linear  # NonDynamicallyQuantizableLinear
    c = wsq.compress(mha, K)
    assert isinstance(c.model.out_proj, type(mha.out_proj))
    assert isinstance(c.model.out_proj, wsq.nn.Linear)


def test_include_biases_generic_linear():
    lin = nn.Linear(5, 4)
    c = wsq.compress(
        lin, K, pooling=wsq.Pooling(min_dims=1)
    )  # weight and bias both quantized: generic owner
    ref = reference_fake_quant(lin, K, min_dims=1)
    x = torch.randn(2, 5)
    assert torch.equal(c.model(x), ref(x))
    assert not list(c.model.parameters())


# ----------------------------------------------------------------------------- behaviour


def make_model(device="cpu"):
    return nn.Sequential(
        nn.Embedding(40, 16),
        nn.Linear(16, 32),
        nn.GELU(),
        nn.Linear(32, 8),
    ).to(device)


def test_weight_is_read_only_dequantized_and_not_a_parameter(device):
    m = make_model(device)
    c = wsq.compress(m, K)
    w = c.model[1].weight
    assert w.shape == (32, 16) and w.dtype == torch.float32 and not isinstance(w, nn.Parameter)
    assert w.device.type == device.type and c.model[1].weight_packed.device.type == device.type
    assert torch.equal(w, reference_fake_quant(m, K)[1].weight.detach())
    with pytest.raises(AttributeError):
        c.model[1].weight = torch.zeros(32, 16, device=device)
    w.zero_()  # a fresh tensor: the model is unaffected
    assert not torch.equal(c.model[1].weight, w)
    names = [n for n, _ in c.model.named_parameters()]
    assert names == ["1.bias", "3.bias"]
    assert c.model[1].weight_packed.dtype == torch.uint8
    bits = c.quantized["1.weight"].bits
    assert c.model[1].weight_packed.numel() == (32 * 16 * bits + 7) // 8
    assert c.model[1].weight_table.numel() == 1 << bits == 1 << c.model[1].wsq_bits("weight")


def _tables(model):
    return [m.weight_table for m in model if wsq.nn.is_quantized(m)]


def test_each_tensor_has_its_own_table_of_the_values_it_uses():
    c = wsq.compress(make_model(), K)
    for name, q in c.quantized.items():
        n = int((~torch.isnan(q.table)).sum())
        assert q.table.numel() == 1 << q.bits and q.bits == ops.bits_for(n)
        assert torch.isnan(q.table[n:]).all()
        assert bool(torch.isin(q.table[:n], c.codebook).all()), name  # a gather of the codebook
    values = torch.cat([q.table for q in c.quantized.values()])
    assert torch.equal(torch.unique(values[~torch.isnan(values)]), c.codebook)  # their union
    moved = copy.deepcopy(c.model).to("meta")  # a real move: new tensors for every buffer
    assert moved[1].weight_table.is_meta and moved[1].weight_packed.is_meta
    clone = copy.deepcopy(c.model)
    assert all(a is not b for a, b in zip(_tables(clone), _tables(c.model), strict=True))
    x = torch.randint(0, 40, (3, 5))
    assert torch.equal(clone(x), c.model(x))


def test_compressed_on_cpu_then_moved_to_the_device(device):
    c = wsq.compress(make_model(), K)
    moved = copy.deepcopy(c.model).to(device)
    assert moved[1].weight_table.device.type == device.type
    assert moved[1].weight_packed.device.type == device.type
    x = torch.randint(0, 40, (3, 5))
    torch.testing.assert_close(moved(x.to(device)).cpu(), c.model(x), rtol=1e-5, atol=1e-6)
    back = moved.to("cpu")
    assert torch.equal(back[1].weight_packed, c.model[1].weight_packed)


def test_half_changes_compute_dtype_not_table(device):
    m = make_model(device)
    c = wsq.compress(m, K)
    table = c.model[1].weight_table
    c.model.half()
    assert c.model[1].weight_table.dtype == torch.float32
    assert torch.equal(c.model[1].weight_table.nan_to_num(), table.nan_to_num())
    assert c.model[1].weight.dtype == torch.float16 and c.model[0].weight.dtype == torch.float16
    ref = reference_fake_quant(m, K).half()
    x = torch.randint(0, 40, (2, 3), device=device)
    y = c.model(x)
    assert y.dtype == torch.float16
    torch.testing.assert_close(y, ref(x), rtol=1e-2, atol=1e-2)
    c.model.float()
    assert c.model[1].weight.dtype == torch.float32


def test_tied_embeddings_share_one_packed_tensor(device):
    emb = nn.Embedding(30, 8)
    head = nn.Linear(8, 30, bias=False)
    head.weight = emb.weight
    m = nn.Sequential(emb, head).to(device)
    c = wsq.compress(m, K)
    assert list(c.quantized) == ["0.weight"] and c.quantized["0.weight"].names == (
        "0.weight",
        "1.weight",
    )
    assert c.model[0].weight_packed is c.model[1].weight_packed
    assert c.model[0].weight_table is c.model[1].weight_table
    moved = copy.deepcopy(c.model).to("meta")
    assert moved[0].weight_packed is moved[1].weight_packed
    assert moved[0].weight_table is moved[1].weight_table
    half = copy.deepcopy(c.model).half()
    assert half[0].weight_table is half[1].weight_table
    ref = reference_fake_quant(m, K)
    x = torch.randint(0, 30, (2, 4), device=device)
    torch.testing.assert_close(c.model(x), ref(x), rtol=1e-5, atol=1e-5)


def test_state_dict_round_trip_on_compressed_model(device):
    c = wsq.compress(make_model(device), K)
    sd = c.model.state_dict()
    # each tensor's values travel with its indices (tests/test_state_dict.py: cross-model cases)
    assert "1.weight_packed" in sd and "1.weight_table" in sd
    other = make_model(device)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-1.3)  # another model of the same architecture: other values, other widths
    d = wsq.compress(other, K)
    x = torch.randint(0, 40, (2, 3), device=device)
    assert not torch.equal(d.model(x), c.model(x))
    d.model.load_state_dict(sd)
    assert torch.equal(d.model(x), c.model(x))
    assert torch.equal(d.codebook, c.codebook) and d.widths() == c.widths()


def test_repr_names_bits_and_entries():
    c = wsq.compress(make_model(), K)
    r = repr(c.model[1])
    assert r.startswith(
        "Linear(in_features=16, out_features=32, bias=True, wsq: weight=32x16 float32"
    )
    q = c.quantized["1.weight"]
    n = int((~torch.isnan(q.table)).sum())
    assert f"{q.bits}-bit indices into {n} shared values" in r


def test_layers_are_not_constructible_directly():
    with pytest.raises(TypeError, match="wsq.compress"):
        wsq.nn.Linear(3, 4)


def test_quantize_module_argument_checks():
    table = {"weight": ops.lut_table(torch.tensor([0.0, 1.0]), 1)}
    lin = nn.Linear(4, 2)
    with pytest.raises(ValueError, match="need 1"):
        wsq.nn.quantize_module_(lin, {"weight": torch.zeros(3, dtype=torch.uint8)}, table)
    with pytest.raises(ValueError, match="2\\*\\*b entries"):
        bad = {"weight": torch.zeros(3)}
        wsq.nn.quantize_module_(lin, {"weight": torch.zeros(1, dtype=torch.uint8)}, bad)
    with pytest.raises(ValueError, match="tables must map"):
        wsq.nn.quantize_module_(lin, {"weight": torch.zeros(1, dtype=torch.uint8)}, {})
    with pytest.raises(ValueError, match="no parameter 'nope'"):
        wsq.nn.quantize_module_(
            lin,
            {"nope": torch.zeros(1, dtype=torch.uint8)},
            {"nope": table["weight"]},
            shapes={"nope": (2, 4)},
            dtypes={"nope": torch.float32},
        )
    wsq.nn.quantize_module_(lin, {"weight": torch.zeros(1, dtype=torch.uint8)}, table)
    assert torch.equal(lin.weight, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="already compressed"):
        wsq.nn.quantize_module_(
            lin, {"bias": torch.zeros(1, dtype=torch.uint8)}, {"bias": table["weight"]}
        )


def test_torch_compile_traces_custom_ops():
    m = make_model()
    c = wsq.compress(m, K)
    x = torch.randint(0, 40, (3, 5))
    compiled = torch.compile(c.model, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(x), c.model(x))  # biases require grad here
    with torch.no_grad():
        assert torch.equal(compiled(x), c.model(x))


def test_gradients_reach_biases_and_inputs(device):
    m = make_model(device)
    c = wsq.compress(m, K)
    ref = reference_fake_quant(m, K)
    x = torch.randint(0, 40, (3, 5), device=device)
    c.model(x).square().sum().backward()
    ref(x).square().sum().backward()
    torch.testing.assert_close(c.model[1].bias.grad, ref[1].bias.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(c.model[3].bias.grad, ref[3].bias.grad, rtol=1e-4, atol=1e-5)
    h = torch.randn(4, 16, device=device, requires_grad=True)
    h_ref = h.detach().clone().requires_grad_()
    c.model[1](h).sum().backward()
    ref[1](h_ref).sum().backward()
    torch.testing.assert_close(h.grad, h_ref.grad)


def test_cast_model_saves_what_it_computes(tmp_path):
    # after .half() the file records every tensor as float16 (weights and biases alike) and loads
    # into a float16 instance of the architecture, computing what the cast model computed
    m = make_model()
    c = wsq.compress(m, K)
    c.model.half()
    assert {q.dtype for q in c.quantized.values()} == {torch.float16}
    wsq.save(c, tmp_path / "h.wsq")
    d = wsq.load(tmp_path / "h.wsq", copy.deepcopy(m).half())
    x = torch.randint(0, 40, (2, 3))
    assert torch.equal(d.model(x), c.model(x))
    with pytest.raises(wsq.FormatError, match="dtypes do not match"):
        wsq.load(tmp_path / "h.wsq", copy.deepcopy(m))


class _Owner(nn.Module):  # a custom owner: its wsq class is made at run time
    def __init__(self):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(6, 5))

    def forward(self, x):
        return x @ self.kernel


@pytest.mark.parametrize("move", ["none", "to", "half"])
def test_torch_save_pickles_a_compressed_model_after_any_move(move, tmp_path):
    m = nn.Sequential(make_model(), _Owner(), nn.MultiheadAttention(5, 1, batch_first=True))
    c = wsq.compress(m, K)
    model = c.model
    if move == "to":
        model = model.to("cpu")
    elif move == "half":
        model = model.half().float()
    path = tmp_path / "m.pt"
    torch.save(model, path)  # the user's own pickle; wsq's files never use one
    back = torch.load(path, weights_only=False)
    assert type(back[1]).__name__ == "_Owner" and wsq.nn.is_quantized(back[1])
    x = torch.randint(0, 40, (2, 3))
    assert torch.equal(back[0](x), model[0](x))
    assert torch.equal(back[1].kernel, model[1].kernel)
    q = torch.randn(1, 4, 5)
    assert torch.equal(back[2](q, q, q)[0], model[2](q, q, q)[0])
