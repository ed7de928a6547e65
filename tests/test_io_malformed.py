"""Adversarial wsq files: each defect must raise wsq.FormatError naming the tensor or field.

The small valid file is built from hand-made parts (a codebook, index streams, plain tensors) through
wsq.io's own writer, so these tests do not depend on wsq.compress. Targets (shared/reliability.md):
>= 25 one-defect files, truncation at every byte, single-bit flips everywhere, 0 crashes, 0 hangs
over 1 s, no allocation sized by the file's claims.
"""

from __future__ import annotations

import json
import pickle
import re
import time
import tracemalloc
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import wsq
from wsq import container
from wsq.cli.main import main as cli
from wsq.compressed import layout
from wsq.kernels import ops

# A defect must be rejected quickly: at most 1 s of CPU (the reliability target; CPU time, so a
# loaded machine cannot fail the check) and 10 s of wall clock (a blocking hang burns no CPU).
SLOW_CASE_S = 1.0
HANG_WALL_S = 10.0


class _Clock:
    def __init__(self):
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def worst(self) -> float:
        """Elapsed time scaled so that < 1.0 means within both limits."""
        cpu = (time.process_time() - self.cpu) / SLOW_CASE_S
        return max(cpu, (time.perf_counter() - self.wall) / HANG_WALL_S)


# ----------------------------------------------------------------------------- the small valid file


class Tiny(nn.Module):
    """The architecture whose state the small file holds (tied embedding/head, BN, odd dtypes)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 6)
        self.emb = nn.Embedding(3, 4)
        self.head = nn.Linear(4, 3, bias=False)
        self.head.weight = self.emb.weight
        self.bn = nn.BatchNorm1d(6)
        self.register_buffer("mask", torch.tensor([True, False, True, True]))
        self.register_buffer("scale", torch.tensor([0.5, -1.25, 3.0], dtype=torch.float16))


def tiny_parts(n: int = 4, coder_seed: int = 0) -> SimpleNamespace:
    """Duck-typed stand-in for wsq.Compressed holding Tiny's state (what wsq.io._layout reads)."""
    g = np.random.default_rng(coder_seed)
    codebook = torch.tensor(np.sort(g.uniform(-1, 1, n)).astype(np.float32))
    bits = ops.bits_for(n)
    p = np.arange(1, n + 1, dtype=np.float64)[::-1] ** 2
    p /= p.sum()

    def q(names, shape):
        numel = int(np.prod(shape))
        sym = torch.from_numpy(g.choice(n, size=numel, p=p).astype(np.int64))
        return SimpleNamespace(
            names=tuple(names), shape=torch.Size(shape), dtype=torch.float32,
            packed=ops.pack(sym, bits), numel=numel,
        )  # fmt: skip

    quantized = {
        "fc.weight": q(["fc.weight"], (6, 5)),
        "emb.weight": q(["emb.weight", "head.weight"], (3, 4)),
    }
    t = Tiny()
    rest = {
        k: v
        for k, v in t.state_dict().items()
        if k not in ("fc.weight", "emb.weight", "head.weight")
    }
    rest["fc.bias"] = torch.linspace(-1, 1, 6)
    rest["bn.running_mean"] = torch.linspace(0, 0.5, 6)
    parts = SimpleNamespace(
        codebook=codebook, bits=bits, k=max(n, 2) * 2, lo=-1.0, hi=1.0, quantized=quantized
    )
    parts.rest_state = lambda: dict(rest)
    parts.global_packed = lambda name: quantized[name].packed  # held at the file's width already
    return parts


def file_bytes(parts, coder: str = "ans") -> bytes:
    header, chunks = layout.layout(parts, coder)
    return len(header).to_bytes(8, "little") + header + b"".join(bytes(c) for c in chunks)


def expected_state(parts) -> dict[str, torch.Tensor]:
    """The dense state a correct loader returns for `parts`."""
    out = dict(parts.rest_state())
    for name, qp in parts.quantized.items():
        idx = ops.unpack(parts.global_packed(name), qp.numel, parts.bits).to(torch.int64)
        w = parts.codebook[idx].to(qp.dtype).reshape(qp.shape)
        for s in qp.names:
            out[s] = w
    return out


def assert_state_equal(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert got[k].shape == want[k].shape, k
        assert torch.equal(got[k], want[k]), k


@pytest.fixture(scope="module")
def small():
    parts = tiny_parts()
    return parts, file_bytes(parts)


def split(data: bytes) -> tuple[dict, bytes]:
    """(header dict, data area) of a valid file."""
    hlen = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + hlen]), data[8 + hlen :]


def join(header: dict, area: bytes, *, sign: bool = True) -> bytes:
    """Serialise a header (recomputing its CRC unless sign=False) in front of a data area."""
    if sign:
        raw = container.header_bytes(header)
    else:
        raw = container.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + area


def get_meta(h: dict) -> dict:
    return json.loads(h["__metadata__"]["wsq"])


def put_meta(h: dict, m: dict) -> None:
    h["__metadata__"]["wsq"] = container.dumps(m)


def put(path, data: bytes) -> None:
    """Write a fresh file (unlink first: rewriting in place makes ext4 flush on every truncate)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def load_bytes(tmp_path, data: bytes, name: str = "case.wsq", model=None):
    path = tmp_path / name
    put(path, data)
    clock = _Clock()
    try:
        return wsq.load_state_dict(path) if model is None else wsq.load(path, model)
    finally:
        assert clock.worst() < 1.0


def tensor_range(h: dict, name: str) -> tuple[int, int]:
    return tuple(h[name]["data_offsets"])


def poke(area: bytes, at: int, new: bytes) -> bytes:
    return area[:at] + new + area[at + len(new) :]


# ----------------------------------------------------------------------------- one-defect files
# Each case maps the valid file's bytes to a defective file, plus words its message must contain.


def _edit(fn, sign=True):
    """A case that edits the parsed header (and maybe the data area) and re-serialises it."""

    def make(data):
        h, area = split(data)
        area = fn(h, area) or area
        return join(h, area, sign=sign)

    return make


def _meta_edit(fn):
    def edit(h, area):
        m = get_meta(h)
        fn(m)
        put_meta(h, m)

    return _edit(edit)


def _set(path, value):
    """Set h[path...] = value (a header edit)."""

    def edit(h, area):
        d = h
        for p in path[:-1]:
            d = d[p]
        d[path[-1]] = value

    return _edit(edit)


def _del(path, sign=True):
    def edit(h, area):
        d = h
        for p in path[:-1]:
            d = d[p]
        del d[path[-1]]

    return _edit(edit, sign=sign)


def _header_text(text: bytes):
    def make(data):
        return len(text).to_bytes(8, "little") + text + b"\0" * 16

    return make


def _q(m, name="fc.weight"):
    return next(q for q in m["quantized"] if q["name"] == name)


def _retype_codebook(values):
    """Replace the codebook's data (re-signing its CRC) with float32 values."""

    def edit(h, area):
        a, b = tensor_range(h, "wsq.codebook")
        new = np.asarray(values, np.float32).tobytes()
        assert len(new) == b - a
        m = get_meta(h)
        m["codebook_crc32"] = zlib.crc32(new)
        put_meta(h, m)
        return poke(area, a, new)

    return _edit(edit)


def _stream_bytes(new_fn, name="fc.weight", resign=True):
    """Replace a stream's bytes (same length), re-signing its CRC unless resign=False."""

    def edit(h, area):
        a, b = tensor_range(h, "wsq.idx." + name)
        new = new_fn(area[a:b])
        assert len(new) == b - a
        if resign:
            m = get_meta(h)
            _q(m, name)["crc32"] = zlib.crc32(new)
            put_meta(h, m)
        return poke(area, a, new)

    return _edit(edit)


def _restream(symbols_fn, n_symbols_fn, name="fc.weight"):
    """Swap a stream for another validly coded one (layout recomputed), e.g. a wrong count."""

    def make(data):
        from wsq import entropy

        h, area = split(data)
        m = get_meta(h)
        q = _q(m, name)
        new = entropy.encode(symbols_fn(q), n_symbols_fn(m), "ans")
        return relayout(h, area, m, {"wsq.idx." + name: new}, {name: new})

    return make


def relayout(h, area, m, replace: dict[str, bytes], resign: dict[str, bytes]) -> bytes:
    """Rebuild the data area with some tensors' bytes replaced (offsets recomputed)."""
    chunks = {
        s: area[e["data_offsets"][0] : e["data_offsets"][1]]
        for s, e in h.items()
        if s != "__metadata__"
    }
    chunks.update(replace)
    for name, new in resign.items():
        _q(m, name).update(crc32=zlib.crc32(new), bytes=len(new))
        h["wsq.idx." + name]["shape"] = [len(new)]
    put_meta(h, m)
    pos, out = 0, []
    for s in sorted(chunks, key=lambda s: h[s]["data_offsets"][0]):
        h[s]["data_offsets"] = [pos, pos + len(chunks[s])]
        pos += len(chunks[s])
        out.append(chunks[s])
    return join(h, b"".join(out))


def _shift_offsets(name, da, db, trailing=b""):
    def edit(h, area):
        h[name]["data_offsets"] = [h[name]["data_offsets"][0] + da, h[name]["data_offsets"][1] + db]
        return area + trailing

    return _edit(edit)


def _swap_bool(h, area):
    a, _ = tensor_range(h, "mask")
    new = bytes([2])
    m = get_meta(h)
    m["plain"]["mask"] = zlib.crc32(poke(area, a, new)[a : a + 4])
    put_meta(h, m)
    return poke(area, a, new)


def _tamper_plain(h, area):
    a, _ = tensor_range(h, "fc.bias")
    return poke(area, a, bytes([area[a] ^ 1]))


def _tamper_codebook(h, area):
    a, _ = tensor_range(h, "wsq.codebook")
    return poke(area, a + 1, bytes([area[a + 1] ^ 0x10]))


def _add_tensor(h, area):
    h["extra"] = {"dtype": "U8", "shape": [3], "data_offsets": [len(area), len(area) + 3]}
    return area + b"abc"


def _drop_plain(h, area):
    m = get_meta(h)
    del m["plain"]["fc.bias"]
    put_meta(h, m)


def _rename_stream(h, area):
    h["wsq.idx.other"] = h.pop("wsq.idx.fc.weight")


def _dup_tied(m):
    m["plain"]["head.weight"] = 0


def _nan_lo(h, area):
    h["__metadata__"]["wsq"] = h["__metadata__"]["wsq"].replace('"lo":-1.0', '"lo":NaN')


def _bomb(h, area):
    m = get_meta(h)
    q = _q(m, "fc.weight")
    q["shape"], q["numel"] = [1 << 20, 1 << 20], 1 << 40
    put_meta(h, m)


CASES = {
    # container
    "empty file": (lambda d: b"", ["is not a wsq file", "shorter than the 8-byte"]),
    "7 bytes": (lambda d: d[:7], ["is not a wsq file", "shorter than the 8-byte"]),
    "header length over cap": (
        lambda d: (200 << 20).to_bytes(8, "little") + d[8:],
        ["header length", "cap"],
    ),
    "header length past EOF": (
        lambda d: (len(d)).to_bytes(8, "little") + d[8:],
        ["is truncated (", "runs past the end"],
    ),
    "header not UTF-8": (_header_text(b'{"a":"\xff\xfe"}  '), ["not UTF-8"]),
    "header not JSON": (_header_text(b'{"a": [1, 2}   '), ["header is not valid JSON"]),
    "header JSON array": (_header_text(b"[1, 2, 3]       "), ["not an object"]),
    "header duplicate key": (_header_text(b'{"a":1,"a":2}   '), ["duplicate key", "'a'"]),
    "deep JSON nesting": (
        _header_text(b"[" * 200000 + b"]" * 200000),
        ["header is not valid JSON"],
    ),
    "huge JSON integer": (_header_text(b'{"x":' + b"9" * 5000 + b"}"), ["digits"]),
    "float overflow in header": (
        _header_text(b'{"x":[1.5,8e999]}'),
        ["header", "overflows a float"],
    ),
    "no __metadata__": (
        _del(["__metadata__"], sign=False),
        ["is not a wsq file", "no __metadata__"],
    ),
    "__metadata__ without wsq": (
        _del(["__metadata__", "wsq"]),
        ["is not a wsq file", "__metadata__", "missing field", "wsq"],
    ),
    "__metadata__ value not string": (
        _set(["__metadata__", "wsq"], 5),
        ["__metadata__['wsq']", "string"],
    ),
    "header checksum": (
        _edit(lambda h, a: h["fc.bias"].update(shape=[2, 3]), sign=False),
        ["wsq_crc32", "checksum"],
    ),
    # tensor table
    "tensor missing dtype": (_del(["fc.bias", "dtype"]), ["'fc.bias'", "missing field", "dtype"]),
    "tensor extra field": (
        _set(["fc.bias", "stride"], [1]),
        ["'fc.bias'", "unexpected field", "stride"],
    ),
    "unknown dtype": (_set(["fc.bias", "dtype"], "F99"), ["'fc.bias'", "unknown dtype", "F99"]),
    "negative shape": (_set(["fc.bias", "shape"], [-6]), ["'fc.bias'", "shape[0]"]),
    "non-int shape": (_set(["fc.bias", "shape"], [6.0]), ["'fc.bias'", "shape[0]", "integer"]),
    "bool shape": (_set(["fc.bias", "shape"], [True] * 6), ["'fc.bias'", "shape[0]", "integer"]),
    "shape vs offsets": (_set(["fc.bias", "shape"], [7]), ["'fc.bias'", "needs 28 bytes"]),
    "shape product overflow": (
        _set(["fc.bias", "shape"], [1 << 62, 1 << 62, 4]),
        ["'fc.bias'", "needs"],
    ),
    "offsets past data": (
        _shift_offsets("fc.bias", 0, 10**9),
        ["is truncated (", "'fc.bias'", "data_offsets[1]"],
    ),
    "offsets reversed": (_set(["fc.bias", "data_offsets"], [24, 0]), ["'fc.bias'", "before start"]),
    "offsets overlap": (_shift_offsets("fc.bias", -4, -4, b""), ["overlaps"]),
    "offsets gap": (_shift_offsets("fc.bias", 4, 4, b"\0\0\0\0"), ["gap"]),
    "trailing bytes": (_edit(lambda h, a: a + b"\0" * 8), ["8 trailing bytes"]),
    "text file": (lambda d: b"# a README\n" * 20, ["is not a wsq file", "(text)"]),
    "zip file": (lambda d: b"PK\x03\x04\x14\x00" + bytes(60), ["is not a wsq file", "zip archive"]),
    "undeclared tensor": (_edit(_add_tensor), ["undeclared", "extra"]),
    # wsq metadata
    "metadata not JSON": (
        _set(["__metadata__", "wsq"], "{nope"),
        ["metadata 'wsq' is not valid JSON"],
    ),
    "metadata not object": (_set(["__metadata__", "wsq"], "[]"), ["metadata", "object"]),
    "wrong format": (_meta_edit(lambda m: m.update(format="gguf")), ["field 'format'", "gguf"]),
    "unsupported version": (
        _meta_edit(lambda m: m.update(version=2)),
        ["field 'version'", "unsupported version 2"],
    ),
    "metadata missing field": (_meta_edit(lambda m: m.pop("bits")), ["missing field", "bits"]),
    "metadata extra field": (
        _meta_edit(lambda m: m.update(secret=1)),
        ["unexpected field", "secret"],
    ),
    "n zero": (_meta_edit(lambda m: m.update(n=0)), ["field 'n'"]),
    "n too large": (_meta_edit(lambda m: m.update(n=65537)), ["field 'n'"]),
    "bits too small for n": (
        _meta_edit(lambda m: m.update(bits=1)),
        ["field 'bits'", "cannot address"],
    ),
    "bits as float": (_meta_edit(lambda m: m.update(bits=2.0)), ["field 'bits'", "integer"]),
    "k below n": (_meta_edit(lambda m: m.update(k=3)), ["field 'k'"]),
    "lo not a number": (_meta_edit(lambda m: m.update(lo="low")), ["field 'lo'"]),
    "lo NaN": (_edit(_nan_lo), ["non-finite", "NaN"]),
    "codebook tensor missing": (
        _meta_edit(lambda m: m.update(codebook="cb")),
        ["field 'codebook'", "'cb'"],
    ),
    "codebook length vs n": (
        _meta_edit(lambda m: m.update(n=3)),
        ["codebook tensor 'wsq.codebook'", "shape [3]"],
    ),
    "codebook NaN": (_retype_codebook([-0.5, float("nan"), 0.1, 0.2]), ["'wsq.codebook'", "NaN"]),
    "codebook Inf": (
        _retype_codebook([-0.5, 0.0, 0.1, float("inf")]),
        ["'wsq.codebook'", "NaN or Inf"],
    ),
    "codebook not ascending": (
        _retype_codebook([0.5, 0.0, 0.1, 0.2]),
        ["'wsq.codebook'", "ascending"],
    ),
    "codebook CRC": (_edit(_tamper_codebook), ["'wsq.codebook'", "CRC32 mismatch"]),
    # quantized entries
    "unknown coder": (
        _meta_edit(lambda m: _q(m).update(coder="lzma")),
        ["'fc.weight'", "field 'coder'", "lzma"],
    ),
    "quantized dtype": (
        _meta_edit(lambda m: _q(m).update(dtype="I32")),
        ["'fc.weight'", "field 'dtype'"],
    ),
    "numel vs shape": (
        _meta_edit(lambda m: _q(m).update(numel=31)),
        ["'fc.weight'", "field 'numel'"],
    ),
    "quantized missing field": (
        _meta_edit(lambda m: _q(m).pop("crc32")),
        ["quantized[", "missing field", "crc32"],
    ),
    "names without canonical": (
        _meta_edit(lambda m: _q(m, "emb.weight").update(names=["head.weight"])),
        ["'emb.weight'", "field 'names'"],
    ),
    "names empty": (_meta_edit(lambda m: _q(m).update(names=[])), ["'fc.weight'", "field 'names'"]),
    "tied name also plain": (_meta_edit(_dup_tied), ["'head.weight'", "also declared"]),
    "stream tensor missing": (
        _edit(_rename_stream),
        ["stream tensor 'wsq.idx.fc.weight'", "not in the file"],
    ),
    "stream length field": (
        _meta_edit(lambda m: _q(m).update(bytes=_q(m)["bytes"] + 1)),
        ["'wsq.idx.fc.weight'", "shape"],
    ),
    "stream CRC": (
        _stream_bytes(lambda s: s[:-1] + bytes([s[-1] ^ 0x80]), resign=False),
        ["'wsq.idx.fc.weight'", "CRC32 mismatch"],
    ),
    "stream garbage": (_stream_bytes(lambda s: bytes(len(s))), ["'wsq.idx.fc.weight'"]),
    "stream for a larger alphabet": (
        _restream(lambda q: np.full(q["numel"], 7, np.uint8), lambda m: 8),
        ["'wsq.idx.fc.weight'"],
    ),
    "stream with fewer symbols": (
        _restream(lambda q: np.zeros(q["numel"] - 1, np.uint8), lambda m: m["n"]),
        ["'wsq.idx.fc.weight'"],
    ),
    "stream with more symbols": (
        _restream(lambda q: np.ones(q["numel"] + 5, np.uint8), lambda m: m["n"]),
        ["'wsq.idx.fc.weight'"],
    ),
    # plain tensors
    "plain CRC": (_edit(_tamper_plain), ["'fc.bias'", "CRC32 mismatch"]),
    "plain declared but absent": (_edit(_drop_plain), ["undeclared", "fc.bias"]),
    "bool byte 2": (_edit(_swap_bool), ["'mask'", "BOOL"]),
    "element-count bomb": (_edit(_bomb), ["1099511627776", "cap", "max_elements"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_defect(case, small, tmp_path):
    make, words = CASES[case]
    data = make(small[1])
    with pytest.raises(wsq.FormatError) as e:
        load_bytes(tmp_path, data)
    for w in words:
        assert w in str(e.value), f"{case}: {w!r} not in {e.value}"


def test_case_count():
    assert len(CASES) >= 25


def test_small_file_is_valid(small, tmp_path):
    parts, data = small
    assert_state_equal(load_bytes(tmp_path, data), expected_state(parts))
    # the test harness re-serialises headers exactly like the writer
    h, area = split(data)
    assert join(h, area) == data


# ----------------------------------------------------------------------------- model mismatch


def test_model_names_mismatch(small, tmp_path):
    class Other(Tiny):
        def __init__(self):
            super().__init__()
            self.extra = nn.Linear(2, 2)
            del self.bn

    with pytest.raises(wsq.FormatError) as e:
        load_bytes(tmp_path, small[1], model=Other())
    msg = str(e.value)
    assert "missing from the file" in msg and "extra.weight" in msg
    assert "unexpected" in msg and "bn.running_mean" in msg


def test_model_shape_mismatch(small, tmp_path):
    m = Tiny()
    m.fc = nn.Linear(5, 7)
    with pytest.raises(wsq.FormatError, match=r"fc\.weight: file \[6, 5\] vs model \[7, 5\]"):
        load_bytes(tmp_path, small[1], model=m)


def test_bomb_against_model_allocates_nothing(small, tmp_path):
    data = _edit(_bomb)(small[1])
    path = tmp_path / "bomb.wsq"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(wsq.FormatError, match="shapes do not match"):
            wsq.load(path, Tiny())
        with pytest.raises(wsq.FormatError, match="cap"):
            wsq.load_state_dict(path)
        # an explicit cap lets the caller decide, still before decoding
        with pytest.raises(wsq.FormatError, match="cap of 100"):
            wsq.load_state_dict(path, max_elements=100)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * len(data) + (1 << 20)


def test_header_length_claim_allocates_nothing(small, tmp_path):
    data = (99 << 20).to_bytes(8, "little") + small[1][8:]
    path = tmp_path / "hlen.wsq"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(wsq.FormatError, match="runs past the end"):
            wsq.load_state_dict(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_not_a_regular_file(tmp_path):
    with pytest.raises(ValueError, match="directory"):
        wsq.load_state_dict(tmp_path)
    with pytest.raises(FileNotFoundError):
        wsq.load_state_dict(tmp_path / "missing.wsq")


def test_max_elements_argument(small, tmp_path):
    path = tmp_path / "ok.wsq"
    path.write_bytes(small[1])
    with pytest.raises(TypeError, match="max_elements"):
        wsq.load_state_dict(path, max_elements=1.5)
    with pytest.raises(ValueError, match="max_elements"):
        wsq.load_state_dict(path, max_elements=-1)
    with pytest.raises(wsq.FormatError, match="cap of 41"):
        wsq.load_state_dict(path, max_elements=41)  # the file holds 30 + 12 = 42 quantized elements
    assert len(wsq.load_state_dict(path, max_elements=42)) == len(Tiny().state_dict())


# ----------------------------------------------------------------------------- truncation and flips


def _loop(tmp_path, variants, allowed_ok):
    """Load every variant; each must raise FormatError (or, where allowed_ok, load equal)."""
    path = tmp_path / "v.wsq"
    worst = 0.0
    oks = 0
    for key, data in variants:
        put(path, data)
        clock = _Clock()
        try:
            got = wsq.load_state_dict(path)
        except wsq.FormatError:
            pass
        else:
            assert allowed_ok(key, got), f"variant {key} loaded without error"
            oks += 1
        worst = max(worst, clock.worst())
    assert worst < 1.0
    return oks


def test_truncation_at_every_byte(small, tmp_path):
    data = small[1]
    _loop(tmp_path, ((n, data[:n]) for n in range(len(data))), lambda k, got: False)


def test_single_bit_flips_everywhere(small, tmp_path):
    parts, data = small
    want = expected_state(parts)
    h, area = split(data)
    hlen = int.from_bytes(data[:8], "little")
    raw_header = data[8 : 8 + hlen]
    body_end = 8 + len(raw_header.rstrip(b" "))

    def allowed(key, got):
        pos, _ = key
        if not body_end <= pos < 8 + hlen:  # only padding may change without being noticed
            return False
        assert_state_equal(got, want)
        return True

    def variants():
        for pos in range(len(data)):
            for bit in range(8):
                b = bytearray(data)
                b[pos] ^= 1 << bit
                yield (pos, bit), bytes(b)

    oks = _loop(tmp_path, variants(), allowed)
    assert oks == 0  # a flipped space is never JSON whitespace, so even padding flips are caught
    # the flips covered the header, the codebook and every stream
    assert len(data) > 8 + hlen + tensor_range(h, "wsq.codebook")[1]


def test_model_dtype_mismatch(small, tmp_path):
    with pytest.raises(
        wsq.FormatError, match=r"dtypes do not match the model: .*fc\.weight: file F32 vs model F16"
    ):
        load_bytes(tmp_path, small[1], model=Tiny().half())


# ----------------------------------------------------------------------------- what the user reads
# A file that is not a wsq file says "not a wsq file" (not a header length of
# 8577679922665300003); a cut file says "truncated (N of M bytes)", then the detail.

ROOT = Path(__file__).resolve().parents[1]


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("f") / "m.wsq"
    wsq.save(wsq.compress(_mlp(), 16), path)
    return path.read_bytes()


def _load_error(path: Path, data: bytes | None = None) -> str:
    if data is not None:
        path.unlink(missing_ok=True)
        path.write_bytes(data)
    with pytest.raises(wsq.FormatError) as e:
        wsq.load(path, _mlp())
    with pytest.raises(wsq.FormatError) as e2:
        wsq.load_state_dict(path)
    assert str(e.value) == str(e2.value)
    return str(e.value)


def test_readme_is_not_a_wsq_file():
    msg = _load_error(ROOT / "README.md")
    assert "'README.md' is not a wsq file" in msg or "README.md' is not a wsq file" in msg, msg
    assert "header length" not in msg and "exceeds" not in msg, msg
    assert "text" in msg, msg


@pytest.mark.parametrize(
    "kind, make, words",
    [
        ("torch.save", None, ["zip archive", "torch.save"]),
        ("pickle", lambda: pickle.dumps({"w": [1.0, 2.0]}, protocol=4), ["pickle"]),
        ("empty", lambda: b"", ["0 bytes"]),
        ("zeros", lambda: bytes(64), ["does not begin with a safetensors header"]),
        ("text", lambda: b"hello, this is plain text\n" * 4, ["text"]),
    ],
)
def test_other_files_are_not_wsq_files(tmp_path, kind, make, words):
    path = tmp_path / f"{kind}.bin"
    if make is None:
        torch.save(_mlp().state_dict(), path)
        data = None
    else:
        data = make()
    msg = _load_error(path, data)
    assert "is not a wsq file" in msg, msg
    for w in words:
        assert w in msg, (w, msg)


def test_safetensors_of_another_tool_is_not_a_wsq_file(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file(_mlp().state_dict(), str(path))
    msg = _load_error(path)
    assert "is not a wsq file" in msg and "__metadata__" in msg, msg
    save_file(_mlp().state_dict(), str(path), metadata={"format": "pt"})
    msg = _load_error(path)
    assert "is not a wsq file" in msg and "'wsq'" in msg, msg


def test_truncated_files_say_truncated_n_of_m_bytes(saved, tmp_path):
    size = len(saved)
    hlen = int.from_bytes(saved[:8], "little")
    path = tmp_path / "cut.wsq"
    seen = set()
    for n in range(size):
        msg = _load_error(path, saved[:n])
        if n < 8:
            assert "is not a wsq file" in msg and f"{n} bytes" in msg, (n, msg)
            kind = "short"
        elif n < 8 + hlen:
            assert f"is truncated ({n} of at least {8 + hlen} bytes)" in msg, (n, msg)
            assert "the header itself is cut" in msg, msg
            kind = "header"
        else:
            assert f"is truncated ({n} of {size} bytes): tensor " in msg, (n, msg)
            assert re.search(r"data_offsets\[1\] \d+ is past the end", msg), msg
            kind = "data"
        seen.add(kind)
    assert seen == {"short", "header", "data"}


def test_a_file_with_trailing_bytes_is_not_called_truncated(saved, tmp_path):
    msg = _load_error(tmp_path / "long.wsq", saved + b"\0" * 8)
    assert "8 trailing bytes" in msg and "truncat" not in msg, msg


def test_wsq_info_names_the_defect(tmp_path, capsys):
    assert cli(["info", str(ROOT / "README.md")]) == 1
    err = capsys.readouterr().err
    assert "DEFECT" in err and "is not a wsq file" in err, err
