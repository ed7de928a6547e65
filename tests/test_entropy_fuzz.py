"""Property/fuzz tests of the entropy decoders (wsq.entropy.decode).

Every input, however malformed, must end in FormatError or in a well-formed output (n indices of
the right dtype, each < n_symbols): no crash, no hang, nothing else. Bounded, derandomised
hypothesis runs (a few seconds in all):
- random bytes behind a plausible header, and fully random bytes;
- valid streams of random symbols, mutated (bit flips, byte overwrites, insertions, deletions,
  truncation): unmutated ones must round-trip exactly;
- round trips of random symbol arrays, with Huffman's size from the histogram exact.
Seeds: tiny streams in tests/corpus/entropy/, named ``<what>.n<N>.k<K>[.ok].bin`` (``.ok``: must
decode). Regenerate with ``PYTHONPATH=. python tests/test_entropy_fuzz.py``.
"""

from __future__ import annotations

import pathlib
import re
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsq import entropy as E
from wsq.errors import FormatError

CORPUS = pathlib.Path(__file__).parent / "corpus" / "entropy"
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
ALPHABETS = st.sampled_from([1, 2, 3, 5, 17, 256, 257, 1000, 65536])


def check(data: bytes, n: int, k: int) -> np.ndarray | None:
    """Decodes; asserts the only outcomes are FormatError or a well-formed array."""
    try:
        y = E.decode(data, n, k)
    except FormatError as e:
        assert str(e).startswith("entropy stream: ")
        return None
    assert y.shape == (n,) and y.dtype == E.symbol_dtype(k)
    if n:
        assert int(y.max()) < k
    return y


def varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


@st.composite
def symbols(draw, max_n: int = 400):
    k = draw(ALPHABETS)
    n = draw(st.integers(0, max_n))
    skew = draw(st.sampled_from(["uniform", "narrow", "one"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if skew == "uniform":
        x = rng.integers(0, k, n)
    elif skew == "narrow":
        x = np.clip(np.round(rng.normal(k / 2, 2.0, n)), 0, k - 1)
    else:
        x = np.full(n, rng.integers(0, k))
    return x.astype(E.symbol_dtype(k)), k


@FUZZ
@given(
    coder=st.sampled_from(E.CODERS),
    n_symbols=ALPHABETS,
    n=st.integers(0, 500),
    body=st.binary(max_size=300),
)
def test_random_bytes_behind_a_header(coder, n_symbols, n, body):
    head = bytes([0x10 | (1 if coder == "huffman" else 2)]) + varint(n_symbols) + varint(n)
    if coder == "ans":
        head += bytes([16])
    check(head + body, n, n_symbols)


@FUZZ
@given(data=st.binary(max_size=200), n=st.integers(0, 300), n_symbols=ALPHABETS)
def test_random_bytes(data, n, n_symbols):
    check(data, n, n_symbols)


MUTATION = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
    st.integers(0, 10**6),
    st.integers(0, 255),
)


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op, pos, val in ops:
        if not b and op != "insert":
            continue
        i = pos % max(len(b), 1)
        if op == "flip":
            b[i] ^= 1 << (val % 8)
        elif op == "set":
            b[i] = val
        elif op == "insert":
            b.insert(pos % (len(b) + 1), val)
        elif op == "delete":
            del b[i]
        else:
            del b[i:]
    return bytes(b)


@FUZZ
@given(sym=symbols(), coder=st.sampled_from(E.CODERS), ops=st.lists(MUTATION, max_size=3))
def test_mutated_streams(sym, coder, ops):
    x, k = sym
    data = E.encode(x, k, coder)
    bad = mutate(data, ops)
    y = check(bad, x.size, k)
    if bad == data:
        assert y is not None and np.array_equal(x, y)


@FUZZ
@given(sym=symbols(max_n=3000), coder=st.sampled_from(E.CODERS))
def test_round_trip_property(sym, coder):
    x, k = sym
    data = E.encode(x, k, coder)
    assert np.array_equal(E.decode(data, x.size, k), x)
    bound = E.size_bits(E.histogram(x, k), coder)
    assert bound == 8 * len(data) if coder == "huffman" else bound >= 8 * len(data)


NAME = re.compile(r".*\.n(\d+)\.k(\d+)(\.ok)?\.bin$")


def test_corpus_replay():
    files = sorted(CORPUS.glob("*.bin"))
    assert len(files) >= 8, f"seed corpus missing under {CORPUS}"
    for f in files:
        m = NAME.match(f.name)
        assert m, f"corpus file {f.name} does not follow <what>.n<N>.k<K>[.ok].bin"
        n, k, ok = int(m.group(1)), int(m.group(2)), bool(m.group(3))
        y = check(f.read_bytes(), n, k)
        assert (y is not None) == ok, f.name


def write_corpus(directory: pathlib.Path = CORPUS) -> None:
    """(Re)generates the seed files: valid tiny streams and one-defect mutations of them."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    g = np.clip(np.round(rng.normal(8, 3, 300)), 0, 16).astype(np.uint8)
    two = np.where(rng.random(5000) < 0.8, 0, 1).astype(np.uint8)
    rare = np.where(rng.random(40000) < 0.9995, 1, 0).astype(np.uint8)
    files = {}
    for coder in E.CODERS:
        s = E.encode(g, 17, coder)
        files[f"{coder}_gauss.n300.k17.ok.bin"] = s
        files[f"{coder}_gauss_truncated.n300.k17.bin"] = s[:-3]
        info = E.stream_sizes(s)
        t = bytearray(s)
        t[info["header_bytes"] + 1] ^= 0x10  # a table bit
        files[f"{coder}_gauss_table_flip.n300.k17.bin"] = bytes(t)
    files["huffman_two_lanes8.n5000.k2.ok.bin"] = E.encode(two, 2, "huffman")
    a = E.encode(rare, 2, "ans")
    files["ans_rare_lanes8.n40000.k2.ok.bin"] = a
    info = E.stream_sizes(a)
    d0 = info["header_bytes"] + info["table_bytes"] + 2  # first lane offset (after count, width)
    b = bytearray(a)
    b[d0] ^= 0x01
    files["ans_rare_bad_offset.n40000.k2.bin"] = bytes(b)
    b = bytearray(a)
    b[-1] ^= 0x40  # last lane's last word
    files["ans_rare_flip.n40000.k2.bin"] = bytes(b)
    files["huffman_kraft_oversubscribed.n10.k3.bin"] = bytes(
        [0x11, 3, 10, 0xDD, 0x04, 0x01, 0x00, 0x00]
    )
    files["const.n1000.k65536.ok.bin"] = E.encode(np.full(1000, 40000, np.uint16), 65536, "ans")
    for name, data in files.items():
        (directory / name).write_bytes(data)


if __name__ == "__main__":
    write_corpus()
    print(f"wrote {len(list(CORPUS.glob('*.bin')))} files to {CORPUS}", file=sys.stderr)
    sys.exit(pytest.main([__file__, "-q"]))
