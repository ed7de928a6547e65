"""Property/fuzz tests of the wsq loader and, through it, the entropy decoders.

Seeds: the small files in tests/corpus/io/ (regenerate: ``PYTHONPATH=. python tests/test_io_fuzz.py``; files
written by an older wsq must keep loading, so the replay test compares their contents, not bytes).
Properties, each over a bounded, derandomised hypothesis run:
- raw mutations (byte flips, insertions, deletions, overwrites): FormatError or a load equal to the
  seed's, nothing else;
- header edits with the header checksum re-signed (so the schema checks, not the CRC, must catch
  them): FormatError or a load consistent with the edited header;
- stream edits with the stream CRC re-signed (so the entropy decoder sees arbitrary bytes):
  FormatError or a load whose values all come from the codebook.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys
import zlib

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import wsq
from wsq import container

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_io_malformed import (  # noqa: E402
    assert_state_equal,
    expected_state,
    file_bytes,
    get_meta,
    join,
    put,
    put_meta,
    split,
    tiny_parts,
)

CORPUS = pathlib.Path(__file__).parent / "corpus" / "io"
# name -> (codebook size n, rng seed, coder)
SEEDS = {
    "small_ans.wsq": (4, 0, "ans"),
    "small_huffman.wsq": (4, 1, "huffman"),
    "constant.wsq": (1, 2, "ans"),
    "wide.wsq": (300, 3, "auto"),
}
FUZZ = settings(
    max_examples=300,
    deadline=1000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def write_corpus(directory: pathlib.Path = CORPUS) -> None:
    """(Re)generate the seed files from their hand-made parts."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, (n, seed, coder) in SEEDS.items():
        (directory / name).write_bytes(file_bytes(tiny_parts(n, seed), coder))


def _seed_state(name: str) -> dict:
    n, seed, _ = SEEDS[name]
    return expected_state(tiny_parts(n, seed))


@pytest.fixture(scope="module")
def seeds():
    return {name: (CORPUS / name).read_bytes() for name in sorted(SEEDS)}


@pytest.fixture(scope="module")
def states():
    return {name: _seed_state(name) for name in SEEDS}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "case.wsq"


def _load(path: pathlib.Path, data: bytes):
    """Load inside a hypothesis example, recording the outcome for --hypothesis-show-statistics."""
    put(path, data)
    try:
        got = wsq.load_state_dict(path)
    except wsq.FormatError as e:
        defect = re.sub(r"[0-9]+", "N", str(e).split(": ", 1)[-1])  # without the path
        event(f"FormatError: {defect[:64]}")  # outcome classes, for --hypothesis-show-statistics
        raise
    event("loaded")
    return got


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_corpus_replays(name, seeds, states, scratch):
    """Every seed (written by the writer at the time it was committed) loads to its known state."""
    assert len(seeds[name]) < 8192
    put(scratch, seeds[name])
    assert_state_equal(wsq.load_state_dict(scratch), states[name])


def test_corpus_generator_matches_format(tmp_path):
    """The generator writes files the loader accepts, equal to the same parts' expected state."""
    write_corpus(tmp_path)
    for name in SEEDS:
        assert_state_equal(wsq.load_state_dict(tmp_path / name), _seed_state(name))


# ----------------------------------------------------------------------------- raw mutations

_pos = st.floats(0, 1, exclude_max=True)
_mutation = st.one_of(
    st.tuples(st.just("flip"), _pos, st.integers(1, 255)),
    st.tuples(st.just("insert"), _pos, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), _pos, st.integers(1, 32)),
    st.tuples(st.just("overwrite"), _pos, st.binary(min_size=1, max_size=16)),
)


def _mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for kind, frac, arg in ops:
        at = int(frac * max(len(b), 1))
        if kind == "flip" and b:
            b[at] ^= arg
        elif kind == "insert":
            b[at:at] = arg
        elif kind == "delete":
            del b[at : at + arg]
        elif kind == "overwrite":
            b[at : at + len(arg)] = arg
    return bytes(b)


@FUZZ
@given(name=st.sampled_from(sorted(SEEDS)), ops=st.lists(_mutation, min_size=1, max_size=4))
def test_raw_mutations(name, ops, seeds, states, scratch):
    data = _mutate(seeds[name], ops)
    try:
        got = _load(scratch, data)
    except wsq.FormatError:
        return
    assert_state_equal(got, states[name])  # only a change the checksums prove harmless may load


# ----------------------------------------------------------------------------- header edits, re-signed

_json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 70), 1 << 70)
    | st.sampled_from(
        [0, 1, -1, 2, 3, 4, 255, 256, 65536, 65537, 1 << 31, 1 << 32, 1 << 62, 1 << 63]
    )
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["F32", "U8", "BOOL", "I64", "F16", "ans", "huffman", "wsq", "fc.weight"]),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=8,
)


def _leaves(obj, path=()):
    """Every (path, value) of a JSON tree, containers included."""
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, path + (i,))


def _replace(obj, path, value):
    if not path:
        return value
    obj[path[0]] = _replace(obj[path[0]], path[1:], value)
    return obj


def _check_consistent(got: dict, meta: dict, codebook: torch.Tensor) -> None:
    """What a successful load must satisfy whatever the (validated) header said."""
    assert isinstance(got, dict)
    for q in meta["quantized"]:
        for s in q["names"]:
            t = got[s]
            assert tuple(t.shape) == tuple(q["shape"]) and t.dtype == container.DTYPES[q["dtype"]]
            assert bool(torch.isin(t.float().reshape(-1), codebook.to(t.dtype).float()).all())


@FUZZ
@given(
    name=st.sampled_from(sorted(SEEDS)),
    in_meta=st.booleans(),
    pick=st.floats(0, 1, exclude_max=True),
    value=_json_value,
)
def test_header_edits(name, in_meta, pick, value, seeds, scratch):
    h, area = split(seeds[name])
    if in_meta:
        m = get_meta(h)
        paths = [p for p, _ in _leaves(m)]
        m = _replace(m, paths[int(pick * len(paths))], value)
        h["__metadata__"]["wsq"] = json.dumps(m)
    else:
        body = {k: v for k, v in h.items() if k != "__metadata__"}
        paths = [p for p, _ in _leaves(body) if p]
        h = dict(
            _replace(body, paths[int(pick * len(paths))], value), __metadata__=h["__metadata__"]
        )
    try:
        data = join(h, area)
    except (ValueError, TypeError):  # e.g. a key that JSON cannot hold: not a file we can write
        return
    try:
        got = _load(scratch, data)
    except wsq.FormatError:
        return
    meta = get_meta(h)
    a, b = h[meta["codebook"]]["data_offsets"]
    codebook = torch.frombuffer(bytearray(area[a:b]), dtype=torch.float32)
    _check_consistent(got, meta, codebook)


# ----------------------------------------------------------------------------- header text, JSON tokens

_TOKENS = [
    "1e999", "-1e999", "NaN", "Infinity", "-0", "1.0", "1e-999", "9" * 30, "null", "true", "[]", "{}",
    '"', "{", "}", "[", "]", ",", ":", " ", '"\\u0000"', '"\\ud800"', '"x"', '"__metadata__"',
    '"wsq_crc32"', '"F32"', "[1,2]", '{"a":1}', "[" * 64, "]" * 64,
]  # fmt: skip


@FUZZ
@given(
    name=st.sampled_from(sorted(SEEDS)),
    edits=st.lists(
        st.tuples(_pos, st.sampled_from(_TOKENS), st.booleans()), min_size=1, max_size=3
    ),
    resign=st.booleans(),
)
def test_header_text_mutations(name, edits, resign, seeds, scratch):
    """JSON-aware edits of the header text (length prefix kept consistent), optionally re-signed."""
    data = seeds[name]
    hlen = int.from_bytes(data[:8], "little")
    text, area = data[8 : 8 + hlen].decode().rstrip(" "), data[8 + hlen :]
    for frac, token, replace in edits:
        at = int(frac * len(text))
        text = text[:at] + token + text[at + (len(token) if replace else 0) :]
    raw = text.encode()
    if resign:
        try:
            h = json.loads(text)
            raw = container.header_bytes(h)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            pass  # not a header the writer could sign: try the raw text
    raw += b" " * (-len(raw) % 8)
    try:
        got = _load(scratch, len(raw).to_bytes(8, "little") + raw + area)
    except wsq.FormatError:
        return
    h = json.loads(raw)
    meta = get_meta(h)
    a, b = h[meta["codebook"]]["data_offsets"]
    _check_consistent(got, meta, torch.frombuffer(bytearray(area[a:b]), dtype=torch.float32))


# ----------------------------------------------------------------------------- stream edits, re-signed


_stream_mutation = st.one_of(
    st.tuples(st.just("flip"), _pos, st.integers(1, 255)),
    st.tuples(st.just("overwrite"), _pos, st.binary(min_size=1, max_size=8)),
)


@pytest.fixture(scope="module")
def codebooks():
    return {name: tiny_parts(n, seed).codebook for name, (n, seed, _) in SEEDS.items()}


@FUZZ
@given(
    name=st.sampled_from(sorted(SEEDS)),
    which=st.integers(0, 1),
    ops=st.lists(_stream_mutation, min_size=1, max_size=3),
)
def test_stream_edits_reach_the_decoder(name, which, ops, seeds, codebooks, scratch):
    h, area = split(seeds[name])
    m = get_meta(h)
    q = m["quantized"][which]
    a, b = h["wsq.idx." + q["name"]]["data_offsets"]
    stream = _mutate(area[a:b], ops)[: b - a]  # same length: the layout does not move
    q["crc32"] = zlib.crc32(stream)
    put_meta(h, m)
    try:
        got = _load(scratch, join(h, area[:a] + stream + area[b:]))
    except wsq.FormatError:
        return
    _check_consistent(got, m, codebooks[name])


if __name__ == "__main__":
    write_corpus()
    print(f"wrote {len(SEEDS)} seed files to {CORPUS}")
