"""wsq.save / wsq.load / wsq.load_state_dict: round trips, determinism, atomicity, safetensors."""

from __future__ import annotations

import json
import os
import pathlib

import pytest
import torch
from safetensors import safe_open
from torch import nn

import wsq
from wsq import container
from wsq import io as wio
from wsq.compressed import layout


class Net(nn.Module):
    """Conv + BatchNorm + MLP: 4-D and 2-D pooled weights, biases and BN buffers left plain."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc1 = nn.Linear(4 * 5 * 5, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class TiedLM(nn.Module):
    """Tied input/output embeddings."""

    def __init__(self, vocab=20, dim=8):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, tokens):
        return self.head(torch.tanh(self.mix(self.emb(tokens))))


def _net(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(1)
    m = Net()
    with torch.no_grad():  # non-trivial BN statistics, so the buffers matter
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
        m.bn.num_batches_tracked.fill_(7)
    return m.to(dtype).eval()


def _tied() -> nn.Module:
    torch.manual_seed(2)
    return TiedLM().eval()


X = torch.randn(2, 3, 7, 7, generator=torch.Generator().manual_seed(3))
TOKENS = torch.tensor([[1, 5, 19, 0], [7, 7, 3, 12]])


@pytest.fixture(scope="module")
def net_c():
    return wsq.compress(_net(), 16)


@pytest.fixture(scope="module")
def tied_c():
    return wsq.compress(_tied(), 32)


def _assert_state_equal(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert got[k].shape == want[k].shape, k
        assert torch.equal(got[k].cpu(), want[k].cpu()), k


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("coder", ["auto", "ans", "huffman"])
def test_round_trip_forward_equal(net_c, tmp_path, coder):
    path = tmp_path / "net.wsq"
    wsq.save(net_c, path, coder=coder)
    loaded = wsq.load(path, Net().eval())
    with torch.no_grad():
        assert torch.equal(loaded.model.eval()(X), net_c.model(X))
    assert torch.equal(loaded.codebook, net_c.codebook)
    assert loaded.bits == net_c.bits
    assert (loaded.k, loaded.lo, loaded.hi) == (net_c.k, net_c.lo, net_c.hi)
    meta = json.loads(_header(path)["__metadata__"]["wsq"])
    coders = {q["coder"] for q in meta["quantized"]}
    assert coders <= ({"ans", "huffman"} if coder == "auto" else {coder})


def test_round_trip_tied(tied_c, tmp_path):
    path = tmp_path / "tied.wsq"
    wsq.save(tied_c, path)
    meta = json.loads(_header(path)["__metadata__"]["wsq"])
    (emb,) = [q for q in meta["quantized"] if q["name"] == "emb.weight"]
    assert emb["names"] == ["emb.weight", "head.weight"]  # stored once, both names kept
    assert "wsq.idx.head.weight" not in _header(path)
    loaded = wsq.load(path, TiedLM())
    with torch.no_grad():
        assert torch.equal(loaded.model.eval()(TOKENS), tied_c.model(TOKENS))
    sd = wsq.load_state_dict(path)
    assert sd["emb.weight"] is sd["head.weight"]


def test_load_on_meta_template(net_c, tmp_path):
    path = tmp_path / "net.wsq"
    wsq.save(net_c, path)
    with torch.device("meta"):
        template = Net()
    loaded = wsq.load(path, template.eval())
    with torch.no_grad():
        assert torch.equal(loaded.model.eval()(X), net_c.model(X))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_round_trip_half_dtypes(tmp_path, dtype, device):
    c = wsq.compress(_net(dtype).to(device), 16)
    path = tmp_path / "half.wsq"
    wsq.save(c, path)
    sd = wsq.load_state_dict(path)
    assert sd["fc1.weight"].dtype == dtype and sd["bn.num_batches_tracked"].dtype == torch.int64
    _assert_state_equal(sd, c.dequantized_state_dict())
    loaded = wsq.load(path, Net().to(device, dtype).eval())
    with torch.no_grad():
        x = X.to(device, dtype)
        assert torch.equal(loaded.model.eval()(x), c.model(x))


def test_load_state_dict_equals_dequantized(net_c, tied_c, tmp_path):
    for c in (net_c, tied_c):
        path = tmp_path / "sd.wsq"
        wsq.save(c, path)
        _assert_state_equal(wsq.load_state_dict(path), c.dequantized_state_dict())


def test_resave_is_byte_identical(net_c, tmp_path):
    a, b, c = tmp_path / "a.wsq", tmp_path / "b.wsq", tmp_path / "c.wsq"
    wsq.save(net_c, a)
    wsq.save(net_c, b)
    assert a.read_bytes() == b.read_bytes()
    # an independent compress of the same model, and a load -> save, give the same bytes too
    wsq.save(wsq.compress(_net(), 16), c)
    assert c.read_bytes() == a.read_bytes()
    wsq.save(wsq.load(a, Net()), b)
    assert b.read_bytes() == a.read_bytes()


# ----------------------------------------------------------------------------- sizes and the container


@pytest.mark.parametrize("coder", ["auto", "ans", "huffman"])
def test_file_size_is_exact(net_c, tied_c, tmp_path, coder):
    for c in (net_c, tied_c):
        path = tmp_path / f"{coder}.wsq"
        wsq.save(c, path, coder=coder)
        assert layout.file_size(c, coder) == os.path.getsize(path)
        assert c.stats(coder)["file_bytes"] == os.path.getsize(path)


def test_auto_is_the_smaller(net_c):
    sizes = {c: layout.file_size(net_c, c) for c in ("auto", "ans", "huffman")}
    assert sizes["auto"] <= min(sizes["ans"], sizes["huffman"])


def test_streams_are_encoded_once(net_c, monkeypatch):
    from wsq import entropy

    c = wsq.compress(_net(), 16)
    calls = []
    real = entropy.encode
    monkeypatch.setattr(entropy, "encode", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    first = layout.file_size(c, "auto")
    n = len(calls)
    assert n == 2 * len(c.quantized)  # auto tries both coders, once each
    assert layout.file_size(c, "auto") == first and layout.file_size(c, "ans") > 0
    assert len(calls) == n  # served from the cache


def _header(path) -> dict:
    data = pathlib.Path(path).read_bytes()
    hlen = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + hlen])


def test_safetensors_reads_every_tensor(net_c, tmp_path):
    path = tmp_path / "net.wsq"
    wsq.save(net_c, path)
    header = _header(path)
    meta = json.loads(header["__metadata__"]["wsq"])
    rest = net_c.rest_state()
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["wsq"] == header["__metadata__"]["wsq"]
        keys = set(f.keys())
        assert keys == set(header) - {"__metadata__"}
        assert torch.equal(f.get_tensor("wsq.codebook"), net_c.codebook)
        for name, t in rest.items():
            assert torch.equal(f.get_tensor(name), t), name
        for q in meta["quantized"]:
            s = f.get_tensor("wsq.idx." + q["name"])
            assert s.dtype == torch.uint8 and s.numel() == q["bytes"]
        assert keys == {"wsq.codebook"} | set(rest) | {"wsq.idx." + q for q in net_c.quantized}


def test_layout_is_canonical(net_c, tmp_path):
    """JSON keys sorted, header padded to 8 bytes, every tensor aligned to its item size."""
    path = tmp_path / "net.wsq"
    wsq.save(net_c, path)
    data = path.read_bytes()
    hlen = int.from_bytes(data[:8], "little")
    assert hlen % 8 == 0
    header = json.loads(data[8 : 8 + hlen])
    names = [k for k in header if k != "__metadata__"]
    assert names == sorted(names)
    for name in names:
        e = header[name]
        size = torch.empty((), dtype=container.DTYPES[e["dtype"]]).element_size()
        assert (8 + hlen + e["data_offsets"][0]) % size == 0, name


# ----------------------------------------------------------------------------- arguments and atomicity


def test_bad_arguments(net_c, tmp_path):
    with pytest.raises(ValueError, match="coder"):
        wsq.save(net_c, tmp_path / "x.wsq", coder="zstd")
    with pytest.raises(ValueError, match="coder"):
        layout.file_size(net_c, "lzma")
    with pytest.raises(ValueError, match="directory"):
        wsq.save(net_c, tmp_path)
    with pytest.raises(TypeError, match="compressed"):
        wsq.save(_net(), tmp_path / "x.wsq")
    with pytest.raises(TypeError, match="path"):
        wsq.save(net_c, 42)
    with pytest.raises(TypeError, match="model"):
        wsq.load(tmp_path / "x.wsq", "Net")
    assert not (tmp_path / "x.wsq").exists()
    wsq.save(net_c, str(tmp_path / "s.wsq"))  # str and PathLike both work
    assert (
        wsq.load_state_dict(str(tmp_path / "s.wsq")).keys() == net_c.dequantized_state_dict().keys()
    )


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_crash_leaves_no_partial_file(net_c, tmp_path, monkeypatch, where):
    target = tmp_path / "model.wsq"
    old = b"previous contents"
    target.write_bytes(old)
    header, chunks = layout.layout(net_c, "auto")

    class Crash(RuntimeError):
        pass

    def boom(*a, **k):
        raise Crash(where)

    if where == "write":
        # crash halfway through the data: the chunk list raises while being written
        class Chunks(list):
            def __iter__(self):
                yield from list.__iter__(self[: len(self) // 2])
                raise Crash("write")

        monkeypatch.setattr(
            wio.writer, "layout", lambda c, coder, spool=None: (header, Chunks(chunks))
        )
    elif where == "fsync":
        monkeypatch.setattr(wio.writer.os, "fsync", boom)
    else:
        monkeypatch.setattr(wio.writer.os, "replace", boom)
    with pytest.raises(Crash):
        wsq.save(net_c, target)
    assert target.read_bytes() == old  # the previous file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.wsq"]  # no temp litter


def test_crash_on_new_file_leaves_nothing(net_c, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(wio.writer.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        wsq.save(net_c, tmp_path / "new.wsq")
    assert list(tmp_path.iterdir()) == []


def test_saved_file_permissions_follow_umask(net_c, tmp_path):
    path = tmp_path / "perm.wsq"
    wsq.save(net_c, path)
    mask = os.umask(0)
    os.umask(mask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~mask)


def test_no_pickle_in_io():
    # every module that reads or writes bytes: wsq/io/, the compressed model's layout, the format
    root = pathlib.Path(wsq.__file__).parent
    paths = [*(root / "io").glob("*.py"), *(root / "compressed").glob("*.py")]
    paths += [root / "container.py", root / "entropy.py", root / "from_checkpoint.py"]
    for path in paths:
        src = path.read_text()
        for word in ("import pickle", "torch.load(", "eval(", "exec("):
            assert word not in src, (path.name, word)


def test_round_trip_float64(tmp_path):
    c = wsq.compress(_net(torch.float64), 16)
    path = tmp_path / "f64.wsq"
    wsq.save(c, path)
    _assert_state_equal(wsq.load_state_dict(path), c.dequantized_state_dict())
    loaded = wsq.load(path, Net().double().eval())
    with torch.no_grad():
        assert torch.equal(loaded.model.eval()(X.double()), c.model(X.double()))


@pytest.mark.parametrize("which", ["net", "tied"])
def test_round_trip_on_device(tmp_path, device, which):
    """Compress on the device, save, load into a template on the device: the same outputs."""
    make, arch, x = (_net, Net, X) if which == "net" else (_tied, TiedLM, TOKENS)
    c = wsq.compress(make().to(device), 16)
    path = tmp_path / "dev.wsq"
    wsq.save(c, path)
    assert layout.file_size(c) == os.path.getsize(path)
    loaded = wsq.load(path, arch().to(device).eval())
    assert all(t.device.type == device.type for t in loaded.model.state_dict().values())
    with torch.no_grad():
        assert torch.equal(loaded.model.eval()(x.to(device)), c.model(x.to(device)))
    _assert_state_equal(wsq.load_state_dict(path), c.dequantized_state_dict())
    wsq.save(loaded, tmp_path / "again.wsq")  # re-saving what was loaded on the device
    assert (tmp_path / "again.wsq").read_bytes() == path.read_bytes()


def test_stream_bits_match_the_file(net_c, tmp_path):
    path = tmp_path / "net.wsq"
    wsq.save(net_c, path, coder="huffman")
    meta = json.loads(_header(path)["__metadata__"]["wsq"])
    assert layout.stream_bits(net_c, "huffman") == 8 * sum(q["bytes"] for q in meta["quantized"])


def test_unicode_names(tmp_path):
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.poids_é = nn.Linear(3, 4)
            self.register_buffer("échelle", torch.tensor([1.5, 2.0]))

    torch.manual_seed(4)
    m = Odd()
    c = wsq.compress(m, 8)
    path = tmp_path / "ü.wsq"
    wsq.save(c, path)
    with safe_open(str(path), "pt") as f:
        assert "échelle" in f.keys() and "wsq.idx.poids_é.weight" in f.keys()
    loaded = wsq.load(path, Odd())
    x = torch.randn(2, 3)
    with torch.no_grad():
        assert torch.equal(loaded.model.poids_é(x), c.model.poids_é(x))
    _assert_state_equal(wsq.load_state_dict(path), c.dequantized_state_dict())


def test_reserved_name_collision(tmp_path):
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("codebook", torch.zeros(3))

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.wsq = Holder()

    c = wsq.compress(M(), 4)
    with pytest.raises(ValueError, match="'wsq.codebook' collides"):
        wsq.save(c, tmp_path / "x.wsq")
    assert list(tmp_path.iterdir()) == []
