"""What a user reads when a file is wrong: a file that is not a wsq file says "not a wsq file" (not
a header length of 8577679922665300003), and a cut file says "truncated (N of M bytes)", then the
detail. The one-defect files and their wording live in tests/test_io_malformed.py."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import wsq
from wsq.cli.main import main as cli

ROOT = Path(__file__).resolve().parents[1]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("f") / "m.wsq"
    wsq.save(wsq.compress(_model(), 16), path)
    return path.read_bytes()


def _load_error(path: Path, data: bytes | None = None) -> str:
    if data is not None:
        path.unlink(missing_ok=True)
        path.write_bytes(data)
    with pytest.raises(wsq.FormatError) as e:
        wsq.load(path, _model())
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
        torch.save(_model().state_dict(), path)
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
    save_file(_model().state_dict(), str(path))
    msg = _load_error(path)
    assert "is not a wsq file" in msg and "__metadata__" in msg, msg
    save_file(_model().state_dict(), str(path), metadata={"format": "pt"})
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
